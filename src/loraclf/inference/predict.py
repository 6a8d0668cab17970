"""Batched inference, Monte Carlo dropout, ensembles and submission files.

Inference sorts rows by token length and pads each batch only to its longest row, then restores input order, so a
prediction file always has one row per input row, in input order (an empty text still gets a label). LoRA adapters
are merged into the frozen weights before inference, which removes their extra matrix products.

Monte Carlo dropout (Gal & Ghahramani, 2016) keeps dropout active at test time and averages the class
probabilities of N stochastic passes. An ensemble averages the probabilities of several runs; it spends one
parameter budget per member, and loraclf prints the total.
"""

from __future__ import annotations

import numpy as np
import torch

from loraclf.data.batching import collate, sorted_batches
from loraclf.utils.devices import autocast
from loraclf.utils.progress import bar as progress_bar

# Rows one PyTorch forward pass takes at most on a CPU. Larger batches spill the activations out of the caches:
# MiniLM, 1,280 AG News rows, fp32, 2-core AVX2 (AMD EPYC Zen 3): 128 rows 31.1-31.7 s, 64 rows 23.1-24.7 s,
# 32 rows 21.7-23.0 s, 16 rows 23.3-26.0 s. On a GPU the recipe's train.eval_batch_size applies unchanged.
CPU_MAX_BATCH = 32


@torch.no_grad()
def forward_probs(
    model,
    ids: list[np.ndarray],
    pad_id: int,
    device,
    precision: str,
    batch_size: int,
    mc_dropout: int = 0,
    seed: int = 0,
    progress: bool = False,
    desc: str = "predict",
    temperature: float = 1.0,
):
    """Class probabilities of token-id rows, shape (rows, classes), rows in input order.

    ``batch_size`` rows run at once (at most :data:`CPU_MAX_BATCH` on a CPU); ``mc_dropout`` > 0 averages that many
    passes with dropout on. Each pass's probabilities are ``softmax(logits / temperature)`` (a run's fitted
    temperature, see :mod:`loraclf.inference.calibration`; 1.0 gives the raw softmax).
    """
    if torch.device(device).type == "cpu":
        batch_size = min(batch_size, CPU_MAX_BATCH)
    lengths = np.array([len(x) for x in ids])
    batches = sorted_batches(lengths, batch_size)
    passes = max(1, mc_dropout)
    model.eval()
    if mc_dropout:
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.train()
    out = None
    bar = progress_bar(len(ids) * passes, desc, progress)
    for _ in range(passes):
        for rows in batches:
            input_ids, mask = collate(ids, rows, pad_id, device)
            with autocast(device, precision):
                logits = model(input_ids=input_ids, attention_mask=mask).logits
            probs = torch.softmax(logits.float() / temperature, dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((len(ids), probs.shape[1]), dtype=np.float64)
            out[rows] += probs
            bar.update(len(rows))
    bar.close()
    model.eval()
    if out is None:  # no rows: an empty table with one column per class
        return np.zeros((0, model.config.num_labels))
    return out / passes
