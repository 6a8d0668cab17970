"""The run report and the runs table, on synthetic run folders written here (no model, no training).

The report reads only run-folder files, so a folder with realistic run.json, labels.json, metrics.jsonl,
metrics.json, recipe.yaml and confusion_matrix.csv (and an empty model.safetensors) exercises all of it. Pages are
checked by their headings and figure counts; the slow test renders the page in headless Chromium.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from loraclf.cli.report import COMMANDS, add_commands
from loraclf.reporting.listing import format_runs_table, runs_table, sort_rows
from loraclf.reporting.report import write_report
from loraclf.utils.errors import UserError

# One label carries HTML metacharacters: the page must show it escaped, never as markup.
LABELS = ["business", "sports", "R&D <lab>", "world"]
HEADINGS = [
    "Training curves",
    "Confusion matrix",
    "Per-class metrics",
    "Calibration",
    "Token lengths",
    "Label distribution",
    "Parameter budget",
]
FIGURES = {
    "training_curves",
    "confusion_matrix",
    "reliability",
    "token_lengths",
    "label_distribution",
    "parameter_budget",
}
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(
    path: Path,
    labels: list[str] = LABELS,
    accuracy: float = 0.83,
    trainable: int = 481_156,
    seconds: float | None = 27.0,
    finished: bool = True,
) -> Path:
    """Write a run folder the way `loraclf train` does, with made-up but consistent numbers."""
    path.mkdir(parents=True)
    k = len(labels)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.normal(50, 15, 300).round().astype(int), 3, 140)
    cm = (np.eye(k, dtype=int) * 20 + rng.integers(0, 4, (k, k))).tolist()
    train_counts, eval_counts = [84, 67, 65, 84][:k], [28, 22, 22, 28][:k]
    info = {
        "format_version": 1,
        "loraclf_version": "0.1.0",
        "status": "complete" if finished else "training",
        "model": {"name": "minilm"},
        "num_labels": k,
        "max_length": 104,
        "token_lengths": {
            "count": 300,
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
            "max_length": 104,
            "quantile": 0.995,
            "truncated": int((lengths > 104).sum()),
            "histogram": np.bincount(lengths).tolist(),
        },
        "data": {
            "train_file": "/data/train.csv",
            "eval_file": None,
            "validation": "stratified split of 100 training rows (seed 42)",
            "n_train": sum(train_counts),
            "n_eval": sum(eval_counts),
            "train_label_counts": train_counts,
            "eval_label_counts": eval_counts,
            "eval_texts_seen_in_train": 0,
        },
        "plan": {
            "model": "minilm",
            "num_labels": k,
            "method": "lora",
            "trainable": trainable,
            "total": 23_195_912,
            "ratio": round(trainable / 23_195_912, 6),
            "adapters": 331_776,
            "adapters_per_layer": {str(i): 55_296 for i in range(6)},
            "biases": 0,
            "head": trainable - 331_776,
            "other": 0,
            "budget": 1_000_000,
            "fits": True,
        },
        "environment": {"python": "3.11.7", "torch": "2.3.0+cpu", "device": "cpu", "precision": "bf16"},
    }
    if finished:
        info.update(
            train_seconds=seconds, train_samples_per_s=11.1, best_step=60, calibration=_calibration(k)
        )
    history = []
    for step in range(20, 121, 20):
        history.append(
            {"step": step, "epoch": step / 60, "split": "train", "loss": 1.4 - step / 150,
             "accuracy": 0.3 + step / 250, "lr": 1e-3 * (1 - step / 120), "samples_per_s": 12.0}
        )  # fmt: skip
        if step % 30 == 0:
            acc = [0.6, accuracy, accuracy - 0.02, accuracy - 0.05][step // 30 - 1]
            history.append(
                {"step": step, "epoch": step / 60, "split": "eval", "loss": 1.5 - acc,
                 "accuracy": acc, "macro_f1": acc - 0.01, "best": step <= 60}
            )  # fmt: skip
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (path / "run.json").write_text(json.dumps(info, indent=1))
    (path / "labels.json").write_text(json.dumps({"labels": labels}))
    (path / "recipe.yaml").write_text(
        "model:\n  name: minilm\nadapter:\n  method: lora\n  r: 8\nbudget: 1000000\n"
    )
    (path / "model.safetensors").write_bytes(b"")
    if finished:
        per_class = {
            n: {"precision": 0.8, "recall": 0.85, "f1": 0.82, "support": eval_counts[i]}
            for i, n in enumerate(labels)
        }
        metrics = {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "n": sum(eval_counts), "per_class": per_class,
                   "confusion_matrix": cm, "labels": labels, "loss": 0.6, "best_step": 60, "train_seconds": seconds,
                   "train_samples_per_s": 11.1, "steps": 120}  # fmt: skip
        (path / "metrics.json").write_text(json.dumps(metrics, indent=1))
        rows = [f"{n}," + ",".join(map(str, row)) for n, row in zip(labels, cm)]
        (path / "confusion_matrix.csv").write_text(
            "\n".join(["true\\predicted," + ",".join(labels), *rows]) + "\n"
        )
    return path


def _calibration(k: int) -> dict:
    """run.json's calibration record of an over-confident model (fitted the way training fits it)."""
    from loraclf.inference.calibration import calibrate, softmax

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(100, k))
    labels = (softmax(logits).cumsum(axis=1) > rng.random((100, 1))).argmax(axis=1)
    return calibrate(softmax(3 * logits), labels, announce=False)


def write_predictions(path: Path, labels: list[str], n: int = 50) -> Path:
    rows = [f"row{i},{labels[i % len(labels)]}" for i in range(n)]
    path.write_text("ID,Label\n" + "\n".join(rows) + "\n")
    return path


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG.findall(page)]


def test_report_writes_page_and_figures(tmp_path):
    run = make_run(tmp_path / "run1")
    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text(encoding="utf-8")
    assert "<h1>loraclf run: run1</h1>" in page
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    assert "Predicted class distribution" not in page
    assert {p.stem for p in (run / "figures").glob("*.png")} == FIGURES
    embedded = images(page)
    assert len(embedded) == len(FIGURES)
    # The page embeds exactly the PNG files it wrote, so the folder's figures and the page never disagree.
    assert sorted(embedded) == sorted(p.read_bytes() for p in (run / "figures").glob("*.png"))
    assert all(png.startswith(PNG_MAGIC) and len(png) > 5_000 for png in embedded)
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"<script|<link|@import|url\(|https?://", page)
    assert not list(run.glob(".*.tmp")) and not list((run / "figures").glob(".*.tmp"))


def test_calibration_section_shows_temperature_ece_and_reliability(tmp_path):
    run = make_run(tmp_path / "run1")
    record = json.loads((run / "run.json").read_text())["calibration"]
    page = write_report(run).read_text(encoding="utf-8")
    part = page.split("<h2>Calibration</h2>", 1)[1].split("</section>", 1)[0]
    assert f"Temperature {record['temperature']:.4g}, fitted on 100 validation rows" in part
    assert f"<td>{record['ece_before'] * 100:.2f}%</td><td>{record['ece_after'] * 100:.2f}%</td>" in part
    assert f"<td>{record['nll_before']:.4f}</td><td>{record['nll_after']:.4f}</td>" in part
    assert len(images(part)) == 1 and 'alt="reliability diagram"' in part
    # A run trained before calibration existed: the section says it predicts with T = 1, and draws nothing.
    info = json.loads((run / "run.json").read_text())
    del info["calibration"]
    (run / "run.json").write_text(json.dumps(info))
    page = write_report(run).read_text(encoding="utf-8")
    part = page.split("<h2>Calibration</h2>", 1)[1].split("</section>", 1)[0]
    assert "trained before loraclf kept a temperature" in part and "(T = 1)" in part
    assert not images(part) and not (run / "figures" / "reliability.png").exists()
    assert len(images(page)) == len(FIGURES) - 1


def test_report_summary_and_tables(tmp_path):
    page = write_report(make_run(tmp_path / "run1")).read_text(encoding="utf-8")
    for text in (
        "minilm",
        "lora",
        "481,156 / 23,195,912",
        "83.00%",
        "82.00%",
        "27.0 s",
        "11.1",
        "torch 2.3.0+cpu",
    ):
        assert text in page, text
    assert page.count("<td>0.8200</td>") == len(LABELS) + 1  # one F1 per class plus the macro average
    assert "fits, 518,844 to spare" in page
    assert "R&amp;D &lt;lab&gt;" in page and "<lab>" not in page


def test_report_with_predictions(tmp_path):
    run = make_run(tmp_path / "run1")
    preds = write_predictions(tmp_path / "preds.csv", [*LABELS, "unknown"])
    page = write_report(run, preds).read_text(encoding="utf-8")
    assert "<h2>Predicted class distribution</h2>" in page
    assert len(images(page)) == len(FIGURES) + 1
    assert (run / "figures" / "predicted_distribution.png").is_file()
    assert "10 predictions are not in the run" in page
    # Without --predictions again, the section and its stale figure go away.
    page = write_report(run).read_text(encoding="utf-8")
    assert "Predicted class distribution" not in page
    assert len(images(page)) == len(FIGURES)
    assert not (run / "figures" / "predicted_distribution.png").exists()


def test_report_of_a_run_still_training(tmp_path):
    run = make_run(tmp_path / "live", finished=False)
    page = write_report(run).read_text(encoding="utf-8")
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    assert page.count("metrics.json is written when training completes") == 2
    assert "the temperature is fitted when training completes" in page
    assert len(images(page)) == len(FIGURES) - 2  # no confusion matrix nor reliability diagram yet


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda t: (t / "nope", None), "not found"),
        (lambda t: (t.joinpath("empty").mkdir() or t / "empty", None), "no run.json"),
        (lambda t: (make_run(t / "r"), t / "missing.csv"), "missing.csv' not found"),
        (lambda t: (make_run(t / "r"), _write(t / "p.csv", "ID,Prediction\n1,sports\n")), "no Label column"),
        (lambda t: (make_run(t / "r"), _write(t / "p.csv", "ID,Label\n")), "no rows"),
        (lambda t: (_damage(make_run(t / "r")), None), "run.json"),
    ],
)
def test_report_errors_are_one_line_user_errors(tmp_path, setup, needle):
    run, preds = setup(tmp_path)
    with pytest.raises(UserError) as exc:
        write_report(run, preds)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg
    assert "; " in msg  # what was wrong; what to do


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _damage(run: Path) -> Path:
    (run / "run.json").write_text('{"format_version": 1, "plan": ')
    return run


def parse(*argv: str):
    from loraclf.cli.main import Parser

    parser = Parser(prog="loraclf")
    add_commands(parser.add_subparsers(dest="command", parser_class=Parser))
    return parser.parse_args(argv)


def test_report_command(tmp_path, capsys):
    run = make_run(tmp_path / "run1")
    preds = write_predictions(tmp_path / "preds.csv", LABELS)
    args = parse("report", str(run), "--predictions", str(preds))
    assert COMMANDS[args.command](args) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert "Predicted class distribution" in (run / "report.html").read_text(encoding="utf-8")


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root / "a", accuracy=0.90, trainable=500_000, seconds=30.0)
    make_run(root / "group" / "b", accuracy=0.80, trainable=400_000, seconds=10.0)
    make_run(
        root / "c", accuracy=0.85, trainable=450_000, finished=False
    )  # interrupted: no lock, no metrics.json
    _damage(make_run(root / "d"))
    (root / "notes").mkdir()
    return root


def test_runs_table_rows(runs_root):
    rows = {r["name"]: r for r in runs_table(runs_root)}
    assert set(rows) == {"a", "group/b", "c", "d"}
    assert rows["a"] | {"path": None} == {
        "name": "a", "path": None, "model": "minilm", "method": "lora", "trainable": 500_000,
        "total": 23_195_912, "budget": 1_000_000, "accuracy": 0.90, "macro_f1": 0.89, "train_seconds": 30.0,
        "status": "complete",
    }  # fmt: skip
    # A run without metrics.json reports its last improving evaluation (step 60), not a later, worse one.
    assert rows["c"]["accuracy"] == 0.85 and rows["c"]["status"] == "interrupted"
    assert rows["d"]["status"] == "unreadable" and rows["d"]["accuracy"] is None


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("name", ["a", "c", "d", "group/b"]),
        ("accuracy", ["a", "c", "group/b", "d"]),
        ("macro_f1", ["a", "c", "group/b", "d"]),
        ("trainable", ["group/b", "c", "a", "d"]),
        ("time", ["group/b", "a", "c", "d"]),
    ],
)
def test_runs_sorting(runs_root, sort, order):
    assert [r["name"] for r in sort_rows(runs_table(runs_root), sort)] == order
    lines = format_runs_table(runs_table(runs_root), sort).splitlines()
    assert lines[0].split() == [
        "run",
        "model",
        "method",
        "trainable",
        "accuracy",
        "macro-F1",
        "time",
        "status",
    ]
    assert [ln.split()[0] for ln in lines[1:]] == order


def test_runs_command_text_and_json(runs_root, capsys):
    args = parse("runs", str(runs_root), "--sort", "accuracy")
    assert COMMANDS["runs"](args) == 2  # "d" is damaged: listed as unreadable, and the exit status says so
    out = capsys.readouterr().out
    assert re.search(r"^a\s+minilm\s+lora\s+500,000\s+90\.00%\s+89\.00%\s+30\.0 s\s+complete$", out, re.M)
    args = parse("runs", str(runs_root), "--sort", "time", "--json")
    assert COMMANDS["runs"](args) == 2
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["group/b", "a", "c", "d"]
    assert rows[0]["trainable"] == 400_000 and rows[0]["train_seconds"] == 10.0


def test_runs_command_defaults_and_errors(tmp_path, monkeypatch):
    args = parse("runs")
    assert (args.dir, args.sort, args.json) == ("runs", "name", False)
    with pytest.raises(UserError, match="--sort"):
        parse("runs", "--sort", "speed")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="'runs' not found"):
        COMMANDS["runs"](args)
    (tmp_path / "runs").mkdir()
    assert format_runs_table(runs_table(tmp_path / "runs")) == "no runs found (no folder with a run.json)"


# --- rendering in a real browser --------------------------------------------------------------------------------------


def chromium(*args: str, profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Headless Chromium kept off the network; the whole process group is killed on timeout."""
    binary = shutil.which("chromium")
    if binary is None:
        msg = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    run = make_run(tmp_path / "run1")
    page = write_report(run, write_predictions(tmp_path / "preds.csv", LABELS))
    url = page.resolve().as_uri()
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile").stdout
    assert "<h1>loraclf run: run1</h1>" in dom
    for heading in [*HEADINGS, "Predicted class distribution"]:
        assert f"<h2>{heading}</h2>" in dom
    assert len(IMG.findall(dom)) == len(FIGURES) + 1

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,4000", url, profile=tmp_path / "profile")
    assert shot.is_file() and shot.stat().st_size > 50_000
    # The figures' bar colour appears nowhere in the page's CSS, so finding it proves the images were drawn.
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    blue = (np.abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=1) < 30).sum()
    assert blue > 20_000, f"only {blue} figure-coloured pixels in the screenshot"


# --- scores labelled by split, recorded evaluations, class names, a lone evaluation point ------------------------


def test_summary_scores_name_their_split(tmp_path):
    page = write_report(make_run(tmp_path / "run1")).read_text(encoding="utf-8")
    assert "<th>validation accuracy</th><td>83.00%</td>" in page
    assert "<th>validation macro-F1</th><td>82.00%</td>" in page
    assert "<th>accuracy</th>" not in page


def test_recorded_evaluation_appears_beside_validation(tmp_path):
    from loraclf.runfolder.schema import write_evaluation

    run = make_run(tmp_path / "run1")
    k = len(LABELS)
    cm = (np.eye(k, dtype=int) * 7 + 1).tolist()
    per_class = {n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10} for n in LABELS}
    result = {"accuracy": 0.6125, "macro_f1": 0.6, "n": 44, "per_class": per_class, "confusion_matrix": cm,
              "labels": LABELS, "loss": 1.0}  # fmt: skip
    path = write_evaluation(run, tmp_path / "test.csv.gz", result)
    assert path == run / "evaluations" / "test.csv.gz.json" and not list(path.parent.glob(".*.tmp"))
    page = write_report(run).read_text(encoding="utf-8")
    assert "<th>validation accuracy</th><td>83.00%</td>" in page
    assert "<th>test.csv.gz accuracy</th><td>61.25% (44 rows of" in page
    assert "<th>test.csv.gz macro-F1</th><td>60.00%</td>" in page
    assert (run / "figures" / "confusion_matrix_test.csv.gz.png").is_file()
    assert len(images(page)) == len(FIGURES) + 1
    assert 'alt="confusion matrix on test.csv.gz"' in page
    # The evaluation's file removed: its figure goes with it on the next report.
    path.unlink()
    page = write_report(run).read_text(encoding="utf-8")
    assert "test accuracy" not in page and not (run / "figures" / "confusion_matrix_test.png").exists()


def test_numeric_labels_are_shown_by_their_label_names(tmp_path):
    run = make_run(tmp_path / "run1", labels=["1", "2", "3", "4"])
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text() + "data:\n  label_names: [World, Sports, Business, Sci/Tech]\n")
    page = write_report(run).read_text(encoding="utf-8")
    for name in ("World", "Sports", "Business", "Sci/Tech"):
        assert f"<td>{name}</td>" in page, name  # per-class table rows
    assert "<td>1</td>" not in page


def test_label_names_is_a_list_key():
    from loraclf.config import Recipe, apply_overrides

    r = apply_overrides(Recipe(), ["data.label_names=[World, Sports]"])
    assert r.data.label_names == ["World", "Sports"]


def test_a_single_evaluation_point_is_drawn_above_the_kept_weights_line():
    from loraclf.reporting.figures import fig_training_curves

    # A long run evaluated once (one epoch): 40 train rows, one eval row, the kept weights at that same step.
    history = [
        {"step": s, "split": "train", "loss": 1.0, "accuracy": 0.5, "lr": 1e-3} for s in range(20, 801, 20)
    ]
    history.append({"step": 800, "split": "eval", "loss": 0.7, "accuracy": 0.8, "macro_f1": 0.79})
    fig = fig_training_curves(history, best_step=800)
    ax_acc = fig.axes[1]
    lines = {ln.get_label(): ln for ln in ax_acc.lines}
    kept = lines["kept weights (step 800)"]
    for label in ("validation accuracy", "validation macro-F1"):
        point = lines[label]
        assert len(point.get_xdata()) == 1
        assert point.get_marker() not in (None, "None", "", " "), (
            label
        )  # one point without a marker is invisible
        assert point.get_zorder() > kept.get_zorder(), label
    assert lines["validation accuracy"].get_marker() != lines["validation macro-F1"].get_marker()
