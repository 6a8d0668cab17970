"""Stochastic weight averaging (``train.swa_start``, training/averaging.py).

A linear layer checks the running mean against the weights it saw; tiny BERT runs check what a user gets: the kept
weights are the mean of the steps' weights (compared with shorter runs that stop at each of those steps, under a
constant learning rate, so their weights are the longer run's along the way), a resumed run continues the same
average bit for bit, and the settings that cannot work are refused in one line.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, signal_at, signal_in, write_text_csv
from loraclf.training.averaging import WeightAverage

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1",
        "train.precision=fp32", "train.save_every_minutes=null"]  # fmt: skip


def _sgd_model(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    model[2].bias.requires_grad_(False)  # a frozen weight is not averaged
    return model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)


def _step(model, opt, i):
    opt.zero_grad()
    x = torch.linspace(-1, 1, 12).reshape(4, 3) * (i + 1)
    model(x).pow(2).mean().backward()
    opt.step()


def test_the_mean_is_of_the_weights_after_each_step_from_the_start_on():
    model, opt = _sgd_model()
    avg = WeightAverage(model, swa_start=0.4, laid_steps=10)
    assert avg.start == 4  # ceil(0.4 * 10): steps 4..10 enter the mean
    seen = []
    for step in range(1, 11):
        _step(model, opt, step)
        avg.update(step)
        if step >= 4:
            seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert avg.count == 7 and avg.names == ["0.weight", "0.bias", "2.weight"]
    for name, mean in zip(avg.names, avg.mean):
        torch.testing.assert_close(mean, torch.stack([s[name] for s in seen]).mean(0), rtol=0, atol=1e-6)

    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    with avg.swapped_in():
        for name, mean in zip(avg.names, avg.mean):
            assert torch.equal(dict(model.named_parameters())[name], mean)
    for n, p in model.named_parameters():  # the model's own weights come back bit for bit
        assert torch.equal(p, own[n])


def test_both_copies_of_a_swap_run_inside_the_guard():
    import contextlib

    model, opt = _sgd_model()
    avg = WeightAverage(model, 0.0, 3)
    _step(model, opt, 1)
    avg.update(1)
    log = []

    @contextlib.contextmanager
    def guard():  # what the loop passes: signals wait while it is held
        log.append("enter")
        yield
        log.append("exit")

    with avg.swapped_in(guard):
        assert log == ["enter", "exit"]  # the swap-in landed whole before the block runs
    assert log == ["enter", "exit", "enter", "exit"]


def test_before_its_start_the_average_leaves_the_model_alone():
    model, opt = _sgd_model()
    avg = WeightAverage(model, swa_start=0.0, laid_steps=5)
    assert avg.start == 1  # a start of 0 still means "after the first step"
    own = [p.detach().clone() for p in model.parameters()]
    with avg.swapped_in():  # nothing averaged yet: the model's own weights
        assert all(torch.equal(p, o) for p, o in zip(model.parameters(), own))
    late = WeightAverage(model, swa_start=0.9, laid_steps=5)
    for step in range(1, 5):
        _step(model, opt, step)
        late.update(step)
    assert late.count == 0 and math.ceil(0.9 * 5) == late.start == 5


def test_a_saved_average_continues_where_it_stopped():
    model, opt = _sgd_model()
    whole = WeightAverage(model, 0.0, 8)
    parts = WeightAverage(model, 0.0, 8)
    for step in range(1, 9):
        _step(model, opt, step)
        whole.update(step)
        parts.update(step)
        if step == 4:  # a checkpoint, then a fresh process loading it
            state = parts.state()
            parts = WeightAverage(model, 0.0, 8)
            parts.load(state)
    assert parts.count == whole.count == 8
    assert all(torch.equal(a, b) for a, b in zip(parts.mean, whole.mean))
    other, _ = _sgd_model()
    other[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="does not fit"):
        WeightAverage(other, 0.0, 8).load(state)


# --- a tiny BERT, through the CLI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_bert_dir) -> dict:
    d = tmp_path_factory.mktemp("swa-data")
    return {"bert": tiny_bert_dir, "train": write_text_csv(d / "train.csv", 80, seed=0)}


def _train(data, out: Path, *extra):
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", out, *TINY, *extra)
    assert res.returncode == 0, res
    return load_file(str(out / "model.safetensors"))


def test_a_run_keeps_the_mean_of_its_steps_weights(data, tmp_path):
    # A constant learning rate: a run stopped after k steps holds the longer run's weights at step k.
    same = ["train.scheduler=constant", "train.warmup_ratio=0"]
    kept = _train(
        data, tmp_path / "swa", *same, "train.max_steps=6", "train.eval_every=6", "train.swa_start=0.5"
    )
    steps = [_train(data, tmp_path / f"k{k}", *same, f"train.max_steps={k}", f"train.eval_every={k}")
             for k in (3, 4, 5, 6)]  # fmt: skip
    plain = steps[-1]
    assert any(not torch.equal(kept[n], plain[n]) for n in kept)  # averaging changed what was kept
    for name, value in kept.items():
        torch.testing.assert_close(value, torch.stack([s[name] for s in steps]).mean(0), rtol=0, atol=1e-6)


def test_an_averaged_run_resumed_after_ctrl_c_writes_the_bytes_of_an_uninterrupted_one(
    data, tmp_path, monkeypatch
):

    exact = ["train.max_steps=12", "train.eval_every=5", "model.dropout=0.1", "train.swa_start=0.25"]
    reference = _train(data, tmp_path / "reference", *exact)
    signal_at(monkeypatch, 7)  # Ctrl-C during step 8, after its micro-batches ran
    run = tmp_path / "run"
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", run, *TINY, *exact)
    monkeypatch.undo()
    assert res.returncode == 130 and "interrupted at step 7:" in res.stderr, res
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0 and "resuming from step 7 " in res.stderr, res
    resumed = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(resumed[n], reference[n]) for n in reference)


def test_a_checkpoint_without_an_average_is_not_resumed_as_an_averaged_run(data, tmp_path, monkeypatch):
    signal_at(monkeypatch, 3)
    run = tmp_path / "run"
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", run, *TINY,
                  "train.max_steps=8")  # fmt: skip
    monkeypatch.undo()
    assert res.returncode == 130, res
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("swa_start: null", "swa_start: 0.5"))
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("loraclf: error: ")]
    assert len(errors) == 1 and "holds no weight average" in errors[0] and "train.swa_start" in errors[0]


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["train.swa_start=1.0"], "train.swa_start must be in [0, 1) or null, got 1.0"),
        (["train.swa_start=-0.1"], "train.swa_start must be in [0, 1) or null"),
        (["train.swa_start=0.5", "--method", "adalora"], "AdaLoRA prunes ranks"),
    ],
)
def test_settings_that_cannot_average_are_one_line_exit_2(data, tmp_path, extra, why):
    out = tmp_path / "run"
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", out, *TINY, *extra)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and why in res.stderr, res.stderr
    assert not out.exists()


def _recording(monkeypatch) -> list:
    """Every WeightAverage the loop builds, kept for the test to read after the run."""
    from loraclf.training import loop

    made = []

    class Recorded(WeightAverage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(loop, "WeightAverage", Recorded)
    return made


def test_a_time_budget_cut_does_not_move_the_start(data, tmp_path, monkeypatch):
    # The recipe a cut run writes: laid over 12 steps, cut to 8 at step 4. The start stays at ceil(0.5 * 12).
    made = _recording(monkeypatch)
    _train(data, tmp_path / "cut", "train.max_steps=12", "train.replans=[4,8]", "train.swa_start=0.5",
           "train.eval_every=4")  # fmt: skip
    assert made[0].start == 6 and made[0].count == 3  # steps 6, 7 and 8


def test_a_run_cut_before_the_start_keeps_its_weights_and_says_so(data, tmp_path, monkeypatch):
    made = _recording(monkeypatch)
    out = tmp_path / "short"
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", out, *TINY,
                  "train.max_steps=12", "train.replans=[2,4]", "train.swa_start=0.5")  # fmt: skip
    assert res.returncode == 0, res
    assert made[0].count == 0
    assert "train.swa_start: the run ended at step 4, before averaging began (step 6)" in res.stderr


def test_an_evaluation_before_the_start_does_not_compete_with_the_average(data, tmp_path):
    import json

    from loraclf.runfolder.metrics_log import read_metrics

    out = tmp_path / "run"
    _train(data, out, "train.max_steps=8", "train.eval_every=2", "train.swa_start=0.5")
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    assert evals[1]["best"]  # step 4, the first averaged evaluation, is kept whatever step 2 scored
    assert json.loads((out / "run.json").read_text())["best_step"] >= 4


def test_ctrl_c_inside_an_averaged_evaluation_then_resume_writes_the_same_bytes(data, tmp_path, monkeypatch):

    exact = ["train.max_steps=12", "train.eval_every=5", "model.dropout=0.1", "train.swa_start=0.25"]
    reference = _train(data, tmp_path / "reference", *exact)
    # Ctrl-C while the average is in the model (the evaluation at step 10)
    signal_in(monkeypatch, "loraclf.training.evaluation:evaluate_model", nth=2)
    run = tmp_path / "run"
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", run, *TINY, *exact)
    monkeypatch.undo()
    assert res.returncode == 130 and "interrupted at step 10:" in res.stderr, res
    # Resuming from a checkpoint that held the average instead of the model's own weights would train on from
    # the wrong point and end elsewhere.
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0 and "resuming from step 10 " in res.stderr, res
    resumed = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(resumed[n], reference[n]) for n in reference)


def test_a_checkpoint_with_an_average_is_not_resumed_without_one(data, tmp_path, monkeypatch):
    signal_at(monkeypatch, 4)
    run = tmp_path / "run"
    res = run_cli("train", "--model", data["bert"], "--train", data["train"], "--out", run, *TINY,
                  "train.max_steps=8", "train.swa_start=0.25")  # fmt: skip
    monkeypatch.undo()
    assert res.returncode == 130, res
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("swa_start: 0.25", "swa_start: null"))
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("loraclf: error: ")]
    assert len(errors) == 1 and "holds a weight average" in errors[0], res.stderr
