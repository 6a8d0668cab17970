"""Stopping and continuing a run: checkpoints on a clock, Ctrl-C, an honest ``--resume``, unfinished-run errors.

The clock of time-based checkpoints is replaced by a fake one (no sleeping); Ctrl-C is raised in-process at a
chosen step, and once for real (SIGINT to a ``python -m loraclf train`` process).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, run_cli, signal_at, signal_in, write_text_csv

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("interrupt-data")
    return {"bert": tiny_bert_dir, "train": write_text_csv(d / "train.csv", 80, seed=0)}


def _args(data, out: Path, *extra) -> list:
    return ["train", "--model", data["bert"], "--train", data["train"], "--out", out, *TINY, *extra]


def _error_line(res) -> str:
    """The one error line of a command that also printed notes (training's summary, evaluation lines)."""
    assert res.returncode == 2 and "Traceback" not in res.stderr, res
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("loraclf: error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def _one_line(res) -> str:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loraclf: error: ") and "Traceback" not in res.stderr, res
    return lines[0]


def test_checkpoints_follow_the_clock_as_well_as_the_steps(data, tmp_path, monkeypatch):
    from loraclf.training import checkpointing

    now = [0.0]

    def fake_clock():  # half a minute passes between two readings
        now[0] += 30.0
        return now[0]

    saved, kept = [], []
    real_save = checkpointing.save_checkpoint

    def spy(run, step, *args, **kwargs):
        path = real_save(run, step, *args, **kwargs)
        saved.append(step)
        kept.append(sorted(p.name for p in (run / "checkpoints").iterdir()))
        return path

    monkeypatch.setattr(checkpointing, "clock", fake_clock)
    monkeypatch.setattr(checkpointing, "save_checkpoint", spy)
    # save_every = max_steps: no checkpoint by steps at all, so every one of them comes from the clock.
    common = ["train.max_steps=12", "--save-every", "12"]
    res = run_cli(*_args(data, tmp_path / "clock", *common, "train.save_every_minutes=1"))
    assert res.returncode == 0, res
    assert saved == [2, 4, 6, 8, 10]  # one clock reading per step and one after each save: a minute = 2 steps
    assert all(len(names) <= 2 and not any(n.startswith(".tmp") for n in names) for names in kept)  # pruned
    assert kept[-1] == ["step-00000008", "step-00000010"]

    saved.clear()
    res = run_cli(*_args(data, tmp_path / "steps-only", *common, "train.save_every_minutes=null"))
    assert res.returncode == 0, res
    assert saved == []


def test_default_clock_loses_at_most_ten_minutes():
    from loraclf.config import Recipe

    assert 0 < Recipe().train.save_every_minutes <= 10


def test_ctrl_c_keeps_a_checkpoint_and_resume_appends_to_the_history(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    signal_at(monkeypatch, 7)
    res = run_cli(
        *_args(data, run, "train.max_steps=20", "train.save_every_minutes=null", "train.eval_every=5")
    )
    monkeypatch.undo()
    assert res.returncode == 130, res
    assert "interrupted at step 7" in res.stderr and f"loraclf train --resume {run}" in res.stderr
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000005", "step-00000007"]
    assert not (run / ".lock").exists()

    # evaluate and predict on the unfinished run name the resume command.
    for cmd in (["evaluate", run, "--data", data["train"]], ["predict", run, "--input", data["train"], "--output", tmp_path / "p.csv"]):  # fmt: skip
        line = _one_line(run_cli(*cmd))
        assert f"loraclf train --resume {run}" in line and "step-00000007" in line, line

    history_before = (run / "metrics.jsonl").read_text()
    (run / ".lock").write_text("999999999")  # a writer that no longer exists (pid beyond pid_max)
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0, res
    assert "resuming from step 7 " in res.stderr
    assert "took over the stale lock" in res.stderr
    history_after = (run / "metrics.jsonl").read_text()
    assert history_after.startswith(history_before), "the history before the resume must be kept as it was"
    rows = [json.loads(x) for x in history_after.splitlines()]
    assert {"step": 7, "split": "resume"}.items() <= rows[len(history_before.splitlines())].items()
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20

    from loraclf.runfolder.metrics_log import read_metrics

    evals = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["split"] == "eval"]
    assert evals == [5, 10, 15, 20]  # each evaluation once, as in an uninterrupted run


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    signal_at(monkeypatch, 0)  # before the first optimizer step finishes
    res = run_cli(*_args(data, run, "train.max_steps=4"))
    monkeypatch.undo()
    assert res.returncode == 130 and "starts from step 0" in res.stderr, res
    assert not (run / "checkpoints").exists()
    line = _one_line(run_cli("evaluate", run, "--data", data["train"]))
    assert f"loraclf train --resume {run}" in line and "no checkpoint yet" in line, line

    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0, res
    assert "no checkpoint yet: starting from step 0" in res.stderr


def test_weights_of_an_unfinished_run_name_the_resume_command(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    signal_at(monkeypatch, 6)  # after the evaluation at step 5 kept weights
    res = run_cli(*_args(data, run, "train.max_steps=20", "train.eval_every=5", "--save-every", "5"))
    monkeypatch.undo()
    assert res.returncode == 130 and (run / "model.safetensors").is_file(), res
    line = _one_line(run_cli("predict", run, "--input", data["train"], "--output", tmp_path / "p.csv"))
    assert "status training" in line and f"loraclf train --resume {run}" in line, line


def test_sigint_writes_a_checkpoint_and_says_how_to_resume(data, tmp_path):
    run = tmp_path / "run"
    args = _args(data, run, "train.max_steps=400", "train.batch_size=4", "--save-every", "399")
    log = tmp_path / "train.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loraclf", *map(str, args)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    deadline = time.monotonic() + 300
    try:
        # The first row (an evaluation after an epoch of 18 steps) is logged: from then on the loop is running.
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = run / "metrics.jsonl"
            if metrics.is_file() and metrics.read_text().strip():
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text(errors="replace")
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted at step" in out and f"loraclf train --resume {run}" in out, out[-3000:]
    assert "Traceback" not in out
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    first_logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["step"]
    assert len(ckpts) == 1 and int(ckpts[0].name.split("-")[1]) >= first_logged, ckpts
    assert not (run / ".lock").exists()
    step = int(ckpts[0].name.split("-")[1])

    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0, res
    assert f"resuming from step {step} " in res.stderr


# --- exact resume, every phase, errors while finishing, changed rows ------------------------------------------------

# Dropout on (backbone and adapters) and fp32: a resumed run must draw the masks an uninterrupted run draws.
EXACT = ["train.max_steps=16", "train.eval_every=5", "train.save_every_minutes=null", "model.dropout=0.1",
         "adapter.dropout=0.1", "train.precision=fp32"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("exact") / "reference"
    res = run_cli(*_args(data, run, *EXACT))
    assert res.returncode == 0, res
    return run


def _evaluations(run: Path) -> list[tuple]:
    from loraclf.runfolder.metrics_log import read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if r["split"] == "eval"]


@pytest.mark.parametrize(
    ("where", "step", "checkpoint"),
    [("accumulate", 7, 7), ("update", 7, 8), ("accumulate", 10, 10)],
    ids=["mid-step", "inside-the-update", "after-an-evaluation"],
)
def test_resume_after_ctrl_c_writes_the_bytes_of_an_uninterrupted_run(
    data, reference, tmp_path, monkeypatch, where, step, checkpoint
):
    run = tmp_path / "run"
    signal_at(monkeypatch, step, where=where)
    res = run_cli(*_args(data, run, *EXACT))
    monkeypatch.undo()
    assert res.returncode == 130, res
    assert f"interrupted at step {checkpoint}:" in res.stderr, res.stderr
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0 and f"resuming from step {checkpoint} " in res.stderr, res
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    assert _evaluations(run) == _evaluations(reference)


PHASES = {
    "final-evaluation": "loraclf.training.evaluation:evaluate_model",
    "int8-export": "loraclf.inference.onnx_int8:int8_classifier",
    "final-scoring": "loraclf.inference.run:Run.probs_of_ids",
    "report": "loraclf.reporting.report:write_report",
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_an_interruption_in_any_phase_leaves_a_run_that_resume_finishes(data, tmp_path, monkeypatch, phase):
    # One epoch, one evaluation at its end and no checkpoint before it: the AVX2 quick start's shape.
    one_epoch = ["--epochs", "1", "train.save_every_minutes=null"]  # precision auto: int8 prediction on a CPU
    reference = tmp_path / "reference"
    assert run_cli(*_args(data, reference, *one_epoch)).returncode == 0
    run = tmp_path / "run"
    signal_in(monkeypatch, PHASES[phase], signal.SIGTERM if phase == "report" else signal.SIGINT)
    res = run_cli(*_args(data, run, *one_epoch))
    monkeypatch.undo()
    assert res.returncode == (143 if phase == "report" else 130), res
    assert f"loraclf train --resume {run}" in res.stderr, res.stderr
    assert not (run / ".lock").exists()

    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0, res
    assert "starting from step 0" not in res.stderr, "the trained steps were lost"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and "finishing" not in info
    assert {p.name for p in run.iterdir()} >= {"metrics.json", "report.html", "model.safetensors"}
    assert not (run / "checkpoints").exists()
    assert _evaluations(run) == _evaluations(reference)  # the final evaluation once, as without the stop
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (reference, run))
    assert (a["accuracy"], a["loss"], a["steps"]) == (b["accuracy"], b["loss"], b["steps"])


def test_an_error_while_finishing_keeps_the_trained_run_and_says_how_to_finish_it(
    data, tmp_path, monkeypatch
):
    from loraclf.inference import run as inference_run
    from loraclf.utils.errors import UserError

    def fails(*args, **kwargs):
        raise UserError("the backbone could not be reloaded")

    run = tmp_path / "run"
    monkeypatch.setattr(inference_run, "load", fails)
    line = _error_line(run_cli(*_args(data, run, "--epochs", "1", "train.save_every_minutes=null")))
    monkeypatch.undo()
    assert "could not be reloaded" in line and f"loraclf train --resume {run}" in line, line
    assert (run / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    monkeypatch.setattr(inference_run, "load", fails)  # a resume that fails the same way keeps it too
    _error_line(run_cli("train", "--resume", run, "--quiet"))
    monkeypatch.undo()
    assert (run / "model.safetensors").is_file() and (run / "run.json").is_file()
    res = run_cli("train", "--resume", run, "--quiet")
    assert res.returncode == 0 and "finishing the run" in res.stderr, res
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_resume_refuses_training_rows_that_changed(data, tmp_path, monkeypatch):
    import pandas as pd

    train = tmp_path / "train.csv"
    train.write_bytes(Path(data["train"]).read_bytes())
    run = tmp_path / "run"
    signal_at(monkeypatch, 3)
    res = run_cli(
        "train", "--model", data["bert"], "--train", train, "--out", run, *TINY, "train.max_steps=12"
    )
    monkeypatch.undo()
    assert res.returncode == 130, res
    # A label renamed so that the sorted label map changes order: class indices would silently permute.
    df = pd.read_csv(train)
    df["label"] = df["label"].replace({"business": "zz-business"})
    df.to_csv(train, index=False)
    line = _one_line(run_cli("train", "--resume", run, "--quiet"))
    assert "changed since run" in line and str(train) in line and "--out" in line, line
    assert not (run / "metrics.json").exists()
