"""Trust cases not covered elsewhere: numerical faults, checkpoint pruning, run locks, huge texts, repeated ids,
determinism bookkeeping.

The kill -9 resume test lives in test_train_tiny, malformed files in test_data, recipe mistakes in test_config,
hostile pickles in test_safe_pickle, and the one-line/exit-2/no-folder contract of the CLI in test_cli.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import make_rows, run_cli, write_text_csv
from loraclf.config import TrainConfig
from loraclf.runfolder.checkpoint import RunLock, list_checkpoints, load_checkpoint, save_checkpoint
from loraclf.training import losses
from loraclf.training.session import nondeterministic_paths
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


def one_error_line(res) -> str:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("loraclf: error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture
def nan_at_call(monkeypatch):
    """Make the n-th training loss NaN (1-based), as an exploding learning rate would."""

    def install(n: int):
        original = losses.LossStep.__call__
        calls = {"n": 0}

        def patched(self, *args, **kw):
            loss, logits = original(self, *args, **kw)
            calls["n"] += 1
            if calls["n"] == n:
                loss = loss * float("nan")
            return loss, logits

        monkeypatch.setattr(losses.LossStep, "__call__", patched)

    return install


def _train_args(bert: Path, data: Path, out: Path, *extra) -> list:
    return ["train", "--model", bert, "--train", data, "--out", out, "--epochs", "1", *TINY, *extra]


# --- NaN / inf loss ------------------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_bert_dir, tmp_path, nan_at_call, monkeypatch):
    data = write_text_csv(tmp_path / "train.csv", 80)
    run = tmp_path / "run"
    nan_at_call(5)  # steps 1-4 succeed and are checkpointed; the fifth loss is NaN
    res = run_cli(*_train_args(tiny_bert_dir, data, run, "--save-every", "1", "train.keep_checkpoints=2"))
    line = one_error_line(res)
    assert "diverged" in line and "nan" in line and "step 5" in line, line
    # Pruned to two, and the newest is the last step that finished before the fault.
    assert [c.name for c in list_checkpoints(run)] == ["step-00000003", "step-00000004"]
    assert str(list_checkpoints(run)[-1]) in line
    assert json.loads((run / "run.json").read_text())["status"] == "training"
    assert not (run / "metrics.json").exists()
    assert not (run / ".lock").exists(), "the lock must be released when training stops on a fault"

    monkeypatch.undo()  # the fault is gone: the kept checkpoint resumes to a finished run
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0, res
    assert "resuming from step 4 " in res.stderr and "step-00000004" in res.stderr
    assert (run / "metrics.json").is_file() and not (run / "checkpoints").exists()


def test_nan_loss_before_any_checkpoint_leaves_no_run_folder(tiny_bert_dir, tmp_path, nan_at_call):
    data = write_text_csv(tmp_path / "train.csv", 80)
    run = tmp_path / "run"
    nan_at_call(1)
    line = one_error_line(run_cli(*_train_args(tiny_bert_dir, data, run)))
    assert "no checkpoint was written yet" in line
    assert not run.exists()


# --- checkpoint writing and pruning --------------------------------------------------------------------------------


def _toy_training():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def _step(model, opt, sched):
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    opt.zero_grad()


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_checkpoints_pruned_to_keep_newest_first(tmp_path, keep):
    model, opt, sched = _toy_training()
    for step in range(1, 6):
        _step(model, opt, sched)
        save_checkpoint(tmp_path, step, model, opt, sched, None, {"step": step}, keep)
    names = [c.name for c in list_checkpoints(tmp_path)]
    assert names == [f"step-{s:08d}" for s in range(6 - keep, 6)]


def test_half_written_checkpoint_is_ignored_and_newest_restores_exactly(tmp_path):
    model, opt, sched = _toy_training()
    for step in (1, 2):
        _step(model, opt, sched)
        save_checkpoint(tmp_path, step, model, opt, sched, None, {"step": step}, 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    # A crash mid-write leaves a temporary folder (and maybe a step folder without state.json): both are skipped.
    (tmp_path / "checkpoints" / ".tmp-step-00000003").mkdir()
    (tmp_path / "checkpoints" / "step-00000004").mkdir()
    assert list_checkpoints(tmp_path)[-1].name == "step-00000002"

    fresh, fopt, fsched = _toy_training()
    state = load_checkpoint(list_checkpoints(tmp_path)[-1], fresh, fopt, fsched, None)
    assert state == {"step": 2}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, weights[k])
    assert fopt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    # The next save replaces the leftovers' slot cleanly.
    _step(fresh, fopt, fsched)
    save_checkpoint(tmp_path, 3, fresh, fopt, fsched, None, {"step": 3}, 2)
    assert [c.name for c in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]


def test_keep_checkpoints_zero_is_a_recipe_error(tiny_bert_dir, tmp_path):
    data = write_text_csv(tmp_path / "train.csv", 40)
    line = one_error_line(
        run_cli(*_train_args(tiny_bert_dir, data, tmp_path / "r", "train.keep_checkpoints=0"))
    )
    assert "train.keep_checkpoints" in line
    assert not (tmp_path / "r").exists()


# --- a run folder being written by another process -----------------------------------------------------------------


def test_lock_held_by_a_live_process_is_refused_and_stale_lock_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(
            UserError, match=f"being written by another loraclf process \\(pid {sleeper.pid}\\)"
        ):
            RunLock(tmp_path).acquire()
        assert (tmp_path / ".lock").read_text() == str(sleeper.pid), "a live lock must not be touched"
    finally:
        sleeper.kill()
        sleeper.wait()
    # The writer died without cleaning up: the lock is stale and is taken over.
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_resume_of_a_run_another_process_is_writing_is_refused(
    tiny_bert_dir, tmp_path, nan_at_call, monkeypatch
):
    data = write_text_csv(tmp_path / "train.csv", 80)
    run = tmp_path / "run"
    nan_at_call(3)  # leaves an unfinished run with checkpoints, as a live writer would
    one_error_line(run_cli(*_train_args(tiny_bert_dir, data, run, "--save-every", "1")))
    monkeypatch.undo()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(str(sleeper.pid))
        before = sorted(p.name for p in run.rglob("*"))
        line = one_error_line(run_cli("train", "--resume", run, "--quiet"))
        assert str(run) in line and f"pid {sleeper.pid}" in line
        assert sorted(p.name for p in run.rglob("*")) == before, (
            "the refused resume must not touch the folder"
        )
    finally:
        sleeper.kill()
        sleeper.wait()


# --- huge texts and repeated ids ----------------------------------------------------------------------------------


def test_megabyte_texts_train_and_predict(tiny_bert_dir, tmp_path):
    rows = make_rows(60, seed=3)
    texts = [f"{r[1]} {r[2]}" for r in rows]
    texts[7] = (texts[7] + " ") * (1_000_000 // (len(texts[7]) + 1) + 1)  # > 1 MB in one CSV field
    assert len(texts[7]) > 1_000_000
    data = tmp_path / "train.csv"
    pd.DataFrame({"label": [r[0] for r in rows], "text": texts}).to_csv(data, index=False)
    run = tmp_path / "run"
    res = run_cli(*_train_args(tiny_bert_dir, data, run))
    assert res.returncode == 0, res
    info = json.loads((run / "run.json").read_text())
    assert info["max_length"] <= 128  # bounded by the model's positions, not by the huge row

    pred_in = tmp_path / "in.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "text": [texts[0], texts[7], ""]}).to_csv(pred_in, index=False)
    res = run_cli("predict", run, "--input", pred_in, "--output", tmp_path / "p.csv", "--quiet")
    assert res.returncode == 0, res
    out = pd.read_csv(tmp_path / "p.csv", dtype=str)
    assert list(out["ID"]) == ["a", "b", "c"] and out["Label"].notna().all()


def test_repeated_prediction_ids_are_refused_with_both_rows(tiny_bert_dir, tmp_path):
    data = write_text_csv(tmp_path / "train.csv", 40)
    run = tmp_path / "run"
    assert run_cli(*_train_args(tiny_bert_dir, data, run)).returncode == 0
    pred_in = tmp_path / "in.csv"
    pd.DataFrame({"id": ["x1", "x2", "x3", "x2"], "text": ["a", "b", "c", "d"]}).to_csv(pred_in, index=False)
    out = tmp_path / "p.csv"
    line = one_error_line(run_cli("predict", run, "--input", pred_in, "--output", out, "--quiet"))
    assert "in.csv" in line and "'x2'" in line and "rows 2 and 4" in line
    assert not out.exists()


# --- determinism bookkeeping ---------------------------------------------------------------------------------------


def test_nondeterministic_paths_are_named():
    t = TrainConfig()
    assert nondeterministic_paths(torch.device("cpu"), t) == []
    assert any("cuda" in why for why in nondeterministic_paths(torch.device("cuda"), t))
    t.compile = True
    assert any("torch.compile" in why for why in nondeterministic_paths(torch.device("cpu"), t))


def test_run_records_versions_hardware_and_warns_on_nondeterminism(tiny_bert_dir, tmp_path):
    data = write_text_csv(tmp_path / "train.csv", 40)
    run = tmp_path / "run"
    res = run_cli(*_train_args(tiny_bert_dir, data, run))
    assert res.returncode == 0, res
    env = json.loads((run / "run.json").read_text())["environment"]
    for key in ("python", "torch", "transformers", "peft", "platform", "device", "threads", "cpu_count"):
        assert env[key] not in (None, ""), key
    assert env["torch"] == torch.__version__
    assert env["nondeterministic"] == [] and "nondeterministic" not in res.stderr


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_tampered_checkpoint_does_not_run_code(tmp_path):
    model, opt, sched = _toy_training()
    _step(model, opt, sched)
    ckpt = save_checkpoint(tmp_path, 1, model, opt, sched, None, {"step": 1}, 2)
    marker = tmp_path / "payload-ran"
    torch.save({"optimizer": _Payload(marker)}, ckpt / "trainer.pt")
    with pytest.raises(UserError, match=r"trainer\.pt.*not a loraclf checkpoint"):
        load_checkpoint(ckpt, *_toy_training(), None)
    assert not marker.exists()
