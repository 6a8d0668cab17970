"""Temperature scaling kept in the run, applied by every prediction path; calibration error; prior correction.

Synthetic logits check the fit and the measures against known answers; a tiny BERT run (trained for a few steps)
checks what a user sees: run.json's ``calibration``, ``predict --probabilities`` equal to the softmax of the model's
logits over the stored temperature on both engines (PyTorch and the PyTorch-free cached int8 graph), unchanged
labels, ``--no-calibration``, old runs without a temperature, evaluate's loss, the report's section,
``--prior-correction`` and ``--match-priors``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import loraclf
from conftest import LABELS, make_rows, run_cli, write_text_csv
from loraclf.inference import calibration as cal
from loraclf.inference.label_shift import em_priors, match_priors, parse_mix
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "model.head=linear", "train.threads=1"]


def ok(res):
    assert res.returncode == 0, res
    return res


# --- the fit and the measures, on synthetic numbers ------------------------------------------------------------------


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_fit_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(40_000, 4))
    # Labels drawn from softmax(logits / T): the model is exactly calibrated at T, so the NLL fit must find it.
    p = cal.softmax(logits / true_t)
    labels = (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)
    assert abs(cal.fit_temperature(logits, labels) - true_t) < 0.05 * true_t
    # Log-probabilities differ from logits by one constant per row: the same fit.
    assert cal.fit_temperature(cal.log_probs(cal.softmax(logits)), labels) == pytest.approx(
        cal.fit_temperature(logits, labels), rel=1e-4
    )


def test_scaled_probabilities_are_the_softmax_of_logits_over_t_and_keep_the_argmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, size=(500, 5))
    probs = cal.softmax(logits)
    for t in (0.3, 1.0, 1.7, 6.0):
        scaled = cal.scale(probs, t)
        np.testing.assert_allclose(scaled, cal.softmax(logits / t), rtol=0, atol=1e-12)
        assert (scaled.argmax(1) == probs.argmax(1)).all()
    assert cal.scale(probs, 2.0).max(1).mean() < probs.max(1).mean()  # T > 1 softens


def test_reliability_bins_and_ece_by_hand():
    # Top-class probabilities 0.95 (correct), 0.95 (wrong), 0.55 (correct), 0.4 (correct); 3 classes.
    probs = np.array([[0.95, 0.03, 0.02], [0.95, 0.03, 0.02], [0.25, 0.55, 0.20], [0.4, 0.35, 0.25]])
    labels = np.array([0, 1, 1, 0])
    bins = cal.reliability_bins(probs, labels, n_bins=10)
    assert bins["count"] == [0, 0, 0, 1, 0, 1, 0, 0, 0, 2]  # 0.4 sits in (0.3, 0.4], 0.55 in (0.5, 0.6]
    assert bins["accuracy"][9] == 0.5 and bins["confidence"][9] == pytest.approx(0.95)
    assert bins["accuracy"][0] is None
    # ECE = (2·|0.5 − 0.95| + 1·|1 − 0.55| + 1·|1 − 0.4|) / 4
    assert cal.ece(probs, labels, n_bins=10) == pytest.approx((2 * 0.45 + 0.45 + 0.6) / 4)


def test_calibrate_record_lowers_nll_of_an_overconfident_model():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, size=(3000, 4))
    p = cal.softmax(logits)
    labels = (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)
    record = cal.calibrate(cal.softmax(logits * 3), labels, announce=False)  # 3× over-confident
    assert record["temperature"] == pytest.approx(3.0, rel=0.1)
    assert record["nll_after"] < record["nll_before"] and record["ece_after"] < record["ece_before"]
    assert record["validation"]["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert record["validation"]["n"] == 3000
    assert set(record["bins"]) == {"before", "after"} and len(record["bins"]["after"]["count"]) == cal.N_BINS
    json.dumps(record)  # run.json holds it as is


def test_a_fit_that_runs_to_its_bound_keeps_t_1_and_says_why():
    rng = np.random.default_rng(5)
    probs = cal.softmax(rng.normal(0, 2, size=(50, 4)))
    record = cal.calibrate(probs, probs.argmax(1), announce=False)  # every row correct: T would run to 0
    assert record["temperature"] == 1.0 and "bound" in record["note"]
    assert record["nll_after"] == record["nll_before"]
    # Labels unrelated to the probabilities (a model at chance): T would run to infinity, the same answer.
    chance = cal.calibrate(
        cal.softmax(rng.normal(0, 2, size=(500, 4))), rng.integers(0, 4, 500), announce=False
    )
    assert chance["temperature"] == 1.0 and "bound" in chance["note"]
    logits = rng.normal(0, 2, size=(500, 4))
    labels = (cal.softmax(logits).cumsum(axis=1) > rng.random((500, 1))).argmax(axis=1)
    ordinary = cal.calibrate(cal.softmax(3 * logits), labels, announce=False)
    assert ordinary["temperature"] > 1.5 and "note" not in ordinary


@pytest.mark.parametrize("bad", [None, {}, {"temperature": -1}, {"temperature": "2"}, {"temperature": True}])
def test_a_missing_or_unusable_temperature_means_none(bad):
    assert cal.temperature_of(bad) == 1.0
    assert cal.temperature_of({"temperature": 1.8}) == 1.8


# --- prior correction (Saerens et al. 2002) --------------------------------------------------------------------------


def _label_shift_sample(priors, n, rng):
    """Rows from three 1-D Gaussian classes (means −2, 0, 2, sd 1) drawn with ``priors``, and the exact posteriors
    under equal training priors: a calibrated model, so EM's assumptions hold exactly."""
    y = rng.choice(3, size=n, p=priors)
    x = rng.normal(np.array([-2.0, 0.0, 2.0])[y], 1.0)
    loglik = -0.5 * (x[:, None] - np.array([-2.0, 0.0, 2.0])[None, :]) ** 2
    return y, cal.softmax(loglik)


def test_prior_correction_recovers_known_priors():
    rng = np.random.default_rng(3)
    true = np.array([0.7, 0.2, 0.1])
    y, probs = _label_shift_sample(true, 30_000, rng)
    priors, corrected = em_priors(probs, np.full(3, 1 / 3))
    np.testing.assert_allclose(priors, true, atol=0.015)
    assert abs(probs.mean(0)[0] - true[0]) > 0.05  # the uncorrected mean posterior is off: EM did the work
    np.testing.assert_allclose(corrected.sum(1), 1.0)
    assert (corrected.argmax(1) == y).mean() > (probs.argmax(1) == y).mean()  # and it helps the labels
    # No shift: EM stays at the training priors.
    _, same = _label_shift_sample(np.full(3, 1 / 3), 30_000, rng)
    np.testing.assert_allclose(em_priors(same, np.full(3, 1 / 3))[0], 1 / 3, atol=0.015)


def test_prior_matching_meets_the_mix_and_undoes_a_lean_that_em_would_keep():
    rng = np.random.default_rng(4)
    y, probs = _label_shift_sample(np.full(3, 1 / 3), 30_000, rng)
    # A model that leans to class 2 on shifted text: its logits gain 1.2 there; the file's mix is still equal.
    leaning = cal.softmax(np.log(probs) + np.array([0.0, 0.0, 1.2]))
    offsets, matched = match_priors(leaning, np.full(3, 1 / 3))
    np.testing.assert_allclose(matched.mean(0), 1 / 3, atol=1e-7)  # the promise: the mean equals the mix
    np.testing.assert_allclose(matched.sum(1), 1.0)
    assert offsets.sum() == pytest.approx(0.0, abs=1e-12)
    assert offsets[2] - offsets[:2].mean() == pytest.approx(-1.2, abs=0.05)  # the lean found and taken off
    assert (matched.argmax(1) == y).mean() > (leaning.argmax(1) == y).mean() + 0.02
    assert (matched.argmax(1) == y).mean() == pytest.approx((probs.argmax(1) == y).mean(), abs=0.003)
    assert em_priors(leaning, np.full(3, 1 / 3))[0][2] > 0.45  # EM reads the lean as a new mix instead
    # A given mix other than equal shares, met as well; no rows: nothing to move.
    np.testing.assert_allclose(match_priors(leaning, np.array([2.0, 1.0, 1.0]))[1].mean(0), [0.5, 0.25, 0.25])
    assert match_priors(np.zeros((0, 3)), np.full(3, 1 / 3))[1].shape == (0, 3)
    with pytest.raises(ValueError, match="3 positive shares"):
        match_priors(leaning, np.array([0.5, 0.5, 0.0]))


def test_a_class_mix_is_read_as_label_share_pairs():
    np.testing.assert_allclose(parse_mix("b=1, a=3", ["a", "b"], "--match-priors"), [0.75, 0.25])
    np.testing.assert_allclose(parse_mix("1=0.2,2=0.8", [1, 2], "--match-priors"), [0.2, 0.8])
    np.testing.assert_allclose(parse_mix("uniform", ["a", "b", "c", "d"], "--match-priors"), 0.25)
    for bad, why in [
        ("a=1", "no share for b"),
        ("a=1,c=1", "'c=1' is not LABEL=SHARE"),
        ("a=1,a=2,b=1", "label 'a' is given twice"),
        ("a=0,b=1", "'a=0': the share must be a positive number"),
        ("a=x,b=1", "'a=x': the share must be a positive number"),
        ("a=nan,b=1", "must be a positive number"),
        ("a", "'a' is not LABEL=SHARE"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_mix(bad, ["a", "b"], "--match-priors")


def test_prior_correction_rejects_priors_that_do_not_fit():
    with pytest.raises(ValueError):
        em_priors(np.full((4, 3), 1 / 3), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        em_priors(np.full((4, 3), 1 / 3), np.array([0.5, 0.5, 0.0]))


# --- a tiny trained run ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_bert_dir) -> dict:
    d = tmp_path_factory.mktemp("calibration")
    train_csv = write_text_csv(d / "train.csv", 80, seed=0)
    eval_csv = write_text_csv(d / "eval.csv", 40, seed=5)
    run = d / "run"
    ok(run_cli("train", "--model", tiny_bert_dir, "--train", train_csv, "--eval", eval_csv, "--out", run,
               "--epochs", "2", *TINY))  # fmt: skip
    texts = [f"{r[1]} {r[2]}" for r in make_rows(24, seed=9)]
    texts[3] = "parliament football chip profit"  # an ambiguous row: probabilities far from 0 and 1
    inp = d / "input.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(inp, index=False)
    return {"run": run, "input": inp, "texts": texts, "eval": eval_csv, "dir": d}


def _copy_with_temperature(tiny, dest: Path, temperature: float | None) -> Path:
    """A copy of the run with run.json's temperature set (None: no calibration key, as in older runs)."""
    shutil.copytree(tiny["run"], dest)
    info = json.loads((dest / "run.json").read_text())
    if temperature is None:
        info.pop("calibration")
    else:
        info["calibration"]["temperature"] = temperature
    (dest / "run.json").write_text(json.dumps(info))
    return dest


def _predicted(run: Path, inp: Path, out: Path, *flags) -> tuple[list, np.ndarray]:
    ok(run_cli("predict", run, "--input", inp, "--output", out, "--probabilities", "--quiet", *flags))
    df = pd.read_csv(out)
    return df["Label"].tolist(), df[[f"prob_{lab}" for lab in LABELS]].to_numpy()


def _logits(run: Path, texts: list[str]) -> np.ndarray:
    """The trained model's own logits, one row at a time (no padding), in fp32."""
    model_run = loraclf.load(run, precision="fp32")
    rows = []
    with torch.no_grad():
        for ids in model_run.encode(texts):
            x = torch.tensor(np.asarray(ids)[None, :], dtype=torch.long)
            rows.append(model_run.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].numpy())
    return np.asarray(rows, dtype=np.float64)


def test_training_keeps_a_fitted_temperature_in_run_json(tiny):
    info = json.loads((tiny["run"] / "run.json").read_text())
    c = info["calibration"]
    assert c["temperature"] > 0 and c["n"] == 40
    assert {"ece_before", "ece_after", "nll_before", "nll_after", "bins", "validation"} <= set(c)
    assert (
        c["nll_after"] <= c["nll_before"] + 1e-9
    )  # the fit minimises exactly this NLL; T = 1 is a candidate
    metrics = json.loads((tiny["run"] / "metrics.json").read_text())
    assert c["validation"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert c["nll_before"] == pytest.approx(
        metrics["loss"], rel=1e-6
    )  # fitted on the final evaluation's rows


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_calibrated_probabilities_are_the_softmax_of_the_logits_over_the_stored_temperature(
    tiny, tmp_path, precision
):
    run = _copy_with_temperature(tiny, tmp_path / "run", 3.0)
    labels, p = _predicted(run, tiny["input"], tmp_path / "p.csv", "--precision", precision)
    raw_labels, raw = _predicted(run, tiny["input"], tmp_path / "raw.csv", "--precision", precision,
                                 "--no-calibration")  # fmt: skip
    if precision == "fp32":
        np.testing.assert_allclose(p, cal.softmax(_logits(run, tiny["texts"]) / 3.0), rtol=0, atol=1e-5)
        np.testing.assert_allclose(raw, cal.softmax(_logits(run, tiny["texts"])), rtol=0, atol=1e-5)
    else:  # the int8 graph's logits are its own: check against its raw softmax
        np.testing.assert_allclose(p, cal.scale(raw, 3.0), rtol=0, atol=1e-6)
    assert np.abs(p - raw).max() > 0.01  # the temperature really moved the probabilities
    assert labels == raw_labels  # and never a label


def test_cached_int8_path_applies_the_temperature_like_the_full_path(tiny, tmp_path):
    from loraclf.inference.int8_runtime import open_cached

    run = _copy_with_temperature(tiny, tmp_path / "run", 2.0)
    full = loraclf.load(run, precision="int8")  # exports the graph when the cache has none yet
    cached = open_cached(run)
    assert cached is not None and cached.temperature == full.temperature == 2.0
    np.testing.assert_allclose(
        cached.predict_proba(tiny["texts"]), full.predict_proba(tiny["texts"]), atol=1e-9
    )
    raw = open_cached(run, calibration=False)
    assert raw.temperature == 1.0
    np.testing.assert_allclose(
        cached.predict_proba(tiny["texts"]), cal.scale(raw.predict_proba(tiny["texts"]), 2.0), atol=1e-9
    )


def test_a_run_without_calibration_still_predicts_with_the_raw_softmax(tiny, tmp_path):
    run = _copy_with_temperature(tiny, tmp_path / "old", None)
    assert loraclf.load(run, precision="fp32").temperature == 1.0
    labels, p = _predicted(run, tiny["input"], tmp_path / "p.csv", "--precision", "fp32")
    _, raw = _predicted(
        tiny["run"], tiny["input"], tmp_path / "raw.csv", "--precision", "fp32", "--no-calibration"
    )
    assert len(labels) == len(tiny["texts"])
    np.testing.assert_allclose(p, raw, atol=1e-9)


def test_evaluate_loss_uses_the_calibrated_probabilities(tiny, tmp_path):
    run = _copy_with_temperature(tiny, tmp_path / "run", 3.0)
    got = json.loads(ok(run_cli("evaluate", run, "--data", tiny["eval"], "--json", "--precision", "fp32",
                                "--quiet")).stdout)  # fmt: skip
    raw = json.loads(ok(run_cli("evaluate", run, "--data", tiny["eval"], "--json", "--precision", "fp32",
                                "--quiet", "--no-calibration")).stdout)  # fmt: skip
    truth = pd.read_csv(tiny["eval"])["label"].map(LABELS.index).to_numpy()
    logits = _logits(run, pd.read_csv(tiny["eval"])["text"].tolist())
    assert got["loss"] == pytest.approx(cal.nll(cal.softmax(logits / 3.0), truth), rel=1e-4)
    assert raw["loss"] == pytest.approx(cal.nll(cal.softmax(logits), truth), rel=1e-4)
    assert got["accuracy"] == raw["accuracy"]


def test_report_has_a_calibration_section(tiny):
    page = (tiny["run"] / "report.html").read_text(encoding="utf-8")
    assert "<h2>Calibration</h2>" in page
    assert (tiny["run"] / "figures" / "reliability.png").is_file()
    assert "expected calibration error" in page


def test_predict_prior_correction_reweights_to_em_priors(tiny, tmp_path):
    run = tiny["run"]
    # A file where one class dominates: 3 of every 4 rows are sports.
    rows = [r for r in make_rows(160, seed=21) if r[0] == "sports"][:30] + make_rows(12, seed=22)
    inp = tmp_path / "skewed.csv"
    pd.DataFrame({"text": [f"{r[1]} {r[2]}" for r in rows]}).to_csv(inp, index=False)
    res = ok(run_cli("predict", run, "--input", inp, "--output", tmp_path / "pc.csv", "--probabilities",
                     "--quiet", "--prior-correction", "--precision", "fp32"))  # fmt: skip
    _, base = _predicted(run, inp, tmp_path / "base.csv", "--precision", "fp32")
    corrected = pd.read_csv(tmp_path / "pc.csv")[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    counts = json.loads((run / "run.json").read_text())["data"]["train_label_counts"]
    priors, want = em_priors(base, np.asarray(counts) / sum(counts))
    np.testing.assert_allclose(corrected, want, atol=2e-5)  # the file holds 6 decimals
    assert priors[LABELS.index("sports")] > 0.6  # the skew is found
    line = [x for x in res.stderr.splitlines() if x.startswith("prior correction:")]
    assert len(line) == 1 and f"sports {priors[LABELS.index('sports')]:.1%}" in line[0]


def _without_training_counts(tiny, run: Path) -> Path:
    """A copy of the tiny run whose run.json records no training class counts (runs trained before they were)."""
    shutil.copytree(tiny["run"], run)
    info = json.loads((run / "run.json").read_text())
    del info["data"]["train_label_counts"]
    (run / "run.json").write_text(json.dumps(info))
    return run


def test_prior_correction_without_training_counts_is_one_line_exit_2(tiny, tmp_path):
    run = _without_training_counts(tiny, tmp_path / "run")
    res = run_cli(
        "predict", run, "--input", tiny["input"], "--output", tmp_path / "p.csv", "--prior-correction"
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "train_label_counts" in res.stderr
    assert not (tmp_path / "p.csv").exists()


def test_python_api_prior_correction_matches_em_on_its_own_probabilities(tiny):
    run = loraclf.load(tiny["run"], precision="fp32")
    base = run.predict_proba(tiny["texts"])
    counts = np.asarray(run.info.data["train_label_counts"], dtype=float)
    want = em_priors(base, counts / counts.sum())[1]
    got = run.predict_proba(tiny["texts"], prior_correction=True)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert np.abs(got - base).max() > 1e-3  # the correction moved something


def test_predict_match_priors_meets_the_training_mix(tiny, tmp_path):
    run = tiny["run"]
    # A file of sports rows and a few others: matching forces the training mix on it all the same (the user says
    # the mix is known), which is what tells it from --prior-correction.
    rows = [r for r in make_rows(160, seed=21) if r[0] == "sports"][:30] + make_rows(12, seed=22)
    inp = tmp_path / "skewed.csv"
    pd.DataFrame({"text": [f"{r[1]} {r[2]}" for r in rows]}).to_csv(inp, index=False)
    res = ok(run_cli("predict", run, "--input", inp, "--output", tmp_path / "m.csv", "--probabilities",
                     "--quiet", "--match-priors", "--precision", "fp32"))  # fmt: skip
    _, base = _predicted(run, inp, tmp_path / "base.csv", "--precision", "fp32")
    got = pd.read_csv(tmp_path / "m.csv")[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    counts = np.asarray(json.loads((run / "run.json").read_text())["data"]["train_label_counts"], dtype=float)
    offsets, want = match_priors(base, counts / counts.sum())
    np.testing.assert_allclose(got, want, atol=2e-5)  # the file holds 6 decimals
    np.testing.assert_allclose(got.mean(0), counts / counts.sum(), atol=1e-4)
    line = [x for x in res.stderr.splitlines() if x.startswith("prior matching:")]
    assert len(line) == 1 and "only 42 rows" in line[0]
    sports = LABELS.index("sports")
    assert f"sports {counts[sports] / counts.sum():.1%} ({offsets[sports]:+.2f})" in line[0]
    # A mix given on the command line, in label spelling.
    mix = ",".join(f"{lab}={4 if lab == 'sports' else 1}" for lab in LABELS)
    ok(run_cli("predict", run, "--input", inp, "--output", tmp_path / "g.csv", "--probabilities", "--quiet",
               "--match-priors", mix, "--precision", "fp32"))  # fmt: skip
    given = pd.read_csv(tmp_path / "g.csv")[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    assert given.mean(0)[sports] == pytest.approx(4 / (len(LABELS) + 3), abs=1e-4)
    ok(run_cli("predict", run, "--input", inp, "--output", tmp_path / "u.csv", "--probabilities", "--quiet",
               "--match-priors", "uniform", "--precision", "fp32"))  # fmt: skip
    uniform = pd.read_csv(tmp_path / "u.csv")[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    np.testing.assert_allclose(uniform.mean(0), 1 / len(LABELS), atol=1e-4)


@pytest.mark.parametrize(
    "flags, why",
    [
        (["--match-priors", "--prior-correction"], "contradict each other"),
        (["--match-priors", "sports=1"], "--match-priors: no share for"),
        (["--match-priors", "football=1"], "--match-priors: 'football=1' is not LABEL=SHARE"),
        (["--match-priors", "data.text_column=body"], "is a recipe override, not a class mix"),
    ],
)
def test_bad_match_priors_is_one_line_exit_2_and_writes_nothing(tiny, tmp_path, flags, why):
    out = tmp_path / "p.csv"
    res = run_cli("predict", tiny["run"], "--input", tiny["input"], "--output", out, *flags)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and why in res.stderr, res.stderr
    assert not out.exists()


def test_match_priors_without_training_counts_asks_for_the_mix(tiny, tmp_path):
    run = _without_training_counts(tiny, tmp_path / "run")
    res = run_cli("predict", run, "--input", tiny["input"], "--output", tmp_path / "p.csv", "--match-priors")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "train_label_counts" in res.stderr and "--match-priors LABEL=SHARE" in res.stderr
    # Given the mix, it needs no counts.
    mix = ",".join(f"{lab}=1" for lab in LABELS)
    ok(run_cli("predict", run, "--input", tiny["input"], "--output", tmp_path / "p.csv", "--match-priors", mix,
               "--quiet"))  # fmt: skip


def test_python_api_match_priors_matches_on_its_own_probabilities(tiny):
    run = loraclf.load(tiny["run"], precision="fp32")
    base = run.predict_proba(tiny["texts"])
    counts = np.asarray(run.info.data["train_label_counts"], dtype=float)
    want = match_priors(base, counts / counts.sum())[1]
    np.testing.assert_allclose(run.predict_proba(tiny["texts"], match_priors=True), want, atol=1e-9)
    given = run.predict_proba(tiny["texts"], match_priors={lab: 1 for lab in LABELS})
    np.testing.assert_allclose(given.mean(0), 1 / len(LABELS), atol=1e-6)
    np.testing.assert_allclose(run.predict_proba(tiny["texts"], match_priors="uniform"), given, atol=1e-12)
    with pytest.raises(UserError, match="contradict"):
        run.predict_proba(tiny["texts"], match_priors=True, prior_correction=True)
    with pytest.raises(UserError, match="no share for"):
        run.predict_proba(tiny["texts"], match_priors={LABELS[0]: 1})
    np.testing.assert_allclose(run.predict_proba(tiny["texts"], match_priors="train"), want, atol=1e-9)
    for bad, why in [(np.ones(4), "give True, 'train', 'uniform'"), ({"football": 1}, "not a label of the run"),
                     ({lab: -1 for lab in LABELS}, "must be a positive number")]:  # fmt: skip
        with pytest.raises(UserError, match=why):
            run.predict_proba(tiny["texts"], match_priors=bad)
