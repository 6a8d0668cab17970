"""Running a run's cached int8 graph without PyTorch: the start-up of ``loraclf predict`` and ``evaluate`` on a CPU.

Once ``loraclf train`` (or a first prediction) has exported and quantised a run's classifier
(:mod:`loraclf.inference.onnx_int8`), predicting needs only the run's tokenizer, ONNX Runtime and NumPy. Importing
torch, transformers and peft took about 5 seconds of a 2-core AVX2 machine's 47-second ``predict`` on AG News
test.csv and most of a ~10-second one on an AVX-512 machine, for a model that is never built. :func:`open_cached`
opens the graph with the ``tokenizers`` library alone when everything it needs is already there, and returns None
otherwise, so the caller falls back to :func:`loraclf.inference.run.load`, which exports first.

Token ids are the same as the transformers tokenizer's: the run folder's ``tokenizer.json`` is the fast tokenizer's
own definition (normalisation, special tokens, post-processing), truncated to the run's max length on the run's
side with nothing padded, as :func:`loraclf.data.batching.tokenize` asks transformers to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from loraclf.config import Recipe
from loraclf.data.batching import pad_batch, sorted_batches
from loraclf.inference.calibration import temperature_of
from loraclf.runfolder.schema import RunInfo, hash_run_content, read_labels, read_recipe, read_run_info
from loraclf.utils.cache import cache_dir
from loraclf.utils.progress import bar as progress_bar

# ONNX Runtime fuses the residual add into its SkipLayerNormalization kernel; on the CPUs measured here the fused
# kernel was slower than the plain Add + LayerNormalization pair (MiniLM: 618 vs 725 rows/s).
DISABLED_FUSIONS = ["SkipLayerNormFusion"]
# Sorted batches of this many rows measured fastest for the int8 graph (16: 868, 32: 846, 64: 762 rows/s).
BATCH_SIZE = 16
# Part of the cache key: raise it whenever the export or the quantisation changes, so old graphs are not reused.
GRAPH_VERSION = 3  # 3: the backbone's identity in the key; quantised graphs checked against PyTorch
# The distributions ONNX Runtime is installed as; the first one present gives the version in the cache key.
ORT_PACKAGES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "ort-nightly",
)
# Texts tokenised per call: bounded memory (all of a file's Encoding objects at once took ~850 MB per 100k rows)
# and a moving progress bar, as loraclf.data.batching.tokenize does.
TOKENIZE_CHUNK = 1024


def _version(*packages: str) -> str:
    """The installed version of the first of ``packages`` found (one library ships under several names)."""
    for package in packages:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return "none"


def backbone_identity(name: str, revision: str | None) -> str:
    """What names the frozen backbone's weights, which the run folder does not hold.

    A local folder (``--model ./my-bert``) may be replaced after training while its path stays the same: its
    identity is a digest of its ``config.json`` and of every file's name, size and modification time (reading
    gigabytes of weights on every prediction would cost more than the export it saves). A hub id or an offline
    alias is its name and revision.
    """
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return f"{name}@{revision or 'default'}"
    h = hashlib.sha256()
    config = folder / "config.json"
    h.update(config.read_bytes() if config.is_file() else b"")
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"folder:{h.hexdigest()}"


def digest(run: Path) -> str:
    """Everything the int8 graph depends on: weights, recipe, labels, the backbone's identity (see
    :func:`backbone_identity`) and the exporting libraries' versions.

    The versions come from the installed packages' metadata, so computing the key imports none of them.
    """
    from loraclf.utils.version import __version__

    h = hashlib.sha256()
    hash_run_content(h, run)
    model = read_recipe(run).model
    h.update(backbone_identity(model.name, model.revision).encode())
    versions = [str(GRAPH_VERSION), __version__]
    versions += [_version("torch"), _version("transformers"), _version("onnx"), _version(*ORT_PACKAGES)]
    h.update("|".join(versions).encode())
    return h.hexdigest()[:32]


def graph_path(run: Path) -> Path:
    """Where the run's int8 graph is cached (it may not exist yet)."""
    return cache_dir() / "onnx" / f"{digest(run)}.int8.onnx"


def session(path: Path, threads: int | None = None, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session over a graph, all graph optimisations on except :data:`DISABLED_FUSIONS`;
    with ``profile_prefix``, ONNX Runtime's profiler on, writing there (benchmarks/int8_profile.py)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's notes about unused initialisers are noise to users
    if threads:
        so.intra_op_num_threads = threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(
        str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_FUSIONS
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits, shape (rows, classes)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Int8Classifier:
    """An ONNX Runtime session over a run's int8 graph, predicting class probabilities of token-id rows."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = path
        self.session = session(path, threads)

    def probs(
        self,
        ids: list[np.ndarray],
        pad_id: int,
        num_labels: int,
        batch_size: int | None = None,
        progress: bool = False,
        desc: str = "predict",
        temperature: float = 1.0,
    ) -> np.ndarray:
        """Class probabilities ``softmax(logits / temperature)``, shape (rows, classes), rows in input order;
        length-sorted batches padded to their longest row."""
        out = np.zeros((len(ids), num_labels), dtype=np.float64)
        lengths = np.array([len(x) for x in ids])
        with progress_bar(len(ids), desc, progress) as bar:
            for rows in sorted_batches(lengths, batch_size or BATCH_SIZE):
                # No rounding of the width here: ONNX Runtime's kernels do not cache per-shape primitives.
                input_ids, mask = pad_batch(ids, rows, pad_id, multiple=1)
                logits = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
                out[rows] = softmax(logits.astype(np.float64) / temperature)
                bar.update(len(rows))
        return out


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or an added-token dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _gpu_may_be_present() -> bool:
    """Whether ``--device auto`` could mean a GPU here; only PyTorch can say for sure, so any sign sends the
    caller to the PyTorch path."""
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (
        sys.platform == "darwin"  # Apple's MPS
        or (nvidia.is_dir() and any(nvidia.iterdir()))
        or any(Path("/dev").glob("nvidia[0-9]*"))
        or Path("/dev/nvhost-ctrl").exists()  # Jetson
        or Path("/dev/dxg").exists()  # WSL2
        or Path("/dev/kfd").exists()  # ROCm
        or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    )


def _threads(recipe: Recipe) -> int | None:
    """ONNX Runtime's thread count: the recipe's, else ``OMP_NUM_THREADS`` (which the PyTorch path's thread count
    follows), else None: one per physical core, ONNX Runtime's own default and PyTorch's."""
    if recipe.train.threads:
        return recipe.train.threads
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return None


@dataclass
class CachedRun:
    """A finished run whose int8 graph is already cached, predicting without PyTorch (see the module docstring).

    It answers what the CLI asks of :class:`loraclf.inference.run.Run`: ``labels``, ``trainable``, ``engine``,
    ``precision`` and :meth:`predict_proba`.
    """

    path: Path
    recipe: Recipe
    labels: list
    info: RunInfo
    tokenizer: object  # tokenizers.Tokenizer, truncating at the run's max length
    pad_id: int
    engine: Int8Classifier
    precision: str = "int8"
    temperature: float = 1.0  # the run's fitted temperature, or 1.0 when calibration is off

    @property
    def trainable(self) -> int:
        return self.info.trainable

    def encode(self, texts: list[str], progress: bool = False) -> list[np.ndarray]:
        """Token ids of each text after the run's cleaning, special tokens included, unpadded."""
        from loraclf.data.clean import clean_texts

        cleaned = clean_texts(list(texts), self.recipe.data.clean)
        out: list[np.ndarray] = []
        with progress_bar(len(cleaned), "tokenize", progress) as bar:
            for start in range(0, len(cleaned), TOKENIZE_CHUNK):
                part = cleaned[start : start + TOKENIZE_CHUNK]
                out.extend(np.asarray(e.ids, dtype=np.int32) for e in self.tokenizer.encode_batch(part))
                bar.update(len(part))
        return out

    def predict_proba(
        self, texts: list[str], batch_size: int | None = None, progress: bool = False, desc: str = "predict"
    ) -> np.ndarray:
        """Class probabilities, shape (len(texts), classes), columns in the order of ``self.labels``."""
        if isinstance(texts, str):
            texts = [texts]
        ids = self.encode(texts, progress=progress)
        return self.engine.probs(
            ids,
            self.pad_id,
            len(self.labels),
            batch_size,
            progress=progress,
            desc=desc,
            temperature=self.temperature,
        )


def open_cached(
    run: Path, device: str = "auto", precision: str = "auto", calibration: bool = True
) -> CachedRun | None:
    """The run as a :class:`CachedRun` when int8 prediction needs nothing but its cached graph, else None.

    ``calibration`` applies the run's fitted temperature, as :func:`loraclf.inference.run.load` does.

    None when: the device or precision asks for PyTorch (or a GPU may be present), the run is a prompt/prefix or
    causal-LM run (those predict with PyTorch under ``auto``), older runs that do not record their kind, no
    ``tokenizer.json`` or pad token can be read (the PyTorch path then says what is wrong with the tokenizer), or
    the graph is not cached yet (the PyTorch path exports it). ``run`` must already be checked
    (:func:`loraclf.runfolder.schema.check_run`).
    """
    if precision not in ("auto", "int8") or device not in ("auto", "cpu"):
        return None
    if device == "auto" and _gpu_may_be_present():
        return None
    recipe, info = read_recipe(run), read_run_info(run)
    causal = info.model.get("causal")
    from loraclf.modeling.methods import get_method  # torch-free; only the registry

    if not get_method(recipe.adapter.method).plain or causal is None or (causal and precision == "auto"):
        return None
    folder = run / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        return None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    path = graph_path(run)
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception:  # the tokenizers library raises a bare Exception for a damaged file
        return None
    pad = _token_name(config.get("pad_token")) or _token_name(config.get("eos_token"))
    pad_id = tokenizer.token_to_id(pad) if pad else None
    if pad_id is None:
        return None
    tokenizer.no_padding()
    tokenizer.enable_truncation(info.max_length, direction=recipe.data.truncation_side)
    # transformers applies this setting when it calls the tokenizer; the raw tokenizer needs it set.
    tokenizer.encode_special_tokens = bool(config.get("split_special_tokens", False))
    engine = Int8Classifier(path, _threads(recipe))
    t = temperature_of(info.calibration) if calibration else 1.0
    return CachedRun(run, recipe, read_labels(run), info, tokenizer, pad_id, engine, temperature=t)
