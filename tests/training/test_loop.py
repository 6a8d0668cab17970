"""End to end on a tiny BERT: train → run folder → evaluate → predict → Python API; determinism; resume.

Training and prediction go through the command line (``loraclf.cli.main.main`` in this process, which is what the
``loraclf`` script calls); the resume test runs the first half in a real ``python -m loraclf`` process and kills it.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

import loraclf
from conftest import LABELS, RUN_FILES, cli_env, make_rows, run_cli, write_text_csv, write_title_desc_csv
from loraclf.runfolder.metrics_log import read_metrics

# A linear head over mean-pooled states learns the fixture's keyword classes in a few epochs; the BERT pooler head
# of a randomly initialised 32-wide model needs far more steps.
TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


def ok(res):
    assert res.returncode == 0, res
    return res


def train(bert: Path, train_csv: Path, out: Path, *extra, eval_csv: Path | None = None, epochs: int = 4):
    args = ["train", "--model", bert, "--train", train_csv, "--out", out, "--epochs", epochs, *TINY, *extra]
    if eval_csv is not None:
        args[5:5] = ["--eval", eval_csv]
    return ok(run_cli(*args))


def read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny-data")
    out = {
        "bert": tiny_bert_dir,
        "train": write_text_csv(d / "train.csv", 80, seed=0),
        "eval": write_text_csv(d / "eval.csv", 40, seed=5),
        "title_desc": write_title_desc_csv(d / "title_desc.csv", 40, seed=6),
    }
    # Prediction input: an id column, rows in a fixed order, one empty text.
    rows = make_rows(24, seed=9)
    texts = [f"{r[1]} {r[2]}" for r in rows]
    texts[5] = ""
    pd.DataFrame({"id": [f"q{100 - i}" for i in range(24)], "text": texts}).to_csv(
        d / "predict.csv", index=False
    )
    out["predict"] = d / "predict.csv"
    out["predict_truth"] = d / "predict_truth.json"
    out["predict_truth"].write_text(json.dumps([r[0] for r in rows]))
    pd.DataFrame({"text": texts[:7]}).to_csv(d / "predict_noid.csv", index=False)
    out["predict_noid"] = d / "predict_noid.csv"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny-runs")
    out = {}
    for name, seed in (("a", 42), ("b", 42), ("c", 7)):
        out[name] = d / f"run-{name}"
        train(files["bert"], files["train"], out[name], "--seed", seed, eval_csv=files["eval"])
    return out


def test_run_folder_has_exactly_the_run_files(runs):
    run = runs["a"]
    assert {p.name for p in run.iterdir()} == RUN_FILES  # no checkpoints/, no .lock, no temp files
    assert (run / "tokenizer").is_dir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete"
    assert json.loads((run / "labels.json").read_text())["labels"] == LABELS


def test_metrics_show_learning(runs):
    m = json.loads((runs["a"] / "metrics.json").read_text())
    assert m["accuracy"] >= 0.9, m  # keyword classes: far above the 0.25 of chance
    assert m["macro_f1"] >= 0.85, (
        m
    )  # every class learnt, not only the frequent ones  # keyword classes: far above the 0.25 of chance
    assert m["n"] == 40
    history = [json.loads(line) for line in (runs["a"] / "metrics.jsonl").read_text().splitlines()]
    evals = [h for h in history if h["split"] == "eval"]
    assert len(evals) == 4  # one per epoch
    assert [h["step"] for h in evals] == sorted(h["step"] for h in evals)
    matrix = read_csv_rows(runs["a"] / "confusion_matrix.csv")
    assert matrix[0][1:] == LABELS
    assert sum(int(v) for row in matrix[1:] for v in row[1:]) == 40


def test_evaluate_reproduces_metrics_json(runs, files):
    res = ok(run_cli("evaluate", runs["a"], "--data", files["eval"], "--json"))
    got = json.loads(res.stdout)
    saved = json.loads((runs["a"] / "metrics.json").read_text())
    assert got["accuracy"] == saved["accuracy"]
    assert got["macro_f1"] == saved["macro_f1"]
    assert got["confusion_matrix"] == saved["confusion_matrix"]


def test_evaluate_title_description_layout(runs, files):
    """A model trained on the text layout evaluates a title,description file."""
    res = ok(run_cli("evaluate", runs["a"], "--data", files["title_desc"], "--json"))
    got = json.loads(res.stdout)
    assert got["n"] == 40
    assert got["accuracy"] >= 0.8


def test_predict_writes_one_labelled_row_per_input_row_in_order(runs, files, tmp_path):
    out = tmp_path / "out.csv"
    ok(run_cli("predict", runs["a"], "--input", files["predict"], "--output", out, "--quiet"))
    rows = read_csv_rows(out)
    assert rows[0] == ["ID", "Label"]
    body = rows[1:]
    ids = pd.read_csv(files["predict"], dtype=str)["id"].tolist()
    assert [r[0] for r in body] == ids
    labels = [r[1] for r in body]
    assert set(labels) <= set(LABELS)
    truth = json.loads(files["predict_truth"].read_text())
    # Order is kept: predictions line up with the input rows (the empty row 5 still gets some label).
    agree = sum(p == t for i, (p, t) in enumerate(zip(labels, truth)) if i != 5)
    assert agree >= 20, list(zip(labels, truth))


def test_predict_ids_default_to_row_index(runs, files, tmp_path):
    out = tmp_path / "out.csv"
    ok(run_cli("predict", runs["a"], "--input", files["predict_noid"], "--output", out, "--quiet"))
    rows = read_csv_rows(out)
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(7)]


def test_predict_keeps_ids_verbatim(runs, tmp_path):
    """IDs are keys into someone else's table: "007" must not come back as "7", nor "1.0" as "1"."""
    ids = ["007", "010", "7", "1.0", "x-1"]
    src = tmp_path / "ids.csv"
    pd.DataFrame(
        {"id": ids, "text": ["tennis goal", "bank profit", "chip nasa", "troops treaty", "match"]}
    ).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    ok(run_cli("predict", runs["a"], "--input", src, "--output", out, "--quiet"))
    assert [r[0] for r in read_csv_rows(out)[1:]] == ids


def test_predict_title_description_input(runs, files, tmp_path):
    out = tmp_path / "out.csv"
    ok(run_cli("predict", runs["a"], "--input", files["title_desc"], "--output", out, "--quiet"))
    rows = read_csv_rows(out)[1:]
    truth = pd.read_csv(files["title_desc"])["label"].tolist()
    assert [r[0] for r in rows] == [str(i) for i in range(len(truth))]
    assert sum(r[1] == t for r, t in zip(rows, truth)) >= 0.8 * len(truth)


def test_predict_mc_dropout(runs, files, tmp_path):
    plain, mc1, mc2 = tmp_path / "plain.csv", tmp_path / "mc1.csv", tmp_path / "mc2.csv"
    ok(
        run_cli(
            "predict", runs["a"], "--input", files["predict"], "--output", plain, "--probabilities", "--quiet"
        )
    )
    mc = [
        "predict",
        runs["a"],
        "--input",
        files["predict"],
        "--probabilities",
        "--mc-dropout",
        "4",
        "--quiet",
    ]
    for out in (mc1, mc2):
        ok(run_cli(*mc, "--output", out))
    assert mc1.read_bytes() == mc2.read_bytes()  # seeded: the same passes every time
    _, p_plain = _probs(plain)
    df, p_mc = _probs(mc1)
    assert len(df) == 24
    assert np.allclose(p_mc.sum(axis=1), 1.0, atol=1e-4)
    assert not np.allclose(p_mc, p_plain)  # dropout was really on


def _probs(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    df = pd.read_csv(path, dtype={"ID": str, "Label": str})
    return df, df[[f"prob_{lab}" for lab in LABELS]].to_numpy()


def test_predict_probabilities(runs, files, tmp_path):
    out = tmp_path / "out.csv"
    ok(
        run_cli(
            "predict", runs["a"], "--input", files["predict"], "--output", out, "--probabilities", "--quiet"
        )
    )
    df, p = _probs(out)
    assert list(df.columns) == ["ID", "Label"] + [f"prob_{lab}" for lab in LABELS]
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-4)
    assert (p >= 0).all()
    assert df["Label"].tolist() == [LABELS[i] for i in p.argmax(axis=1)]


def test_predict_ensemble_averages_members(runs, files, tmp_path):
    outs = {}
    for name, members in (("a", [runs["a"]]), ("c", [runs["c"]]), ("ac", [runs["a"], runs["c"]])):
        outs[name] = tmp_path / f"{name}.csv"
        res = ok(
            run_cli(
                "predict", *members, "--input", files["predict"], "--output", outs[name], "--probabilities"
            )
        )
        if name == "ac":
            trainable = json.loads((runs["a"] / "run.json").read_text())["plan"]["trainable"]
            assert f"{2 * trainable:,}" in res.stderr  # an ensemble spends one budget per member: say so
    df, p_ac = _probs(outs["ac"])
    _, p_a = _probs(outs["a"])
    _, p_c = _probs(outs["c"])
    assert len(df) == 24
    assert not np.allclose(p_a, p_c)  # different seeds, different members
    assert np.allclose(p_ac, (p_a + p_c) / 2, atol=2e-6)
    assert set(df["Label"]) <= set(LABELS)


def test_python_api(runs):
    run = loraclf.load(runs["a"])
    rows = make_rows(12, seed=11)
    predicted = run.predict([f"{r[1]} {r[2]}" for r in rows])
    assert len(predicted) == 12 and set(predicted) <= set(LABELS)
    assert sum(p == r[0] for p, r in zip(predicted, rows)) >= 10, predicted
    assert run.predict_proba(["tennis", ""]).shape == (2, 4)


def test_python_api_empty_input(runs):
    run = loraclf.load(runs["a"])
    assert run.predict([]) == []
    assert run.predict_proba([]).shape == (0, 4)


def test_same_seed_same_results(runs, files, tmp_path):
    a = json.loads((runs["a"] / "metrics.json").read_text())
    b = json.loads((runs["b"] / "metrics.json").read_text())
    assert a["accuracy"] == b["accuracy"] and a["loss"] == b["loss"]
    wa, wb = load_file(str(runs["a"] / "model.safetensors")), load_file(str(runs["b"] / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    pa, pb = tmp_path / "a.csv", tmp_path / "b.csv"
    for run, out in ((runs["a"], pa), (runs["b"], pb)):
        ok(
            run_cli(
                "predict", run, "--input", files["predict"], "--output", out, "--probabilities", "--quiet"
            )
        )
    assert pa.read_bytes() == pb.read_bytes()


def test_max_train_samples_is_a_stratified_sample(files, tmp_path):
    # Two empty texts: dropped (and counted) before the split and the sample.
    src = pd.read_csv(files["train"])
    src = pd.concat(
        [src, pd.DataFrame({"label": ["sports", "world"], "text": ["", "   "]})], ignore_index=True
    )
    train_csv = tmp_path / "train_with_empties.csv"
    src.to_csv(train_csv, index=False)
    run = tmp_path / "run"
    res = train(files["bert"], train_csv, run, "--max-train-samples", "20", epochs=1)
    assert "dropped 2" in res.stderr
    data = json.loads((run / "run.json").read_text())["data"]
    assert data["n_train"] == 20
    assert data["dropped_empty_train"] == 2
    assert data["train_label_counts"] == [5, 5, 5, 5]
    assert data["n_eval"] == 8  # the default 10% validation split of the 80 non-empty rows


def test_texts_longer_than_the_model_are_truncated_to_its_positions(files, tmp_path):
    """The tiny BERT has 128 positions and its tokenizer names no limit: max_length must respect the model."""
    rows = make_rows(40, seed=3)
    long_csv = tmp_path / "long.csv"
    pd.DataFrame({"label": [r[0] for r in rows], "text": [(f"{r[1]} {r[2]} ") * 30 for r in rows]}).to_csv(
        long_csv, index=False
    )
    run = tmp_path / "run"
    train(files["bert"], long_csv, run, epochs=1)
    assert json.loads((run / "run.json").read_text())["max_length"] <= 128


# --- resume after kill -9 ------------------------------------------------------------------------------------------

RESUME = ["train.max_steps=300", "train.batch_size=4"]


def _kill_after_checkpoint(args: list[str], run: Path, min_step: int, log: Path) -> None:
    """Start `loraclf train` in its own process and SIGKILL it once a checkpoint past ``min_step`` exists."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loraclf", *map(str, args)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ckpts = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
            if any(int(c.name.split("-")[1]) >= min_step for c in ckpts):
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        else:
            pytest.fail("no checkpoint appeared within 300 s")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_text(errors="replace")
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(
            f"the training process ended by itself (exit {proc.returncode}) before it could be killed mid-run; "
            f"make the run longer. stderr:\n{err[-3000:]}"
        )


@pytest.mark.parametrize(
    "extra",
    [[], ["adapter.layers=1"], ["--method", "adalora", "--rank", "4", "adapter.target_rank=2"]],
    ids=["all-layers", "frozen-layer-cache", "adalora"],
)  # the second adapts layer 1 only: layer 0 is cached, and the cache is rebuilt on resume; AdaLoRA's importance
# averages live outside its parameters and must come back from the checkpoint for it to prune the same ranks
def test_resume_after_kill_matches_uninterrupted_run(files, tmp_path, extra):
    common = [
        "train", "--model", files["bert"], "--train", files["train"], "--eval", files["eval"],
        "--epochs", "1", "--save-every", "5", *TINY, *RESUME, *extra,
    ]  # fmt: skip
    reference = tmp_path / "reference"
    ok(run_cli(*common, "--out", reference))

    run = tmp_path / "interrupted"
    # Past the first evaluation (every 20 steps: 80 rows / batch 4), so the best-so-far state is restored too.
    _kill_after_checkpoint([*common, "--out", run], run, min_step=25, log=tmp_path / "killed.log")
    assert not (run / "metrics.json").exists(), "the run finished before the kill"
    assert list((run / "checkpoints").glob("step-*"))

    res = ok(run_cli("train", "--resume", run, "--quiet"))
    assert "resuming from step " in res.stderr
    assert {p.name for p in run.iterdir()} == RUN_FILES

    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert (a["accuracy"], a["loss"], a["best_step"], a["steps"]) == (
        b["accuracy"],
        b["loss"],
        b["best_step"],
        b["steps"],
    )

    def evals(path):
        return [
            (h["step"], h["loss"], h["accuracy"])
            for h in read_metrics(path / "metrics.jsonl")
            if h["split"] == "eval"
        ]

    assert evals(reference) == evals(run)
    info_a, info_b = (json.loads((r / "run.json").read_text()) for r in (reference, run))
    assert info_a.get("method_state") == info_b.get("method_state")
    pa, pb = tmp_path / "ref.csv", tmp_path / "resumed.csv"
    for r, out in ((reference, pa), (run, pb)):
        ok(run_cli("predict", r, "--input", files["predict"], "--output", out, "--probabilities", "--quiet"))
    assert pa.read_bytes() == pb.read_bytes()


def test_resume_of_a_complete_run_is_refused(runs):
    res = run_cli("train", "--resume", runs["a"])
    assert res.returncode == 2
    assert "already complete" in res.stderr


@pytest.mark.parametrize(
    ("metric", "value", "best", "loss", "best_loss", "expected"),
    [
        ("accuracy", 0.9, None, 0.3, None, True),  # the first evaluation is always kept
        ("accuracy", 0.91, 0.9, 0.5, 0.3, True),  # higher accuracy wins even with a higher loss
        ("accuracy", 0.89, 0.9, 0.1, 0.3, False),
        ("accuracy", 0.9, 0.9, 0.27, 0.31, True),  # a tie goes to the lower validation loss
        ("accuracy", 0.9, 0.9, 0.35, 0.31, False),
        ("macro_f1", 0.8, 0.8, 0.2, 0.3, True),
        ("loss", 0.2, 0.3, 0.2, 0.3, True),
        ("loss", 0.3, 0.3, 0.3, 0.3, False),
    ],
)
def test_best_checkpoint_choice(metric, value, best, loss, best_loss, expected):
    from loraclf.training.evaluation import better as _better

    assert _better(metric, value, best, loss, best_loss) is expected
