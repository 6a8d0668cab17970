"""Each training knob changes what it says it changes.

Unit-level where the knob is a formula (label smoothing, class weights, R-Drop, schedules) and through a tiny run
where it shapes the loop (gradient accumulation, early stopping, TensorBoard output).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli, write_text_csv
from loraclf.config import Recipe, apply_overrides
from loraclf.training.losses import LossStep, balanced_weights, symmetric_kl
from loraclf.training.session import make_scheduler

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


class Logits(torch.nn.Module):
    """A 'model' returning fixed logits, plus optional dropout noise, like a classifier's output object."""

    def __init__(self, logits: torch.Tensor, noise: float = 0.0):
        super().__init__()
        self.logits, self.noise = logits, noise

    def forward(self, input_ids=None, attention_mask=None):
        out = self.logits + self.noise * torch.randn_like(self.logits)
        return type("Out", (), {"logits": out})()


def recipe(*overrides: str) -> Recipe:
    return apply_overrides(Recipe(), list(overrides))


LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.5, 0.2, 2.5], [1.0, 1.0, 0.0]])
LABELS = torch.tensor([0, 1, 2, 1])


def step(r: Recipe, model, weights=None) -> torch.Tensor:
    """The loss of one step holding exactly these four rows (a share of it is tested in test_loop_scale.py)."""
    loss_step = LossStep(r, weights)
    loss, _ = loss_step(model, None, None, LABELS, np.arange(4), loss_step.norm(LABELS.numpy()))
    return loss


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    eps = 0.2
    got = step(recipe(f"train.label_smoothing={eps}"), Logits(LOGITS))
    target = torch.full((4, 3), eps / 3)
    target[torch.arange(4), LABELS] += 1 - eps
    expected = -(target * F.log_softmax(LOGITS, -1)).sum(-1).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() != pytest.approx(step(recipe(), Logits(LOGITS)).item(), rel=1e-3)


def test_balanced_class_weights_give_every_class_the_same_total_weight():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    w = balanced_weights(labels, 3)
    totals = [w[c].item() * (labels == c).sum() for c in range(3)]
    assert totals == pytest.approx([3.0, 3.0, 3.0])
    weighted = step(recipe("train.class_weights=balanced"), Logits(LOGITS), w)
    per_row = F.cross_entropy(LOGITS, LABELS, reduction="none")
    expected = (w[LABELS] * per_row).sum() / w[LABELS].sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


def test_rdrop_adds_the_symmetric_kl_of_two_dropout_passes():
    torch.manual_seed(0)
    model = Logits(LOGITS, noise=0.5)
    alpha = 0.7
    got = step(recipe(f"train.rdrop={alpha}"), model)
    torch.manual_seed(0)
    a, b = model().logits, model().logits
    ce = 0.5 * (F.cross_entropy(a, LABELS) + F.cross_entropy(b, LABELS))
    assert got.item() == pytest.approx((ce + alpha * symmetric_kl(a, b)).item(), rel=1e-5)
    assert symmetric_kl(a, b).item() > 0  # two passes really differed
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("name", ["linear", "cosine", "polynomial", "constant"])
def test_every_scheduler_warms_up_then_follows_its_shape(name):
    total, warmup, lr = 100, 10, 1e-3
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=lr)
    sched = make_scheduler(opt, recipe(f"train.scheduler={name}", f"train.warmup_steps={warmup}"), total)
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[warmup // 2] == pytest.approx(lr / 2)  # linear warmup from zero
    assert lrs[warmup] == pytest.approx(lr)
    after = lrs[warmup:]
    if name == "constant":
        assert all(x == pytest.approx(lr) for x in after)
    else:
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(after))  # decays monotonically
        assert after[-1] < 0.05 * lr
    if name == "cosine":  # half a cosine: at the midpoint of the decay, half the peak
        mid = warmup + (total - warmup) // 2
        assert lrs[mid] == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=0.05)
    if name == "linear":
        assert lrs[55] == pytest.approx(lr * (total - 55) / (total - warmup), rel=1e-6)


# --- through a tiny run -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("knobs")
    return {
        "train": write_text_csv(d / "train.csv", 64, seed=1),
        "eval": write_text_csv(d / "eval.csv", 24, seed=2),
    }


def run_tiny(bert: Path, data: dict, out: Path, *extra: str) -> dict:
    res = run_cli(
        "train", "--model", bert, "--train", data["train"], "--eval", data["eval"], "--out", out, *TINY, *extra
    )  # fmt: skip
    assert res.returncode == 0, res
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"metrics": json.loads((out / "metrics.json").read_text()), "history": history}


def test_gradient_accumulation_takes_one_optimizer_step_per_group(tiny_bert_dir, data, tmp_path):
    # 64 rows in batches of 8: 8 micro-batches an epoch; accumulating 3 gives ceil(8 / 3) = 3 steps an epoch.
    one = run_tiny(tiny_bert_dir, data, tmp_path / "acc1", "--epochs", "2")
    three = run_tiny(tiny_bert_dir, data, tmp_path / "acc3", "--epochs", "2", "train.grad_accum=3")
    assert one["metrics"]["steps"] == 16
    assert three["metrics"]["steps"] == 6
    evals = [h["step"] for h in three["history"] if h["split"] == "eval"]
    assert evals == [3, 6]  # evaluation once per epoch, counted in optimizer steps


def test_early_stopping_stops_after_evaluations_without_improvement(tiny_bert_dir, data, tmp_path):
    # lr 0 never improves after the first evaluation: patience 2 stops at the third evaluation.
    res = run_tiny(
        tiny_bert_dir, data, tmp_path / "early", "--epochs", "10", "train.lr=1e-12", "train.eval_every=2",
        "train.early_stopping=2", "train.warmup_ratio=0",
    )  # fmt: skip
    evals = [h for h in res["history"] if h["split"] == "eval"]
    assert [h["step"] for h in evals] == [2, 4, 6]
    assert [h["best"] for h in evals] == [True, False, False]
    assert res["metrics"]["steps"] == 6 and res["metrics"]["best_step"] == 2


def test_tensorboard_output_holds_the_logged_scalars(tiny_bert_dir, data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run_tiny(tiny_bert_dir, data, out, "--epochs", "1", "train.tensorboard=true", "train.eval_every=4")
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"eval/accuracy", "eval/loss", "eval/macro_f1"} <= tags
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [4, 8]
