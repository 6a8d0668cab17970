"""The training loop at scale: no host reads per micro-batch, steps weighted by rows, the frozen-layer cache sized
against its device, out-of-memory as one line, gradient checkpointing with LoRA, the plan check before any file.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from conftest import run_cli, write_text_csv
from loraclf.config import Recipe
from loraclf.training import frozen, losses, steps
from loraclf.training.distributed import Dist

TINY = [
    "--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1",
    "train.precision=fp32", "model.dropout=0", "adapter.dropout=0", "model.head_dropout=0",
]  # fmt: skip


@pytest.fixture
def data(tmp_path):
    return write_text_csv(tmp_path / "train.csv", 80, seed=0)


def _train(bert, data, out, *extra):
    return run_cli("train", "--model", bert, "--train", data, "--out", out, "--epochs", "2", *TINY, *extra)


# --- host synchronisation ------------------------------------------------------------------------------------------

HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")


def test_no_host_read_per_micro_batch_and_one_per_optimizer_step(tiny_bert_dir, data, tmp_path, monkeypatch):
    reads: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, **kw):
            caller = sys._getframe(1).f_code
            if caller.co_filename.endswith(
                ("training/loop.py", "training/steps.py", "training/evaluation.py")
            ):
                reads.append(caller.co_name)
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    # 72 training rows (80 minus the validation split), batches of 8, two per step: 5 steps an epoch, 10 in all.
    res = _train(tiny_bert_dir, data, tmp_path / "run", "train.grad_accum=2")
    monkeypatch.undo()
    assert res.returncode == 0, res
    assert "accumulate" not in reads  # nothing in the forward/backward path waits for the device
    assert reads.count("check_finite") == 10  # the NaN check: once per optimizer step
    assert set(reads) <= {"check_finite", "read_stats"}, reads


# --- loss weighting ------------------------------------------------------------------------------------------------


class _MeanPool(nn.Module):
    """Embeddings, masked mean, linear: padding cannot change its output, like a transformer with a mask.

    With ``pairs`` set, every second call scales the logits by 1.1, a deterministic stand-in for a second dropout
    mask: R-Drop's two passes differ by the same amount whichever way the rows are split, so the split's effect is
    all a test sees.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out = nn.Embedding(30, 6), nn.Linear(6, 3)
        self.calls, self.pairs = 0, False

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        m = attention_mask.unsqueeze(-1).float()
        logits = self.out((self.emb(input_ids) * m).sum(1) / m.sum(1))
        second = self.pairs and self.calls % 2 == 0  # R-Drop calls in pairs: the second pass of each
        return SimpleNamespace(logits=logits * (1.1 if second else 1.0))


LOSSES = {
    "cross-entropy": [],
    "class-weights": ["train.class_weights=balanced"],
    "label-smoothing": ["train.label_smoothing=0.1"],
    "weights-and-smoothing": ["train.class_weights=balanced", "train.label_smoothing=0.2"],
    "r-drop": ["train.rdrop=0.7", "train.class_weights=balanced"],
    "distillation": ["distill.alpha=0.4", "distill.temperature=2.0", "train.class_weights=balanced"],
}


def _loss_step(name: str, labels: np.ndarray) -> losses.LossStep:
    from loraclf.config import apply_overrides

    recipe = apply_overrides(Recipe(), LOSSES[name])
    weights = losses.balanced_weights(labels, 3) if recipe.train.class_weights == "balanced" else None
    teacher = None
    if name == "distillation":
        rng = np.random.default_rng(1)
        teacher = np.log(rng.dirichlet(np.ones(3), size=len(labels))).astype(np.float32)
    return losses.LossStep(recipe, weights, teacher)


def _reference_loss(step: losses.LossStep, model, ids, labels, rows) -> torch.Tensor:
    """The loss of one process taking all the step's rows at once, written with PyTorch's own reductions."""
    from loraclf.data.batching import collate

    input_ids, mask = collate(ids, rows, 0, torch.device("cpu"))
    y = torch.from_numpy(labels[rows])
    t = step.recipe.train
    logits = model(input_ids, mask).logits

    def ce(z):
        return nn.functional.cross_entropy(z, y, weight=step.class_weights, label_smoothing=t.label_smoothing)

    loss = ce(logits)
    if t.rdrop:
        logits2 = model(input_ids, mask).logits
        loss = 0.5 * (loss + ce(logits2)) + t.rdrop * losses.symmetric_kl(logits, logits2)
    if step.teacher_log_probs is not None:
        d = step.recipe.distill
        teacher = torch.from_numpy(step.teacher_log_probs[rows])
        loss = (1 - d.alpha) * loss + d.alpha * losses.distill_kl(logits, teacher, d.temperature)
    return loss


def _grads(group: list[np.ndarray], dist: Dist, model: _MeanPool, p, step) -> torch.Tensor:
    model.zero_grad()
    model.calls = 0
    s = SimpleNamespace(
        dist=dist, fwd=model, model=model, cache=None, loss_step=step,
        method=SimpleNamespace(extra_loss=None), scaler=None, step_stats=torch.zeros(2),
    )  # fmt: skip
    steps.accumulate(p, s, group, torch.device("cpu"), "fp32")
    return torch.cat([q.grad.flatten() for q in model.parameters()])


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize(
    "sizes",
    [[4], [5, 3], [3, 1], [1], [7, 2, 1]],
    ids=["short-last-step", "uneven-batches", "empty-share", "one-row-step", "three-micro-batches"],
)
def test_a_step_is_the_single_process_loss_over_its_rows_for_any_split_and_loss(sizes, loss):
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 30, size=rng.integers(2, 9)) for _ in range(12)]
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 0])  # unequal classes: the weights matter
    p = SimpleNamespace(
        train_ids=ids, train=SimpleNamespace(labels=labels), tokenizer=SimpleNamespace(pad_token_id=0),
        recipe=Recipe(), max_length=16,
    )  # fmt: skip
    step = _loss_step(loss, labels)
    rows = rng.permutation(12)[: sum(sizes)]
    group = np.split(rows, np.cumsum(sizes)[:-1])
    model = _MeanPool()
    model.pairs = step.recipe.train.rdrop > 0
    model.zero_grad()
    _reference_loss(step, model, ids, labels, rows).backward()
    want = torch.cat([q.grad.flatten() for q in model.parameters()])
    # grad_accum = len(sizes): the micro-batches of one optimizer step, in one process.
    assert torch.allclose(_grads(group, Dist(), model, p, step), want, atol=1e-6)
    # Two and three ranks: DDP averages their gradients; a share of one row (or none) counts as its rows.
    for world in (2, 3):
        per_rank = [_grads(group, Dist(r, world, r), model, p, step) for r in range(world)]
        assert torch.allclose(sum(per_rank) / world, want, atol=1e-6), world


# --- frozen-layer cache memory -------------------------------------------------------------------------------------


def test_cache_is_sized_against_free_gpu_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    assert frozen.device_memory(torch.device("cuda", 0)) == (3 * 2**30, "the 3.0 GB free on cuda:0")


def test_cache_too_big_for_its_device_is_skipped_in_one_line(tiny_bert_dir, data, tmp_path, monkeypatch):
    monkeypatch.setattr(frozen, "device_memory", lambda device: (1000, "the 0.0 GB free on cuda:0"))
    res = _train(tiny_bert_dir, data, tmp_path / "run", "adapter.layers=1")
    assert res.returncode == 0, res
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("frozen-layer cache")]
    assert lines == [lines[0]] and "off (" in lines[0] and "free on cuda:0" in lines[0], res.stderr


# --- out of memory, gradient checkpointing, the plan check ---------------------------------------------------------


def test_out_of_memory_is_one_line_naming_what_to_change(tiny_bert_dir, data, tmp_path, monkeypatch):
    def oom(*args, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(losses.LossStep, "__call__", oom)
    res = _train(tiny_bert_dir, data, tmp_path / "run")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("loraclf: error:")]
    assert len(errors) == 1, res.stderr
    for part in (
        "out of cpu memory",
        "train.batch_size=8",
        "max length",
        "train.gradient_checkpointing=true",
    ):
        assert part in errors[0], errors[0]
    assert not (tmp_path / "run").exists()  # no half-written run folder


def test_gradient_checkpointing_trains_lora_like_without_it(tiny_bert_dir, data, tmp_path, monkeypatch):
    from transformers.models.bert import modeling_bert

    # Counted inside the block: transformers checkpoints BertLayer.forward itself, so it must stay unpatched.
    calls = {"n": 0}
    original = modeling_bert.BertIntermediate.forward

    def counted(self, *args, **kw):
        calls["n"] += 1
        return original(self, *args, **kw)

    monkeypatch.setattr(modeling_bert.BertIntermediate, "forward", counted)
    runs = {}
    for flag in ("false", "true"):
        calls["n"] = 0
        runs[flag] = tmp_path / flag
        res = _train(tiny_bert_dir, data, runs[flag], f"train.gradient_checkpointing={flag}")
        assert res.returncode == 0, res
        runs[flag + "_calls"] = calls["n"]
    # Recomputation in backward runs every training forward of a block twice.
    assert runs["true_calls"] > runs["false_calls"] * 1.5
    a, b = (
        load_file(str(runs["false"] / "model.safetensors")),
        load_file(str(runs["true"] / "model.safetensors")),
    )
    lora = [k for k in a if "lora_" in k]
    assert lora and max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    recipe = (runs["true"] / "recipe.yaml").read_text()
    assert "gradient_checkpointing: true" in recipe


def test_plan_mismatch_is_found_before_the_run_folder_exists(tiny_bert_dir, data, tmp_path, monkeypatch):
    from loraclf.training import session

    monkeypatch.setattr(session, "count_parameters", lambda model: (1, 2))
    with pytest.raises(RuntimeError, match="plan said"):
        _train(tiny_bert_dir, data, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_log_lines_read_the_device_statistics(tiny_bert_dir, data, tmp_path):
    res = _train(tiny_bert_dir, data, tmp_path / "run", "train.eval_every=5")
    assert res.returncode == 0, res
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [h for h in lines if h["split"] == "train"]
    assert train and all(0 < h["loss"] < 5 and 0 <= h["accuracy"] <= 1 for h in train)


# --- what training holds on to, and what prompt tuning may pad --------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["adapter.layers=1"]], ids=["all-layers", "frozen-layer-cache"])
def test_the_training_copy_is_freed_before_the_final_evaluation(
    tiny_bert_dir, data, tmp_path, monkeypatch, extra
):
    import gc
    import weakref

    from loraclf.inference import run as inference_run
    from loraclf.training import loop

    built, alive = [], []
    real_build, real_load = loop.build_model, inference_run.load

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    def load(*args, **kwargs):  # finishing loads the inference copy: the training copy must be gone by then
        gc.collect()
        alive.append(built[0]() is not None)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loop, "build_model", build)
    monkeypatch.setattr(inference_run, "load", load)
    res = _train(tiny_bert_dir, data, tmp_path / "run", *extra)
    assert res.returncode == 0, res
    assert alive == [False]


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_virtual_tokens_and_padding_never_overrun_the_position_table(tiny_bert_dir, tmp_path, method):
    import pandas as pd

    from conftest import make_rows

    # 128 positions, 20 virtual tokens: texts longer than the rest, so batches pad to the text limit itself.
    rows = make_rows(48, seed=3)
    long = pd.DataFrame({"label": [r[0] for r in rows], "text": [f"{r[1]} {r[2]} " * 12 for r in rows]})
    long.to_csv(tmp_path / "long.csv", index=False)
    res = run_cli(
        "train", "--model", tiny_bert_dir, "--train", tmp_path / "long.csv", "--out", tmp_path / "run",
        "--method", method, "--virtual-tokens", "20", "--head", "mlp", "--epochs", "1", *TINY[:3], "train.threads=1",
    )  # fmt: skip
    assert res.returncode == 0, res
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["max_length"] + 20 <= 128 and info["max_length"] % 8 == 0, info["max_length"]
    assert info["token_lengths"]["truncated"] > 0  # the texts really were longer than the limit
