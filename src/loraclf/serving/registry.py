"""The runs ``loraclf serve`` answers for: loading them, naming them, and finding new ones in a served folder.

A run is named by its folder's name. It is loaded one of two ways:

* **as ``predict`` loads it** (:func:`loraclf.inference.run.load`): a single served run on a CPU runs its int8 ONNX
  graph, and ``--precision int8`` gives every run its own graph (no sharing);
* **over a shared backbone** (the default for several runs or a ``--runs`` folder): the unmerged PyTorch model, its
  pretrained tensors shared with every other run of the same backbone (see :mod:`loraclf.serving.sharing`).

Texts are cleaned and tokenised exactly as ``predict`` does (the run's cleaning, its tokenizer, its max length and
truncation side). Scores come from the run's calibrated logits, ``logits / T`` with ``T`` its fitted temperature
(``run.json`` ``calibration``), so softmax scores are the probabilities ``predict`` writes and ``raw_scores`` are
the logits an exported folder returns; ``--no-calibration`` serves the raw logits, as ``predict --no-calibration``.
A damaged run folder is refused in one log line and the others are served. A ``--runs`` folder is
scanned again when a request names a run that is not loaded and every ``--rescan`` seconds,
so a finished run copied or moved into it becomes servable without a restart; a folder that was refused is tried
again once its files change.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loraclf.runfolder.schema import REQUIRED
from loraclf.utils.errors import UserError


def note(message: str) -> None:
    """One line of the server's log on stderr."""
    print(f"loraclf serve: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class TooLong(Exception):
    """An input longer than the run reads, with ``truncate`` off: (input index, token count, the run's limit)."""

    def __init__(self, index: int, tokens: int, limit: int):
        super().__init__(index, tokens, limit)
        self.index, self.tokens, self.limit = index, tokens, limit


@dataclass
class Member:
    """One served run: its loaded :class:`~loraclf.inference.run.Run` and how it computes.

    Attributes:
        name: The run folder's name, which requests use.
        run: The loaded run (tokenizer, labels, recipe, and an int8 engine or a PyTorch model).
        engine: How predictions are computed, for logs and ``/info``.
        shared_bytes: Bytes of its weights shared with other runs of its backbone.
        own_bytes: Bytes of weights it holds alone.
    """

    name: str
    run: object
    engine: str
    shared_bytes: int = 0
    own_bytes: int = 0
    # The tokenizer's lock (runs with the same tokenizer share both): transformers' fast tokenizers set their
    # truncation state per call and fail ("Already borrowed") when two threads call one at once.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def labels(self) -> list:
        return self.run.labels

    @property
    def max_length(self) -> int:
        return self.run.max_length

    def encode(self, texts: list[str], truncate: bool = True) -> list[np.ndarray]:
        """Token ids of each text as ``predict`` makes them (cleaned, special tokens, cut at the run's max length).

        Raises:
            TooLong: ``truncate`` is off and an input has more tokens than the run reads.
        """
        from loraclf.data.batching import token_lengths, tokenize
        from loraclf.data.clean import clean_texts

        cleaned = clean_texts(list(texts), self.run.recipe.data.clean)
        with self.lock:
            if not truncate:
                for i, n in enumerate(token_lengths(self.run.tokenizer, cleaned)):
                    if n > self.max_length:
                        raise TooLong(i, int(n), self.max_length)
            return tokenize(self.run.tokenizer, cleaned, self.max_length)

    def logits(self, ids: list[np.ndarray]) -> np.ndarray:
        """Calibrated logits (the model's logits divided by the run's temperature) of token-id rows, shape (rows,
        classes), rows in input order; length-sorted batches padded to their longest row, as ``predict`` runs
        them."""
        return self._logits(ids) / self.run.temperature

    def _logits(self, ids: list[np.ndarray]) -> np.ndarray:
        from loraclf.data.batching import pad_batch, sorted_batches
        from loraclf.inference.int8_runtime import BATCH_SIZE

        run, out = self.run, np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        pad_id, lengths = run.tokenizer.pad_token_id, np.array([len(x) for x in ids])
        if run.engine is not None:
            for rows in sorted_batches(lengths, BATCH_SIZE):
                input_ids, mask = pad_batch(ids, rows, pad_id, multiple=1)
                feed = {"input_ids": input_ids, "attention_mask": mask}
                out[rows] = run.engine.session.run(None, feed)[0]
            return out
        return self._torch_logits(ids, lengths, out)

    def _torch_logits(self, ids: list[np.ndarray], lengths: np.ndarray, out: np.ndarray) -> np.ndarray:
        import torch

        from loraclf.data.batching import collate, sorted_batches
        from loraclf.inference.predict import CPU_MAX_BATCH
        from loraclf.utils.devices import autocast

        run = self.run
        size = run.recipe.train.eval_batch_size
        size = min(size, CPU_MAX_BATCH) if run.device.type == "cpu" else size
        with torch.no_grad():
            for rows in sorted_batches(lengths, size):
                input_ids, mask = collate(ids, rows, run.tokenizer.pad_token_id, run.device)
                with autocast(run.device, run.torch_precision):
                    logits = run.model(input_ids=input_ids, attention_mask=mask).logits
                out[rows] = logits.float().cpu().numpy()
        return out

    def describe(self) -> dict:
        """What ``GET /info`` says about the run."""
        recipe = self.run.recipe
        return {
            "name": self.name,
            "labels": [str(label) for label in self.labels],
            "max_input_length": self.max_length,
            "method": recipe.adapter.method,
            "backbone": recipe.model.name,
            "trainable": self.run.trainable,
            "engine": self.engine,
            "shared_bytes": self.shared_bytes,
            "own_bytes": self.own_bytes,
        }


def _signature(folder: Path) -> tuple:
    """Sizes and times of a run folder's files: a refused folder is tried again once this changes."""
    stats = []
    for name in (*REQUIRED, "tokenizer"):
        try:
            st = (folder / name).stat()
            stats.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((name, None, None))
    return tuple(stats)


class Registry:
    """The served runs by name, loaded one at a time (loading may run in a thread beside requests).

    Args:
        device: ``auto``, ``cpu``, ``cuda``… (as ``predict --device``).
        precision: ``auto``, ``int8``, ``bf16``, ``fp16`` or ``fp32`` (as ``predict --precision``).
        share: Load runs over a shared backbone (else each as ``predict`` loads it).
        calibration: Apply each run's fitted temperature (see the module docstring).
    """

    def __init__(
        self, device: str = "auto", precision: str = "auto", share: bool = True, calibration: bool = True
    ):
        self.device_name, self.precision, self.share = device, precision, share
        self.calibration = calibration
        self.members: dict[str, Member] = {}
        self.refused: dict[str, tuple[tuple, str]] = {}
        self.folders: list[Path] = []
        self._lock = threading.Lock()
        # One scan at a time (a request's miss and the periodic scan may meet): the second then finds the runs the
        # first loaded instead of loading them again under a taken name.
        self._scan_lock = threading.Lock()
        self._tokenizers: dict[str, tuple] = {}
        self._weights = None

    def add(self, path: str | Path) -> Member:
        """Load the run folder at ``path`` under its folder's name and log one line saying how.

        Raises:
            UserError: the folder is not a finished run, is damaged, or its name is taken by another folder.
        """
        path = Path(path)
        name = path.resolve().name
        with self._lock:
            if name in self.members:
                raise UserError(
                    f"RUN: two run folders are named '{name}'; a run is served under its folder's name"
                )
            try:
                member = self._load_shared(path, name) if self.share else self._load_alone(path, name)
            except UserError:
                raise
            except Exception as exc:  # a folder whose files do not fit together: refused like a damaged one
                raise UserError(
                    f"RUN: '{path}' cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})"
                ) from None
            self.members[name] = member
        note(self._loaded_line(member))
        return member

    def _load_alone(self, path: Path, name: str) -> Member:
        from loraclf.inference.run import load

        run = load(path, device=self.device_name, precision=self.precision, calibration=self.calibration)
        if run.engine is not None:
            return Member(name, run, "int8, ONNX Runtime", own_bytes=_file_size(run.engine))
        size = sum(p.numel() * p.element_size() for p in run.model.parameters())  # builds the model now
        return Member(name, run, f"{run.torch_precision}, PyTorch on {run.device}", own_bytes=size)

    def _load_shared(self, path: Path, name: str) -> Member:
        from safetensors import safe_open

        from loraclf.inference.calibration import temperature_of
        from loraclf.inference.run import Run, build_trained_model
        from loraclf.runfolder.schema import check_run, read_labels, read_recipe, read_run_info
        from loraclf.serving.sharing import SharedWeights
        from loraclf.utils.devices import pick_device, pick_precision

        run = check_run(path)
        recipe, labels, info = read_recipe(run), read_labels(run), read_run_info(run)
        device = pick_device(self.device_name)
        precision = pick_precision(self.precision, device)
        tokenizer, lock = self._tokenizer(run / "tokenizer", recipe.data.truncation_side)
        model = build_trained_model(run, recipe, len(labels), tokenizer.pad_token_id, merge=False)
        model = model.to(device).eval()
        with safe_open(str(run / "model.safetensors"), framework="pt") as f:
            trained = set(f.keys())
        self._weights = self._weights or SharedWeights()
        shared, own = self._weights.adopt(model, recipe, trained)
        loaded = Run(run, recipe, labels, info, tokenizer, device, precision, _model=model)
        loaded.temperature = temperature_of(info.calibration) if self.calibration else 1.0
        return Member(name, loaded, f"{precision}, PyTorch on {device}, backbone shared", shared, own, lock)

    def _tokenizer(self, folder: Path, side: str):
        """The run's tokenizer and its lock, shared by every run whose tokenizer files are the same (a fast
        tokenizer with a 30k vocabulary holds about 10 MB, more than a LoRA adapter)."""
        from loraclf.modeling.backbones import load_tokenizer

        digest = hashlib.sha256(side.encode())
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"\0{path.relative_to(folder)}\0".encode())
            digest.update(path.read_bytes())
        key = digest.hexdigest()
        if key not in self._tokenizers:
            self._tokenizers[key] = (load_tokenizer(str(folder), truncation_side=side), threading.Lock())
        return self._tokenizers[key]

    @staticmethod
    def _loaded_line(m: Member) -> str:
        recipe = m.run.recipe
        what = f"loaded '{m.name}' ({recipe.adapter.method} on {recipe.model.name}, {len(m.labels)} labels, {m.engine})"
        if "shared" not in m.engine:
            return f"{what}: {mib(m.own_bytes)} of its own"
        if m.shared_bytes == 0:
            return f"{what}: shares no backbone weights (its training changed them all), {mib(m.own_bytes)} of its own"
        return f"{what}: shares {mib(m.shared_bytes)} of backbone weights, adds {mib(m.own_bytes)}"

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def refusal(self, name: str) -> str | None:
        """Why a folder of that name in a served folder was refused, if it was."""
        found = self.refused.get(name)
        return found[1] if found else None

    def watch(self, folder: Path) -> None:
        self.folders.append(Path(folder))

    def scan(self) -> list[str]:
        """Load the finished runs of the served folders not loaded yet; refuse damaged ones in one line each.

        Returns:
            The names loaded by this scan.
        """
        with self._scan_lock:
            return [name for folder in self.folders for name in self._scan(folder)]

    def _scan(self, folder: Path) -> list[str]:
        try:
            entries = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            note(f"cannot read --runs folder '{folder}' ({type(exc).__name__}); serving the runs loaded")
            return []
        added = []
        for sub in entries:
            if sub.name in self.members or not (sub / "run.json").exists():
                continue  # loaded already, or not a run folder at all (a logs folder, say)
            signature = _signature(sub)
            if self.refused.get(sub.name, (None,))[0] == signature:
                continue  # refused before and unchanged since
            try:
                self.add(sub)
                self.refused.pop(sub.name, None)
                added.append(sub.name)
            except UserError as exc:
                self.refused[sub.name] = (signature, str(exc))
                note(f"refused run '{sub.name}': {exc}")
        return added


def _file_size(engine) -> int:
    path = getattr(engine, "path", None)
    return path.stat().st_size if path is not None and path.exists() else 0
