"""A sweep's time budget (loraclf sweep --time-budget): each trial's share, no trial past the deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import run_cli, write_text_csv


def ok(res):
    assert res.returncode == 0, res
    return res


def test_trial_seconds_share_what_is_left():
    from loraclf.sweep.timing import trial_seconds

    assert trial_seconds(600, 4, None, 60) == 150
    assert trial_seconds(600, 20, None, 60) == 60  # at least the minimum: fewer trials will run
    assert trial_seconds(100, 1, 300, 60) == 100  # a searched train.time_budget never runs past the deadline
    assert trial_seconds(100, 4, 70, 60) == 70
    assert trial_seconds(59, 4, None, 60) is None and trial_seconds(600, 0, None, 60) is None


def test_study_clock_starts_no_trial_past_the_deadline(monkeypatch):
    from loraclf.sweep import timing

    now = [1000.0]
    monkeypatch.setattr(timing.time, "monotonic", lambda: now[0])
    clock = timing.StudyClock(budget=600, trials=20, started=1000.0)
    ends = []
    while clock.room_for_another():
        budget = clock.trial_budget(None)
        now[0] += budget  # each trial uses all of its budget
        ends.append(now[0])
    assert ends and max(ends) <= 1600.0
    assert clock.begun == 10 and clock.left() < clock.minimum  # 60 s each: ten fit, the rest never start
    assert clock.timeout(None) == 0.0


@pytest.mark.slow
def test_sweep_time_budget_ends_the_study_in_time(tiny_bert_dir, tmp_path):
    import optuna

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model: {{name: {tiny_bert_dir}, head: linear}}\n"
        "adapter: {method: lora, targets: [query, value], r: 2}\n"
        "train: {epochs: 20, batch_size: 8, lr: 2.0e-2, threads: 1, precision: fp32, progress: false}\n"
    )
    space = tmp_path / "space.yaml"
    space.write_text("adapter.r: {int: [1, 4]}\n")
    csv = write_text_csv(tmp_path / "train.csv", 200, seed=2)
    started, wall = time.monotonic(), time.time()
    ok(run_cli("sweep", "--config", recipe, "--space", space, "--train", csv, "--out", tmp_path / "sw", "--quiet",
               "--trials", 20, "--time-budget", "40s"))  # fmt: skip
    seconds = time.monotonic() - started
    assert seconds < 40 * 1.05, seconds
    trials = optuna.load_study(study_name="sw", storage=f"sqlite:///{tmp_path / 'sw' / 'study.db'}").trials
    assert 1 <= len(trials) < 20  # the deadline, not the count, ended the study
    for t in trials:  # each trial's budget ends by the study's deadline
        assert t.datetime_start.timestamp() + t.user_attrs["time_budget"] <= wall + 40 + 0.5
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert done and all((Path(t.user_attrs["run_folder"]) / "run.json").is_file() for t in done)
