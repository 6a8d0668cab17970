"""A damaged or missing run-folder file is one line and exit status 2 in every command that reads run folders.

One tiny finished run is trained once; each case copies it, damages one file, and runs evaluate, predict, export,
report, runs and ``train --resume`` on the copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, write_text_csv
from loraclf.runfolder.schema import RunInfo, read_run_info, write_run_info
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runfolder")
    files = {
        "train": write_text_csv(d / "train.csv", 48, seed=3),
        "eval": write_text_csv(d / "eval.csv", 16, seed=4),
    }
    run = d / "run"
    res = run_cli(
        "train", "--model", tiny_bert_dir, "--train", files["train"], "--eval", files["eval"], "--out", run,
        "--epochs", 1, *TINY,
    )  # fmt: skip
    assert res.returncode == 0, res
    return {**files, "run": run}


DAMAGE = {
    "run.json missing": ("run.json", None),
    "run.json not JSON": ("run.json", '{"format_version": 1, "plan": '),
    "run.json without plan": ("run.json", '{"format_version": 1, "status": "complete"}'),
    "labels.json missing": ("labels.json", None),
    "labels.json not JSON": ("labels.json", "[[["),
    "recipe.yaml missing": ("recipe.yaml", None),
    "recipe.yaml not YAML": ("recipe.yaml", "model: [unclosed\n  - : :"),
    "weights missing": ("model.safetensors", None),
    "weights damaged": ("model.safetensors", "not a safetensors file"),
}


def damaged_copy(finished: dict, tmp_path: Path, case: str) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished["run"], run)
    name, content = DAMAGE[case]
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_text(content)
    return run


def commands(run: Path, finished: dict, tmp_path: Path) -> dict[str, list]:
    return {
        "evaluate": ["evaluate", run, "--data", finished["eval"], "--quiet"],
        "predict": ["predict", run, "--input", finished["eval"], "--output", tmp_path / "p.csv", "--quiet"],
        "export": ["export", run, "--out", tmp_path / "exported"],
        "report": ["report", run],
    }


def assert_one_line_error(res, *names: str) -> None:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loraclf: error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert any(n in lines[0] for n in names), lines[0]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_one_line_in_every_reading_command(finished, tmp_path, case):
    run = damaged_copy(finished, tmp_path, case)
    name = DAMAGE[case][0]
    for command, args in commands(run, finished, tmp_path).items():
        if command == "report" and name in ("model.safetensors", "recipe.yaml"):
            continue  # the report reads run.json, labels.json and the metrics only
        res = run_cli(*args)
        assert_one_line_error(res, name, str(run))
        assert (
            not (tmp_path / "p.csv").exists() and not (tmp_path / "exported").exists()
        )  # nothing half-written


@pytest.mark.parametrize("case", ["run.json not JSON", "run.json without plan", "recipe.yaml not YAML"])
def test_resume_of_a_damaged_folder_is_one_line(finished, tmp_path, case):
    run = damaged_copy(finished, tmp_path, case)
    assert_one_line_error(run_cli("train", "--resume", run), DAMAGE[case][0])


def test_runs_table_lists_a_damaged_run_and_names_its_file(finished, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished["run"], root / "good")
    shutil.copytree(finished["run"], root / "bad")
    (root / "bad" / "run.json").write_text("{")
    res = run_cli("runs", root)
    assert res.returncode == 2, res  # the table is printed, and the damage is not hidden from scripts
    assert "good" in res.stdout and "bad" in res.stdout and "unreadable" in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "run.json" in lines[0] and "bad" in lines[0], res.stderr


def test_run_info_round_trips_and_keeps_unknown_keys(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished["run"], run)
    data = json.loads((run / "run.json").read_text())
    data["from_a_newer_minor_version"] = {"x": 1}
    (run / "run.json").write_text(json.dumps(data))
    info = read_run_info(run)
    assert isinstance(info, RunInfo) and info.complete and info.trainable == data["plan"]["trainable"]
    write_run_info(run, info)
    assert json.loads((run / "run.json").read_text()) == data


def test_a_newer_format_is_refused_with_upgrade_advice(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished["run"], run)
    data = json.loads((run / "run.json").read_text())
    data["format_version"] = 99
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="newer loraclf"):
        read_run_info(run)
