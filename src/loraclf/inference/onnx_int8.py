"""int8 inference through ONNX Runtime: the fast CPU path of ``evaluate``, ``predict`` and ``pseudo-label``.

A finished run's classifier (adapters merged into the frozen weights) is exported once to ONNX with dynamic batch
and sequence axes and checked against the PyTorch model on a probe batch. Then the encoder's matrix products are
quantised to int8 with one scale per output channel (*dynamic* quantisation: weights are quantised once, activations
per call from their own range, so no calibration data is needed). Embeddings, attention scores, normalisation and
the classification head stay fp32. The quantised graph is checked too: on the probe rows PyTorch decides clearly it
must pick PyTorch's class (see :data:`MIN_AGREEMENT`); if not, it is quantised again with ``reduce_range``, and
failing that the fp32 graph is used, with a note saying which. ONNX Runtime runs the int8 products on the CPU's
integer dot-product instructions (AVX-512 VNNI, AVX-VNNI, Arm dot products), which do twice the multiply-adds of
bf16 per instruction; on AG News with MiniLM this predicted about 2x faster than bf16 PyTorch with the same accuracy
(benchmarks/README.md).

The graph is a derived artefact, cached under ``~/.cache/loraclf/onnx`` (``LORACLF_CACHE``) by a digest of the
run's weights, recipe and labels, the backbone's identity and the versions that shaped it. The run folder stays exactly as training wrote it;
a copied run folder exports again on its first prediction (a few seconds).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from loraclf.inference.int8_runtime import Int8Classifier, graph_path, session, softmax
from loraclf.modeling.backbones import PooledClassifier, is_causal_lm
from loraclf.utils.errors import UserError
from loraclf.utils.files import atomic_path

# Largest difference in class probabilities tolerated between the exported fp32 graph and PyTorch.
TOLERANCE = 1e-3
# The quantised graph must pick PyTorch's class on this share of the probe rows that PyTorch decides by at least
# CLEAR_MARGIN. A sound int8 graph moves class probabilities little (under 0.05 on the tiny test models); on AG
# News test.csv it kept fp32's accuracy (92.68% both) and bf16's label on 99.1% of rows (benchmarks/README.md), so
# a row led by 0.05 keeps its class unless the graph is damaged. A saturating u8s8 product (ORT on AVX2 without
# VNNI) moves logits by whole units and flips many such rows. 0.9 leaves room for a row or two near the margin
# among the 32 probe rows without passing a broken graph.
MIN_AGREEMENT = 0.9
CLEAR_MARGIN = 0.05
PROBE_ROWS = 32


class _Logits(torch.nn.Module):
    """The classifier as a function of (input_ids, attention_mask) returning logits: what the exporter traces.

    The attention bias is built here, in plain tensor operations, and handed to the model as a ready 4D mask, which
    transformers passes through untouched. Its own mask helpers branch on Python values (an all-ones mask skips
    masking altogether), which a trace would freeze to the example batch's case.
    """

    def __init__(self, inner: torch.nn.Module, causal: bool):
        super().__init__()
        self.inner = inner
        self.causal = causal

    def forward(self, input_ids, attention_mask):
        keep = attention_mask[:, None, None, :].bool()
        if self.causal:
            pos = torch.cumsum(torch.ones_like(input_ids), dim=1)
            keep = keep & (pos[:, None, :, None] >= pos[:, None, None, :])
        bias = torch.zeros(keep.shape, dtype=torch.float32).masked_fill(~keep, torch.finfo(torch.float32).min)
        if isinstance(self.inner, PooledClassifier):
            states = self.inner.backbone(input_ids=input_ids, attention_mask=bias).last_hidden_state
            return self.inner.head(self.inner.pool(states, attention_mask))
        return self.inner(input_ids=input_ids, attention_mask=bias).logits


def _probe(vocab_size: int, pad_id: int, rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of different lengths (all but the first padded), token ids well inside the vocabulary."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(100, vocab_size - 1), min(1000, vocab_size), size=(rows, width)).astype(np.int64)
    mask = np.ones_like(ids)
    for r in range(1, rows):
        n = int(rng.integers(2, width))
        ids[r, n:], mask[r, n:] = pad_id, 0
    return ids, mask


def export(model, path: Path, pad_id: int) -> None:
    """Export ``model`` (merged, fp32, eval mode) to an int8 ONNX graph at ``path``; raise on any mismatch.

    The trace runs on one batch shape; the check runs on another, so a size frozen into the graph shows up.
    """
    # eval() on the wrapper too: the exporter restores the traced module's mode afterwards, recursively.
    traced = _Logits(model.float(), is_causal_lm(model.config)).eval()
    example = _probe(model.config.vocab_size, pad_id, rows=2, width=12, seed=0)
    ids, mask = _probe(model.config.vocab_size, pad_id, rows=PROBE_ROWS, width=21, seed=1)
    with torch.no_grad():
        expected = torch.softmax(traced(torch.from_numpy(ids), torch.from_numpy(mask)), -1).numpy()
    # The tracer's and quantiser's advice (Python branches, pre-processing) is checked by the comparison below.
    with tempfile.TemporaryDirectory(prefix="loraclf-onnx-") as tmp, _quiet():
        fp32 = Path(tmp) / "model.onnx"
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
        with torch.no_grad():
            torch.onnx.export(
                traced,
                tuple(torch.from_numpy(x) for x in example),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: a second, no network, and graphs ORT fuses well
            )
        got = _probs(fp32, ids, mask)
        gap = float(np.abs(got - expected).max())
        if not gap <= TOLERANCE:
            raise ValueError(
                f"the exported graph differs from the PyTorch model (probabilities off by {gap:.2g})"
            )
        chosen = _quantised(fp32, Path(tmp), ids, mask, expected)
        with atomic_path(path) as part:
            shutil.copyfile(chosen, part)


def _probs(graph: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return softmax(session(graph).run(None, {"input_ids": ids, "attention_mask": mask})[0])


def argmax_agreement(expected: np.ndarray, got: np.ndarray, margin: float = CLEAR_MARGIN) -> float:
    """Share of the rows ``expected`` decides by at least ``margin`` (top class minus the next, in probability)
    whose top class ``got`` shares; 1.0 when no row is that clear. Shapes (rows, classes)."""
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= margin
    if not clear.any():
        return 1.0
    return float((expected.argmax(1) == got.argmax(1))[clear].mean())


def _quantised(fp32: Path, tmp: Path, ids, mask, expected) -> Path:
    """The int8 graph if it picks PyTorch's classes (:data:`MIN_AGREEMENT`), else one quantised with
    ``reduce_range`` (7-bit weights, which cannot saturate ORT's u8s8 products), else the fp32 graph; the choice
    is said in one line when it is not the first."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shares: list[float] = []
    for reduce_range in (False, True):
        graph = tmp / f"int8{'-reduce-range' if reduce_range else ''}.onnx"
        quantize_dynamic(
            str(fp32),
            str(graph),
            op_types_to_quantize=["MatMul"],  # the encoder's linear layers; embeddings and head stay fp32
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        agreement = argmax_agreement(expected, _probs(graph, ids, mask))
        if agreement >= MIN_AGREEMENT:
            if shares:
                _note(
                    f"the int8 graph picked PyTorch's class on {shares[0]:.0%} of clear probe rows; quantised "
                    f"again with reduce_range (agrees on {agreement:.0%})"
                )
            return graph
        shares.append(agreement)
    _note(
        f"the int8 graph picked PyTorch's class on {shares[0]:.0%} of clear probe rows ({shares[1]:.0%} with "
        "reduce_range); using the fp32 ONNX graph (slower, exact)"
    )
    return fp32


def _note(message: str) -> None:
    print(f"loraclf: note: {message}", file=sys.stderr)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def int8_classifier(run: Path, build, pad_id: int, threads: int | None = None) -> Int8Classifier | None:
    """The run's int8 classifier, exporting it on first use; None (with a note on stderr) when it cannot be built.

    ``build`` returns the merged fp32 PyTorch classifier; it is called only when the cache has no graph yet.
    """
    path = graph_path(run)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            export(build(), path, pad_id)
        except UserError:
            raise  # a damaged run folder fails the same way on PyTorch: say so once
        except Exception as exc:  # an architecture the exporter cannot trace must not stop a prediction
            print(
                f"loraclf: note: int8 export of '{run}' failed ({type(exc).__name__}: {str(exc)[:160]}); "
                "predicting with PyTorch instead",
                file=sys.stderr,
            )
            return None
    return Int8Classifier(path, threads)
