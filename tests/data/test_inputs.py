"""Input mistakes found by a contract audit: each is one line on stderr with exit status 2, or (blank lines,
compressed files, a single string) handled the way a user expects; never a silently wrong submission."""

from __future__ import annotations

import gzip
import json
import shutil

import pandas as pd
import pytest

import loraclf
from conftest import LABELS, run_cli, write_text_csv
from loraclf.utils.errors import UserError

TINY = [
    "--quiet",
    "train.batch_size=8",
    "train.lr=2e-2",
    "model.head=linear",
    "train.threads=1",
    "--epochs",
    "2",
]


def fails(res, *fragments):
    """Exit status 2, one line on stderr naming the fragments, no traceback."""
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loraclf: error: ") and "Traceback" not in res.stderr, res
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir):
    d = tmp_path_factory.mktemp("inputs")
    train_csv = write_text_csv(d / "train.csv", 64, seed=0)
    out = d / "run"
    res = run_cli("train", "--model", tiny_bert_dir, "--train", train_csv, "--out", out, *TINY)
    assert res.returncode == 0, res
    return {"dir": out, "train": train_csv, "tmp": d, "bert": tiny_bert_dir}


def _predict(run, path, tmp_path):
    out = tmp_path / "pred.csv"
    res = run_cli("predict", run["dir"], "--input", path, "--output", out, "--quiet")
    return res, out


def test_a_blank_line_in_a_one_column_file_is_a_row(run, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("text\nstocks profit bank\n\nfootball goal coach\n   \nchip software\n\n\n")
    res, out = _predict(run, src, tmp_path)
    assert res.returncode == 0, res
    pred = pd.read_csv(out)
    assert pred["ID"].tolist() == [0, 1, 2, 3, 4]  # trailing blank lines are not rows; interior ones are
    assert set(pred["Label"]) <= set(LABELS)


def test_blank_lines_between_rows_of_several_columns_are_skipped_with_a_note(run, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,text\na1,stocks profit bank\n\na3,chip software\n")
    res, out = _predict(run, src, tmp_path)
    assert res.returncode == 0 and "skipped 1 blank line" in res.stderr
    assert pd.read_csv(out)["ID"].tolist() == ["a1", "a3"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("id,text\na1,stocks rose, bank fell\na2,football goal\n", "line 2 has 3 fields"),
        ("id,text\na1,stocks\na2,football, goal\n", "line 3 has 3 fields"),
        ("id,text\na1,stocks\n,football goal\n", "row 2, column 'id': the id is empty"),
    ],
    ids=["extra-field-first-row", "extra-field-later-row", "empty-id"],
)
def test_malformed_prediction_files_are_refused(run, tmp_path, content, fragment):
    src = tmp_path / "in.csv"
    src.write_text(content)
    res, out = _predict(run, src, tmp_path)
    fails(res, fragment)
    assert not out.exists()


def test_output_over_the_input_is_refused(run, tmp_path):
    src = tmp_path / "in.csv"
    shutil.copy(run["train"], src)
    before = src.read_bytes()
    fails(run_cli("predict", run["dir"], "--input", src, "--output", src), "is the --input file")
    assert src.read_bytes() == before


def test_compressed_files_are_read(run, tmp_path):
    src = tmp_path / "in.csv.gz"
    src.write_bytes(gzip.compress(run["train"].read_bytes()))
    res = run_cli("evaluate", run["dir"], "--data", src, "--json")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["n"] == 64


def test_a_file_that_is_not_a_pickle(run, tmp_path):
    src = tmp_path / "in.pkl"
    src.write_text("not a pickle at all")
    fails(_predict(run, src, tmp_path)[0], "is not a pickle")


def test_ensemble_evaluation_states_its_total_budget(run):
    res = run_cli("evaluate", run["dir"], run["dir"], "--data", run["train"], "--json")
    assert res.returncode == 0, res
    each = json.loads((run["dir"] / "run.json").read_text())["plan"]["trainable"]
    assert f"= {2 * each:,} trainable parameters in total" in res.stderr
    assert json.loads(res.stdout)["ensemble"]["trainable_total"] == 2 * each


def test_unfinished_runs_do_not_predict(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run["dir"], copy)
    info = json.loads((copy / "run.json").read_text())
    info["status"] = "training"
    (copy / "run.json").write_text(json.dumps(info))
    fails(
        run_cli("predict", copy, "--input", run["train"], "--output", tmp_path / "p.csv"),
        "unfinished",
        "--resume",
    )


def test_report_refuses_files_that_are_not_predictions_of_the_run(run, tmp_path):
    other = tmp_path / "other.csv"
    pd.DataFrame({"ID": [0, 1], "Label": [1, 2]}).to_csv(other, index=False)
    fails(run_cli("report", run["dir"], "--predictions", other), "no label of", "another label set")
    fails(run_cli("report", run["dir"], "--predictions", run["train"]), "no ID column")


def test_resume_with_new_settings_is_refused(run):
    fails(run_cli("train", "--resume", run["dir"], "--epochs", "3", "train.lr=1"), "--epochs", "train.lr=1")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--seed", "-1"], "train.seed"),
        (["--rank", "99999999999999999999"], "adapter.r (--rank)"),
        (["--rank", "1000"], "exceeds the smaller side"),
        (["--layer-ranks", "8*2**(i*100)"], "ranks must be whole numbers"),
        (["--max-train-samples", "3"], "fewer than the 4 classes"),
        (["data.val_size=1.5"], "whole row count"),
    ],
)
def test_bad_numbers_are_refused(run, tmp_path, extra, fragment):
    out = tmp_path / "new"
    res = run_cli("train", "--model", run["bert"], "--train", run["train"], "--out", out, *TINY, *extra)
    fails(res, fragment)
    assert not out.exists()


def test_plan_search_top_must_be_positive():
    fails(
        run_cli("plan", "--model", "roberta-base", "--search", "--budget", "1000000", "--top", "0"), "--top"
    )


def test_predict_takes_a_single_string_as_one_text(run):
    labels = loraclf.load(run["dir"]).predict("stocks profit bank")
    assert len(labels) == 1 and labels[0] in LABELS


def test_unusable_cache_folder_falls_back_with_a_note(run, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("LORACLF_CACHE", str(blocker / "cache"))  # a folder cannot be made under a file
    import loraclf.modeling.backbones

    monkeypatch.setattr(loraclf.modeling.backbones.cache_dir, "warned", False, raising=False)
    res, out = _predict(run, run["train"], tmp_path)
    assert res.returncode == 0, res
    assert "is not writable; using" in res.stderr and len(pd.read_csv(out)) == 64


def test_label_names_must_name_every_class(run, tmp_path):
    out = tmp_path / "named"
    res = run_cli(
        "train", "--model", run["bert"], "--train", run["train"], "--out", out, *TINY,
        "data.label_names=[World, Sports]",
    )  # fmt: skip
    fails(res, "data.label_names has 2 names", "4 classes")
    assert not out.exists()


def test_evaluate_records_its_file_for_the_report(run, tmp_path):
    data = write_text_csv(tmp_path / "holdout.csv", 24, seed=3)
    res = run_cli("evaluate", run["dir"], "--data", data, "--json")
    assert res.returncode == 0, res
    printed = json.loads(res.stdout)
    recorded = json.loads((run["dir"] / "evaluations" / "holdout.csv.json").read_text())
    assert recorded["data"] == str(data) and recorded["accuracy"] == printed["accuracy"]
    assert recorded["confusion_matrix"] == printed["confusion_matrix"] and recorded["rows"] == 24
    res = run_cli("report", run["dir"])
    assert res.returncode == 0, res
    page = (run["dir"] / "report.html").read_text(encoding="utf-8")
    assert f"<th>holdout.csv accuracy</th><td>{printed['accuracy'] * 100:.2f}%" in page
    assert (run["dir"] / "figures" / "confusion_matrix_holdout.csv.png").is_file()
    shutil.rmtree(run["dir"] / "evaluations")  # the module's run is shared: leave it as it was


# --- the files people export (issue 28) ----------------------------------------------------------------------------


def _class_folders(root, train_csv, n: int = 12):
    """The first ``n`` rows of ``train_csv`` as CLASS/NNN.txt files (the run's string labels as folder names)."""
    df = pd.read_csv(train_csv).head(n)
    for i, (label, text) in enumerate(zip(df["label"], df["text"])):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return root, df


def test_evaluate_and_predict_read_a_folder_of_texts_per_class(run, tmp_path):
    root, df = _class_folders(tmp_path / "test", run["train"])
    res = run_cli("evaluate", run["dir"], "--data", root, "--json")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["n"] == len(df)
    res, out = _predict(run, root, tmp_path)
    assert res.returncode == 0, res
    pred = pd.read_csv(out)
    assert sorted(pred["ID"]) == sorted(f"{lab}/{i:03d}.txt" for i, lab in enumerate(df["label"]))


def test_evaluate_takes_data_encoding_for_a_file_excel_saved(run, tmp_path):
    src = tmp_path / "export.csv"
    df = pd.read_csv(run["train"]).head(8)
    df["text"] = df["text"] + " – “café”"
    src.write_bytes(b"sep=,\r\n" + df.to_csv(index=False, lineterminator="\r\n").encode("cp1252"))
    fails(
        run_cli("evaluate", run["dir"], "--data", src), "export.csv", "is not UTF-8", "data.encoding=cp1252"
    )
    res = run_cli("evaluate", run["dir"], "--data", src, "--json", "data.encoding=cp1252")
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["n"] == 8


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("dup.csv", b"text,text,label\na,b,world\nc,d,sports\n", ("dup.csv", "column 'text' twice")),
        ("latin.csv", "label,text\nworld,café\nsports,goal\n".encode("latin-1"), ("data.encoding=latin-1",)),
        ("missing.csv", None, ("missing.csv", "not found")),
    ],
    ids=["duplicate-column", "encoding", "no-file"],
)
def test_train_input_mistakes_are_one_line_before_any_model_loads(run, tmp_path, name, content, fragments):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    res = run_cli("train", "--model", run["bert"], "--train", path, "--out", tmp_path / "r", *TINY)
    fails(res, *fragments)
    assert not (tmp_path / "r").exists()


# --- the cache folder is the user's own (code review, section 19) --------------------------------------------------


def test_a_new_cache_folder_is_owner_only(tmp_path, monkeypatch):
    from loraclf.utils.cache import cache_dir

    monkeypatch.setenv("LORACLF_CACHE", str(tmp_path / "new" / "cache"))
    assert cache_dir() == tmp_path / "new" / "cache"
    assert (tmp_path / "new" / "cache").stat().st_mode & 0o777 == 0o700


def test_a_cache_folder_others_may_write_is_refused_in_one_line(run, tmp_path, monkeypatch):
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("LORACLF_CACHE", str(shared))
    res, out = _predict(run, run["train"], tmp_path)
    fails(res, "shared-cache", "may be written by other users (mode 777)", "chmod 700")
    assert not out.exists()


def test_a_cache_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    """The fallback's name in /tmp is predictable: another user may have created it first."""
    import os

    from loraclf.utils.cache import cache_dir

    monkeypatch.setenv("LORACLF_CACHE", str(tmp_path))
    monkeypatch.setattr(os, "getuid", lambda: tmp_path.stat().st_uid + 1)  # as seen by another user
    with pytest.raises(UserError, match="belongs to another user"):
        cache_dir()
