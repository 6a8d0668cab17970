"""Loss steps: the one place where a batch becomes a loss.

The training loop calls a :class:`LossStep` and never looks inside, so distillation and R-Drop change the loss
without forking the loop.

* Cross-entropy, with optional label smoothing and inverse-frequency class weights.
* R-Drop (Liang et al., 2021): two forward passes with different dropout masks; the loss adds
  ``alpha · ½ (KL(p1‖p2) + KL(p2‖p1))`` to the mean cross-entropy of both, which pulls the two sub-models
  together and regularises small adapters.
* Knowledge distillation (Hinton et al., 2015): ``(1 − a) · CE + a · T² · KL(softmax(t/T) ‖ softmax(s/T))`` with
  the teacher's log-probabilities ``t`` computed once for every training row before training starts. The ``T²``
  keeps gradient magnitudes comparable across temperatures. Teachers are finished run folders (an ensemble of
  several averages their probabilities); they do not count against the student's budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from loraclf.config import Recipe
from loraclf.utils.errors import UserError
from loraclf.utils.files import atomic_open


@dataclass(frozen=True)
class StepNorm:
    """What one optimizer step's loss is averaged over, counted on the host for the whole step (all micro-batches,
    all ranks) before it runs: its rows, and their summed class weights (equal to ``rows`` without weights)."""

    rows: int
    weight: float


@dataclass
class LossStep:
    """Turns a share of a batch into its part of the step's loss, and the logits.

    The step's loss is the single-process loss over all its rows: the (class-weighted) mean cross-entropy, R-Drop's
    and distillation's per-row means added. A share contributes its rows' summed terms divided by the step's
    totals (:class:`StepNorm`), so the parts of every micro-batch on every rank add up to exactly that loss,
    whatever the split; a class-weighted mean is divided by the step's summed weights, not each share's own (which
    would cancel the weights in a one-row share).
    """

    recipe: Recipe
    class_weights: torch.Tensor | None = None  # (num_labels,), on the training device
    teacher_log_probs: np.ndarray | None = None  # one row per training row, columns = classes

    def norm(self, labels: np.ndarray) -> StepNorm:
        """The normalisers of a step whose rows have these class indices."""
        if self.class_weights is None:
            return StepNorm(len(labels), float(len(labels)))
        w = self.class_weights.detach().cpu().double().numpy()
        return StepNorm(len(labels), float(w[labels].sum()))

    def ce_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed per-row (class-weighted, smoothed) cross-entropy: PyTorch's weighted mean times its weight sum."""
        return F.cross_entropy(
            logits.float(),
            labels,
            weight=self.class_weights,
            label_smoothing=self.recipe.train.label_smoothing,
            reduction="sum",
        )

    def __call__(
        self, model, input_ids, mask, labels, rows, norm: StepNorm
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(this share's part of the step's loss, logits)``; ``rows`` are the share's training-row numbers."""
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        loss = self.ce_sum(logits, labels) / norm.weight
        rdrop = self.recipe.train.rdrop
        if rdrop > 0:
            logits2 = model(input_ids=input_ids, attention_mask=mask).logits
            ce2 = self.ce_sum(logits2, labels) / norm.weight
            loss = 0.5 * (loss + ce2) + rdrop * symmetric_kl(logits, logits2, "sum") / norm.rows
        if self.teacher_log_probs is not None:
            d = self.recipe.distill
            teacher = torch.from_numpy(self.teacher_log_probs[rows]).to(logits.device)
            kl = distill_kl(logits, teacher, d.temperature, "sum") / norm.rows
            loss = (1 - d.alpha) * loss + d.alpha * kl
        return loss, logits


def symmetric_kl(a: torch.Tensor, b: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """½ (KL(p_a‖p_b) + KL(p_b‖p_a)) of two logit tables ``(rows, classes)``: per-row mean, or summed over rows."""
    la, lb = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    return 0.5 * (
        F.kl_div(la, lb, log_target=True, reduction=reduction)
        + F.kl_div(lb, la, log_target=True, reduction=reduction)
    )


def distill_kl(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    temperature: float,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """T² · KL(teacher_T ‖ student_T) of ``(rows, classes)`` tables, per-row mean or summed over rows;
    log-probabilities work as logits since softmax ignores a constant shift."""
    s = F.log_softmax(student_logits.float() / temperature, -1)
    t = F.log_softmax(teacher_log_probs.float() / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction=reduction) * temperature**2


def balanced_weights(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """Inverse-frequency class weights n / (k · n_c), so every class carries the same total weight."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return torch.tensor(len(labels) / (num_labels * np.maximum(counts, 1)), dtype=torch.float32)


def _teacher_key(run, texts: list[str]) -> str:
    """A digest of what a teacher's probabilities depend on: its weights, recipe, labels, how it predicts, the texts."""
    import transformers

    from loraclf.data.batching import hash_texts
    from loraclf.runfolder.schema import hash_run_content
    from loraclf.utils.version import __version__

    h = hashlib.sha256()
    hash_run_content(h, run.path)
    setup = (
        __version__,
        torch.__version__,
        transformers.__version__,
        run.precision,
        str(run.device),
        len(texts),
    )
    h.update("|".join(map(str, setup)).encode())
    hash_texts(h, texts)
    return h.hexdigest()[:32]


def _teacher_probs(run, texts: list[str]) -> np.ndarray:
    """One teacher's probabilities, cached on disk: ``--resume`` and later students on the same rows skip the pass.

    The key is the whole list of rows, not each row: int8 prediction depends slightly on a row's batch-mates, so
    only a pass over the same rows gives the same numbers, and a run gives the same result with or without the cache.
    """
    from loraclf.utils.cache import cache_dir

    path = cache_dir() / "teachers" / f"{_teacher_key(run, texts)}.npy"
    if path.is_file():
        try:
            probs = np.load(path, allow_pickle=False)
            if probs.shape == (len(texts), len(run.labels)):
                return probs
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed below
    probs = run.predict_proba(texts).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.save(f, probs, allow_pickle=False)
    except OSError:
        pass  # the cache only saves time; a read-only cache folder must not stop training
    return probs


def teacher_log_probs(teachers: list[str], texts: list[str], label_map: list, say=None) -> np.ndarray:
    """Average the teachers' class probabilities on the training texts; return their logarithm.

    Every teacher is checked (finished, same label set) before the first one predicts. Each teacher's
    probabilities are cached by a digest of its weights and the texts, so a resumed run or another student on the
    same rows reuses them.
    """
    from loraclf.inference.run import load

    # Raw softmax: distill.temperature is the softening knob; the teachers' fitted temperatures stay out of it.
    runs = [load(path, calibration=False) for path in teachers]
    for path, run in zip(teachers, runs):
        if [str(x) for x in run.labels] != [str(x) for x in label_map]:
            raise UserError(
                f"distill.teachers: run '{path}' has labels {run.labels}, the training file has {label_map}; "
                "a teacher must be trained on the same label set"
            )
    if say is not None:
        say(f"distillation: predictions of {len(runs)} teacher run(s) on {len(texts):,} training rows")
    probs = sum(_teacher_probs(run, texts) for run in runs)
    return np.log(np.clip(probs / len(runs), 1e-8, None)).astype(np.float32)
