"""Where a CPU's time goes when loraclf trains, and how far training is from the CPU's fp32 limit.

    .venv/bin/python benchmarks/cpu_profile.py --data ../shared/data --rows 1600
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/cpu_profile.py …   # AVX2 on AVX-512

Four measurements, one after the other (run it alone on the machine):

1. **GEMM rate**: fp32 ``torch.mm`` at the shapes of one training micro-batch (``tokens × hidden`` against each
   encoder weight, forward and the activation-gradient product of the backward pass), at torch's thread count.
   Their FLOP-weighted rate is the most a training step can reach in fp32 on this CPU, since the matrix products
   are the step's only large arithmetic.
2. **FLOPs per sample**: ``4·N + 6·N_t + 12·L·T·d`` per padded token (forward ``2·N`` over the N frozen encoder
   matrix weights, backward through frozen weights only the activation gradients, another ``2·N``; ``6·N_t`` for
   the trainable adapter weights; attention scores and mixing ``12·L·T·d``), times the padded tokens per sample of
   the recipe's length-grouped batches (counted on the real rows). A backward pass that stops below the lowest
   adapted layer (``adapter.layers``) would cost less; this counts every layer, as the default recipes adapt all.
3. **Training samples/s**: ``loraclf train`` on ``--rows`` rows, one epoch, from its ``metrics.json``
   (optimisation time only), and the fraction of the limit: samples/s × FLOPs per sample ÷ GEMM rate.
4. **Profile**: the same command on a quarter of the rows under ``torch.profiler``, self CPU time grouped into
   matrix products, attention softmax, layer norm, GELU, dropout, element-wise arithmetic, optimizer and the rest.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

CATEGORIES = [  # (category, substrings of aten op names), first match wins
    ("matrix products", ("mm", "matmul", "linear", "bmm", "baddbmm", "addmm")),
    ("softmax", ("softmax",)),
    ("layer norm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("dropout", ("dropout", "bernoulli")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "addcmul")),
    (
        "copies, casts, layout",
        ("copy_", "to_copy", "contiguous", "clone", "cat", "index", "embedding", "transpose"),
    ),
    ("element-wise", ("add", "mul", "div", "sub", "where", "masked", "fill", "sum", "mean", "tanh", "exp")),
]


def cpu_flags() -> str:
    """The CPU's vector extensions that matter to PyTorch and ONNX Runtime, from /proc/cpuinfo."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8"]
    return " ".join(f for f in wanted if f in flags)


def gemm_rate(tokens: int, hidden: int, ffn: int, repeats: int = 20) -> tuple[float, list[tuple]]:
    """FLOP-weighted fp32 GFLOP/s of one micro-batch's encoder products; and each shape's rate."""
    shapes = [  # (M, K, N): forward X·W for the attention projections and the two feed-forward matrices,
        (tokens, hidden, hidden),  # and the backward dX = dY·Wᵀ, which swaps K and N
        (tokens, hidden, ffn),
        (tokens, ffn, hidden),
    ]
    rows = []
    total_flops = total_seconds = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        for _ in range(10):
            torch.mm(a, b, out=out)
        # The fastest of five rounds: on a shared virtual machine single rounds varied from 75 to 125 GFLOP/s.
        seconds = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            seconds = min(seconds, (time.perf_counter() - start) / repeats)
        flops = 2.0 * m * k * n
        rows.append((m, k, n, flops / seconds / 1e9))
        # The attention projections are 4 of the 6 matrices per layer (query, key, value, output).
        weight = 4 if (k, n) == (hidden, hidden) else 1
        total_flops += weight * flops
        total_seconds += weight * seconds
    return total_flops / total_seconds / 1e9, rows


def padded_tokens(recipe_path: str, data: Path, rows: int) -> tuple[float, float, dict]:
    """Mean real and padded tokens per training sample of the recipe's batches, and the model's shape."""
    from loraclf.config import apply_overrides, load_recipe
    from loraclf.data.batching import PAD_MULTIPLE, epoch_batches
    from loraclf.modeling.backbones import load_config
    from loraclf.training.prepare import prepare

    recipe = apply_overrides(
        load_recipe(recipe_path), [f"data.max_train_samples={rows}", "data.val_size=160"]
    )
    p = prepare(recipe, str(data / "train.csv"), None)
    lengths = np.array([len(x) for x in p.train_ids])
    t = recipe.train
    padded = 0
    for batch in epoch_batches(lengths, t.batch_size, t.seed, 0, t.group_by_length):
        padded += len(batch) * -(-int(lengths[batch].max()) // PAD_MULTIPLE) * PAD_MULTIPLE
    config = load_config(recipe.model.name, model_cfg=recipe.model)
    shape = {
        "hidden": config.hidden_size,
        "ffn": config.intermediate_size,
        "layers": config.num_hidden_layers,
        "batch_size": t.batch_size,
        "trainable": p.plan.trainable,
    }
    return float(lengths.mean()), padded / len(lengths), shape


def train_once(recipe_path: str, data: Path, rows: int, out: Path, profile: bool = False):
    """``loraclf train`` in this process on ``rows`` rows for one epoch; returns (metrics, profiler or None)."""
    from loraclf.cli.main import main

    args = [
        "train", "--config", recipe_path, "--train", str(data / "train.csv"), "--max-train-samples", str(rows),
        "--epochs", "1", "--out", str(out), "--quiet", "data.val_size=160",
    ]  # fmt: skip
    prof = None
    if profile:
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        with prof:
            code = main(args)
    else:
        code = main(args)
    if code:
        raise SystemExit(f"loraclf train failed with status {code}")
    return json.loads((out / "metrics.json").read_text()), prof


def breakdown(prof) -> tuple[list[tuple[str, float]], float]:
    """Self CPU time per category as fractions of the profiled total, and that total in seconds (aten ops only)."""
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        name = event.key.removeprefix("aten::")
        category = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other aten ops")
        seconds[category] += event.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    return sorted(((c, s / total) for c, s in seconds.items()), key=lambda x: -x[1]), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "minilm-cpu.yaml"))
    ap.add_argument("--rows", type=int, default=1600, help="training rows for the timed run (one epoch)")
    args = ap.parse_args()
    data = Path(args.data) / "ag_news"

    print(f"CPU flags: {cpu_flags()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ATen capability {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    real, padded, shape = padded_tokens(args.recipe, data, args.rows)
    d, ff, n_layers = shape["hidden"], shape["ffn"], shape["layers"]
    rate, per_shape = gemm_rate(int(shape["batch_size"] * padded), d, ff)
    print(f"\nfp32 GEMM at a micro-batch of {shape['batch_size']} × {padded:.1f} padded tokens:")
    for m, k, n, gflops in per_shape:
        print(f"  {m} × {k} · {k} × {n}: {gflops:.1f} GFLOP/s")
    print(f"  FLOP-weighted over a layer's six products: {rate:.1f} GFLOP/s")

    n_matrix = n_layers * (4 * d * d + 2 * d * ff)
    per_token = 4 * n_matrix + 6 * shape["trainable"] + 12 * n_layers * padded * d
    per_sample = per_token * padded
    limit = rate * 1e9 / per_sample
    print(
        f"\nFLOPs per training sample: {per_sample / 1e9:.2f} GFLOP ({real:.1f} real, {padded:.1f} padded tokens; "
        f"N = {n_matrix / 1e6:.2f} M encoder matrix weights, N_t = {shape['trainable']:,})"
    )
    print(f"fp32 limit of this CPU: {limit:.1f} training samples/s")

    with tempfile.TemporaryDirectory(prefix="loraclf-profile-") as tmp:
        m, _ = train_once(args.recipe, data, args.rows, Path(tmp) / "timed")
        speed = m["train_samples_per_s"]
        print(
            f"\nloraclf train, {args.rows} rows, one epoch: {speed:.1f} samples/s while optimising "
            f"= {speed / limit:.0%} of the limit ({speed * per_sample / 1e9:.1f} GFLOP/s)"
        )
        rows = max(args.rows // 4, 64)
        _, prof = train_once(args.recipe, data, rows, Path(tmp) / "profiled", profile=True)
    shares, total = breakdown(prof)
    print(f"\nprofile of the whole command on {rows} rows ({total:.1f} s of aten self time):")
    for category, share in shares:
        print(f"  {category:24s} {share:6.1%}")
    print("\ntop aten ops by self time:")
    events = sorted(
        (e for e in prof.key_averages() if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total
    )
    for e in events[:12]:
        print(f"  {e.key:32s} {e.self_cpu_time_total / 1e6:7.2f} s  {e.count:7d} calls")


if __name__ == "__main__":
    main()
