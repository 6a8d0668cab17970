"""Accuracy toolbox on a tiny BERT: several training files, the richness filter, pseudo-labelling, ensembles in
evaluate, and the compare leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import LABELS, make_rows, run_cli, write_text_csv
from loraclf.config import FilterConfig
from loraclf.data.tables import TextSet, richness_filter
from loraclf.toolbox.pseudo_label import select_confident

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


def ok(res):
    assert res.returncode == 0, res
    return res


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("toolbox-data")
    out = {
        "bert": tiny_bert_dir,
        "train": write_text_csv(d / "train.csv", 80, seed=0),
        "eval": write_text_csv(d / "eval.csv", 40, seed=5),
    }
    rows = make_rows(30, seed=11)
    pd.DataFrame({"id": range(30), "text": [f"{r[1]} {r[2]}" for r in rows]}).to_csv(
        d / "unlab.csv", index=False
    )
    out["unlab"] = d / "unlab.csv"
    out["unlab_truth"] = [r[0] for r in rows]
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, files) -> Path:
    out = tmp_path_factory.mktemp("toolbox-runs") / "base"
    ok(
        run_cli(
            "train", "--model", files["bert"], "--train", files["train"], "--eval", files["eval"], "--out", out,
            "--epochs", 4, *TINY,
        )
    )  # fmt: skip
    return out


# --- pure functions ------------------------------------------------------------------------------------------------


def test_select_confident_threshold_and_balance():
    probs = np.array(
        [[0.95, 0.05], [0.91, 0.09], [0.97, 0.03], [0.2, 0.8], [0.05, 0.95], [0.6, 0.4]], dtype=np.float64
    )
    assert select_confident(probs, 0.9, balance=False, seed=0).tolist() == [0, 1, 2, 4]
    # Class 1 has one confident row, so class 0 keeps only its single most confident row (row 2).
    assert select_confident(probs, 0.9, balance=True, seed=0).tolist() == [2, 4]
    assert select_confident(probs, 0.99, balance=True, seed=0).tolist() == []


def test_richness_filter_bounds_and_ratio():
    texts = ["a b c d e", "a a a a b", "one two", "w " * 30]
    ts = TextSet(texts, np.array([0, 1, 0, 1]), list(range(4)), "x.csv")
    kept, dropped = richness_filter(ts, FilterConfig(min_words=3, max_words=20, min_unique_ratio=0.7))
    assert kept.texts == ["a b c d e"] and dropped == 3
    same, none = richness_filter(ts, FilterConfig())
    assert same is ts and none == 0


def test_richness_filter_that_keeps_nothing_is_a_clear_error(files, tmp_path):
    res = run_cli(
        "train", "--model", files["bert"], "--train", files["train"], "--out", tmp_path / "r", *TINY,
        "data.filter.min_words=500",
    )  # fmt: skip
    assert res.returncode == 2 and "data.filter" in res.stderr and "loosen" in res.stderr
    assert not (tmp_path / "r").exists()


def test_filter_bounds_are_validated(files, tmp_path):
    res = run_cli("plan", "--model", files["bert"], "data.filter.min_unique_ratio=1.5")
    assert res.returncode == 2 and "data.filter.min_unique_ratio" in res.stderr


# --- several training files ----------------------------------------------------------------------------------------


def test_several_train_files_validation_from_the_first_and_derived_rows_left_out(files, tmp_path):
    # A second file of "augmented" rows: one copy of every first-file row, pointing back with `parent`.
    first = pd.read_csv(files["train"])
    aug = first.assign(text=first["text"] + " again", parent=range(len(first)))
    aug.to_csv(tmp_path / "aug.csv", index=False)
    out = tmp_path / "multi"
    res = ok(
        run_cli(
            "train", "--model", files["bert"], "--train", files["train"], "--train", tmp_path / "aug.csv",
            "--out", out, "--epochs", 1, "data.val_size=8", *TINY,
        )
    )  # fmt: skip
    info = json.loads((out / "run.json").read_text())
    data = info["data"]
    assert data["train_file"] == [str(files["train"].resolve()), str((tmp_path / "aug.csv").resolve())]
    # 8 validation rows come from the first file; their 8 augmented copies are left out of training.
    assert data["dropped_derived_from_validation"] == 8
    assert "8 augmented rows derived from validation rows" in res.stderr
    assert info["data"]["n_train"] == 2 * 80 - 8 - 8


def test_labels_missing_from_one_file_are_kept(files, tmp_path):
    extra = pd.DataFrame({"label": ["zeta"] * 6, "text": [f"zeta row {i}" for i in range(6)]})
    extra.to_csv(tmp_path / "extra.csv", index=False)
    out = tmp_path / "more-labels"
    ok(
        run_cli(
            "train", "--model", files["bert"], "--train", files["train"], "--train", tmp_path / "extra.csv",
            "--eval", files["eval"], "--out", out, "--epochs", 1, *TINY,
        )
    )  # fmt: skip
    assert json.loads((out / "labels.json").read_text())["labels"] == [*LABELS, "zeta"]


# --- pseudo-labelling ----------------------------------------------------------------------------------------------


def test_pseudo_label_writes_confident_rows_in_label_space(base_run, files, tmp_path):
    out = tmp_path / "pl.csv"
    res = ok(
        run_cli("pseudo-label", base_run, "--input", files["unlab"], "--output", out, "--threshold", "0.5")
    )
    df = pd.read_csv(out)
    assert list(df.columns) == ["text", "label", "confidence", "source"]
    assert len(df) > 0 and (df["confidence"] >= 0.5).all()
    assert set(df["label"]) <= set(LABELS)
    assert df["source"].iloc[0] == f"pseudo:{base_run.name}"
    # Balanced by default: every class present has the same count.
    assert df["label"].value_counts().nunique() == 1
    assert "kept" in res.stdout
    # The texts are the input's rows (a subset, in input order) and the labels mostly agree with the truth.
    unlab = pd.read_csv(files["unlab"])
    idx = [unlab["text"].tolist().index(t) for t in df["text"]]
    assert idx == sorted(idx)
    truth = [files["unlab_truth"][i] for i in idx]
    assert np.mean([a == b for a, b in zip(df["label"], truth)]) > 0.6


def test_pseudo_label_output_trains_as_a_second_file(base_run, files, tmp_path):
    pl = tmp_path / "pl.csv"
    ok(run_cli("pseudo-label", base_run, "--input", files["unlab"], "--output", pl, "--threshold", "0.3",
               "--no-balance"))  # fmt: skip
    out = tmp_path / "st"
    ok(
        run_cli(
            "train", "--model", files["bert"], "--train", files["train"], "--train", pl, "--eval", files["eval"],
            "--out", out, "--epochs", 1, *TINY,
        )
    )  # fmt: skip
    assert json.loads((out / "run.json").read_text())["data"]["n_train"] == 80 + len(pd.read_csv(pl))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "0.999999"], "lower the threshold"),
        (["--mc-dropout", "-1"], "--mc-dropout"),
    ],
)
def test_pseudo_label_bad_input(base_run, files, tmp_path, flags, message):
    res = run_cli("pseudo-label", base_run, "--input", files["unlab"], "--output", tmp_path / "x.csv", *flags)
    assert res.returncode == 2 and message in res.stderr
    assert not (tmp_path / "x.csv").exists()


# --- ensembles in evaluate -----------------------------------------------------------------------------------------


def test_evaluate_ensemble_of_the_same_run_equals_the_run(base_run, files):
    one = json.loads(ok(run_cli("evaluate", base_run, "--data", files["eval"], "--json", "--quiet")).stdout)
    two = json.loads(
        ok(run_cli("evaluate", base_run, base_run, "--data", files["eval"], "--json", "--quiet")).stdout
    )
    assert one["accuracy"] == two["accuracy"] and one["confusion_matrix"] == two["confusion_matrix"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)


def test_evaluate_mc_dropout_runs(base_run, files):
    res = ok(run_cli("evaluate", base_run, "--data", files["eval"], "--json", "--quiet", "--mc-dropout", 3))
    plain = ok(run_cli("evaluate", base_run, "--data", files["eval"], "--json", "--quiet"))
    mc, det = json.loads(res.stdout), json.loads(plain.stdout)
    assert mc["accuracy"] >= 0.5, mc  # still a classifier: well above the 0.25 of chance
    assert mc["loss"] != pytest.approx(det["loss"], rel=1e-6)  # the dropout passes really differ


# --- compare -------------------------------------------------------------------------------------------------------


def test_compare_trains_on_one_split_and_ranks(files, tmp_path):
    recipe = tmp_path / "lin.yaml"
    recipe.write_text(
        f"model: {{name: {files['bert']}, head: linear}}\nadapter: {{targets: [query, value]}}\n"
    )
    out = tmp_path / "cmp"
    args = [
        "compare", "head", f"lin={recipe}", "--model", files["bert"], "--train", files["train"],
        "--test", files["eval"], "--out", out, "--epochs", 2, "--json", "--quiet",
        "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1",
    ]  # fmt: skip
    rows = json.loads(ok(run_cli(*args)).stdout)
    assert {r["name"] for r in rows} == {"head", "lin"}
    by = {r["name"]: r for r in rows}
    assert by["head"]["method"] == "head" and by["lin"]["method"] == "lora"
    assert by["head"]["trainable"] < by["lin"]["trainable"]
    accs = [r["test_accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert (out / "leaderboard.csv").is_file()
    # Both entries held out the same validation rows.
    evals = [json.loads((out / n / "run.json").read_text())["data"]["n_eval"] for n in ("head", "lin")]
    assert evals[0] == evals[1]
    # A second call reuses the finished runs instead of training again.
    again = ok(run_cli(*[a for a in args if a != "--json"]))
    assert again.stdout.count("not retrained") == 2 and "leaderboard" in again.stdout


def test_compare_validates_every_entry_before_training(files, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli(
        "compare", "head", "nosuch.yaml", "--model", files["bert"], "--train", files["train"], "--out", out,
        "--quiet",
    )  # fmt: skip
    assert res.returncode == 2 and "nosuch.yaml" in res.stderr
    assert not (out / "head").exists()


def test_compare_over_seeds_reports_mean_and_spread(files, tmp_path):
    out = tmp_path / "cmp"
    args = [
        "compare", "head", "lora", "--model", files["bert"], "--train", files["train"], "--out", out,
        "--epochs", 1, "--seeds", "3,4", "--json", "--quiet",
        "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1",
    ]  # fmt: skip
    rows = json.loads(ok(run_cli(*args)).stdout)
    for r in rows:
        assert r["seeds"] == [3, 4]
        per_seed = [json.loads((out / r["name"] / f"seed-{s}" / "metrics.json").read_text()) for s in (3, 4)]
        accs = [m["accuracy"] for m in per_seed]
        assert r["val_accuracy"] == pytest.approx(np.mean(accs))
        assert r["val_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    text = ok(run_cli(*[a for a in args if a != "--json"])).stdout
    assert "±" in text and "mean ± standard deviation over seeds 3, 4" in text
    res = run_cli(*args[:-5], "--seed", "1", "--seeds", "1,2")
    assert res.returncode == 2 and "--seeds" in res.stderr


def test_compare_checks_the_test_file_before_training(files, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli(
        "compare", "head", "--model", files["bert"], "--train", files["train"], "--test", tmp_path / "nope.csv",
        "--out", out, "--quiet",
    )  # fmt: skip
    assert res.returncode == 2 and "nope.csv" in res.stderr
    assert not out.exists()


# --- distillation --------------------------------------------------------------------------------------------------


def test_distill_kl_is_the_tempered_kl_times_t_squared():
    import torch

    from loraclf.training.losses import distill_kl

    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    # Equal distributions cost nothing, whether the teacher comes as logits or log-probabilities.
    assert distill_kl(student, torch.log_softmax(student, -1), 2.0).item() == pytest.approx(0, abs=1e-6)
    t = 3.0
    p = torch.softmax(teacher / t, -1)
    by_hand = (p * (torch.log(p) - torch.log_softmax(student / t, -1))).sum(-1).mean() * t**2
    assert distill_kl(student, torch.log_softmax(teacher, -1), t).item() == pytest.approx(
        by_hand.item(), rel=1e-5
    )


def test_distillation_trains_students_and_runs_the_teacher_once(base_run, files, tmp_path, monkeypatch):
    from loraclf.inference.run import Run

    teacher_passes = []
    real = Run.predict_proba

    def counted(self, texts, *args, **kwargs):
        if Path(self.path).resolve() == base_run.resolve():
            teacher_passes.append(len(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(Run, "predict_proba", counted)
    for name, seed in (("student-1", 1), ("student-2", 2)):
        out = tmp_path / name
        ok(
            run_cli(
                "train", "--model", files["bert"], "--train", files["train"], "--eval", files["eval"], "--out", out,
                "--epochs", 2, "--seed", seed, *TINY, f"distill.teachers=[{base_run}]", "distill.alpha=0.7",
            )
        )  # fmt: skip
        info = json.loads((out / "run.json").read_text())
        assert info["data"]["teachers"] == [str(base_run.resolve())]
        assert json.loads((out / "metrics.json").read_text())["accuracy"] >= 0.5  # chance is 0.25
    # The second student (another seed, same rows) reuses the cached teacher probabilities.
    assert teacher_passes == [80]


def test_teachers_clean_the_raw_training_texts_their_own_way(base_run, files, tmp_path, monkeypatch):
    from loraclf.inference.run import Run

    # Digits and an HTML entity: the student drops digits, the teacher (trained with the defaults) keeps them.
    df = pd.read_csv(files["train"])
    df["text"] = [f"{t} in 2004 &amp; {i}" for i, t in enumerate(df["text"])]
    raw = tmp_path / "raw.csv"
    df.to_csv(raw, index=False)
    seen = []
    real = Run.predict_proba

    def spy(self, texts, *args, **kwargs):
        seen.append(list(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(Run, "predict_proba", spy)
    ok(
        run_cli(
            "train", "--model", files["bert"], "--train", raw, "--eval", files["eval"], "--out", tmp_path / "s",
            "--epochs", 1, *TINY, f"distill.teachers=[{base_run}]", "data.clean.digits=true",
        )
    )  # fmt: skip
    assert len(seen) == 1 and sorted(seen[0]) == sorted(df["text"])  # as in the file: the teacher cleans them


def test_teacher_with_other_labels_is_refused_before_training(base_run, files, tmp_path):
    df = pd.read_csv(files["train"])
    df["label"] = df["label"].map(lambda x: f"class-{x}")
    other = tmp_path / "other.csv"
    df.to_csv(other, index=False)
    res = run_cli(
        "train", "--model", files["bert"], "--train", other, "--out", tmp_path / "s", *TINY,
        f"distill.teachers=[{base_run}]",
    )  # fmt: skip
    assert res.returncode == 2 and "same label set" in res.stderr and "\n" not in res.stderr.strip()
    assert not (tmp_path / "s").exists()
