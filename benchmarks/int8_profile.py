"""How far a run's int8 prediction is from the CPU's int8 limit, and where ONNX Runtime spends the rest.

    .venv/bin/python benchmarks/int8_profile.py RUN --data ../shared/data/ag_news/test.csv --rows 1000

Four measurements, one after the other (run it alone on the machine):

1. **Token positions**: the run's tokenizer over the first ``--rows`` rows, in the length-sorted batches that
   ``predict`` scores (``BATCH_SIZE`` rows, padded to their longest): T padded tokens per row.
2. **int8 GEMM rate**: for each weight shape of the run's cached int8 graph (its 2-D int8 initialisers, k × n),
   ONNX Runtime's ``DynamicQuantizeLinear`` + ``MatMulInteger`` (u8 activations × s8 weights, what dynamic
   quantisation runs) on a ``BATCH_SIZE·T × k`` activation, best of five rounds, at the session's thread count;
   fp32 ``MatMul`` beside it for comparison. Weighted by how many weights have each shape, the rate the graph's
   matrix products could reach.
3. **The limit**: a row costs ``2·N·T`` integer operations in those products (N: the graph's int8 weights), so the
   rate over that is the most rows per second the CPU can score in int8 with nothing else running. N includes a
   pooled head's weights, which run once per row rather than per token (MiniLM's MLP head: 1.4% of N), so the
   limit comes out that much low and the fraction that much high.
4. **Scoring rate and profile**: the shipped session over the rows (best of three), its fraction of the limit, then
   the same rows under ONNX Runtime's profiler, kernel time grouped by operator type.

The run's graph must be cached (``loraclf train`` writes it; otherwise ``loraclf.load(RUN, precision="int8")``
exports it first, which imports PyTorch).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def matmul_session(k: int, n: int, int8: bool, threads: int | None):
    """A one-node ONNX Runtime session: x (m × k, fp32) times a random k × n weight, int8 or fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])
    if int8:
        wq = np.clip(np.round(w / (np.abs(w).max() / 127)), -127, 127).astype(np.int8)
        nodes = [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
            helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["y"]),
        ]
        inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(0, np.int8), "wz")]
        y = helper.make_tensor_value_info("y", TensorProto.INT32, ["m", n])
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])
    model = helper.make_model(
        helper.make_graph(nodes, "mm", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def gemm_rate(m: int, k: int, n: int, int8: bool, threads: int | None, repeats: int = 20) -> float:
    """Operations per second (2·m·k·n per product) of the best of five rounds of ``repeats`` products."""
    sess = matmul_session(k, n, int8, threads)
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            sess.run(None, {"x": x})
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * m * k * n / best


def weight_shapes(graph: Path) -> collections.Counter:
    """How many int8 weight matrices of each shape (k, n) the quantised graph holds."""
    import onnx

    model = onnx.load(str(graph))
    return collections.Counter(
        tuple(t.dims)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2
    )


def score(run, ids: list[np.ndarray]) -> float:
    """Rows per second of the run's session over the token ids, best of three passes."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run.engine.probs(ids, run.pad_id, len(run.labels))
        best = min(best, time.perf_counter() - start)
    return len(ids) / best


def profile(run, ids: list[np.ndarray], threads: int | None) -> list[tuple[str, float]]:
    """Share of ONNX Runtime kernel time per operator type over one pass, largest first: a session with the
    shipped settings (``int8_runtime.session``) and the profiler on."""
    from loraclf.data.batching import pad_batch, sorted_batches
    from loraclf.inference.int8_runtime import BATCH_SIZE, session

    with tempfile.TemporaryDirectory() as tmp:
        sess = session(run.engine.path, threads, profile_prefix=str(Path(tmp) / "ort"))
        lengths = np.array([len(x) for x in ids])
        for rows in sorted_batches(lengths, BATCH_SIZE):
            input_ids, mask = pad_batch(ids, rows, run.pad_id, multiple=1)
            sess.run(None, {"input_ids": input_ids, "attention_mask": mask})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values()) or 1
    return [(op, d / total) for op, d in by_op.most_common()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a finished run folder")
    ap.add_argument("--data", required=True, help="a CSV/TSV/JSONL/Parquet file of texts the run can read")
    ap.add_argument("--rows", type=int, default=1000, help="first rows of --data to score (default 1000)")
    args = ap.parse_args()

    from loraclf.cli.files import file_config
    from loraclf.config import CleanConfig
    from loraclf.data.batching import sorted_batches
    from loraclf.data.tables import COLUMN_FLAGS, load_texts
    from loraclf.inference.int8_runtime import BATCH_SIZE, open_cached
    from loraclf.runfolder.schema import check_run, read_recipe
    from loraclf.utils.errors import UserError

    try:
        run_dir = check_run(args.run)
        run = open_cached(run_dir, device="cpu", precision="int8")
        if run is None:
            import loraclf

            loraclf.load(run_dir, device="cpu", precision="int8")  # exports and caches the graph
            run = open_cached(run_dir, device="cpu", precision="int8")
    except UserError as err:  # e.g. a prompt/prefix run, which has no int8 graph
        sys.exit(f"int8_profile.py: {err}")
    if run is None:
        sys.exit(
            f"int8_profile.py: {args.run} has its int8 graph but no tokenizer.json or pad token the tokenizers "
            "library can read, or records no model kind (a run from an older loraclf); retrain it"
        )
    # Cleaning off when reading: the run cleans the raw texts itself (CachedRun.encode), as `predict` does.
    data = read_recipe(run_dir).data
    off = CleanConfig(**{f.name: False for f in dataclasses.fields(CleanConfig)})
    cfg = file_config(dataclasses.replace(data, clean=off), argparse.Namespace(overrides=[]))
    texts = load_texts(args.data, cfg, "--data", labelled=False, fixes=COLUMN_FLAGS)[0].texts[: args.rows]
    ids = run.encode(texts)
    lengths = np.array([len(x) for x in ids])
    padded = sum(len(rows) * int(lengths[rows].max()) for rows in sorted_batches(lengths, BATCH_SIZE))
    tokens = padded / len(ids)
    threads = run.engine.session.get_session_options().intra_op_num_threads or None  # what predict uses
    print(f"{len(ids):,} rows of {args.data}: {lengths.mean():.1f} tokens a row, {tokens:.1f} padded")

    shapes = weight_shapes(run.engine.path)
    m = round(BATCH_SIZE * tokens)
    n_weights = sum(k * n * count for (k, n), count in shapes.items())
    spent = {"int8": 0.0, "fp32": 0.0}
    for (k, n), count in sorted(shapes.items()):
        rates = {}
        for kind in ("int8", "fp32"):
            rates[kind] = gemm_rate(m, k, n, kind == "int8", threads)
            spent[kind] += count * 2 * m * k * n / rates[kind]
        print(
            f"{m} x {k} @ {k} x {n} (x{count}): int8 {rates['int8'] / 1e9:.0f} GOP/s, "
            f"fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s"
        )
    ops = 2 * m * n_weights
    rate = ops / spent["int8"]
    per_row = 2 * n_weights * tokens
    limit = rate / per_row
    print(
        f"int8 weights N = {n_weights:,}; the graph's products at {rate / 1e9:.0f} GOP/s "
        f"(fp32 {ops / spent['fp32'] / 1e9:.0f} GFLOP/s); {per_row / 1e9:.2f} GOP a row"
    )
    print(f"int8 limit of this CPU: {limit:.0f} rows/s")
    measured = score(run, ids)
    print(f"scoring: {measured:.1f} rows/s, {measured / limit:.0%} of the limit")
    print("ONNX Runtime kernel time by operator:")
    for op, share in profile(run, ids, threads)[:12]:
        print(f"  {op:28s} {share:6.1%}")


if __name__ == "__main__":
    main()
