"""The speed benchmark runs end to end: reference Trainer pipeline and loraclf, on a tiny model and tiny data.

Only the mechanics are checked here (every command runs, the table has every measure); the speed numbers
themselves come from running benchmarks/speed.py alone on a real model (benchmarks/README.md).
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, cli_env, write_text_csv


def test_speed_benchmark_runs_on_tiny_data(tmp_path, tiny_bert_dir):
    data = tmp_path / "data"
    (data / "ag_news").mkdir(parents=True)
    write_text_csv(data / "ag_news" / "train.csv", n=160, seed=1)
    write_text_csv(data / "ag_news" / "test.csv", n=40, seed=2)
    res = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "speed.py"), "--data", str(data), "--model",
            str(tiny_bert_dir), "--train-rows", "64", "--eval-rows", "40", "--epochs", "1",
            "--workdir", str(tmp_path / "work"), "--tuned",
        ],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    table = res.stdout
    for measure in (
        "training samples/s",
        "prediction samples/s",
        "train command wall time",
        "predict command wall time",
        "peak RSS training",
        "accuracy on 40 test.csv rows",
    ):
        assert f"| {measure}" in table, table
    header = next(line for line in table.splitlines() if line.startswith("| measure"))
    assert "| reference (Trainer) | tuned Trainer (" in header and "| vs tuned Trainer |" in header, header
    # Every pipeline predicted every evaluation row, the tuned one back in input order after sorting by length.
    for name in ("ref_pred.csv", "tuned_pred.csv", "lc_pred.csv"):
        assert len((tmp_path / "work" / name).read_text().splitlines()) == 41
    # The tuned predict (merged adapter, rows sorted by length, padded per batch) given the reference's adapter
    # gives every row the reference predict's logits: sorting and unsorting keep each row's answer in its place.
    import numpy as np

    work = tmp_path / "work"
    for name, extra in (("plain", []), ("tuned", ["--tuned"])):
        res = subprocess.run(
            [
                sys.executable, str(REPO / "benchmarks" / "reference_pipeline.py"), "predict", "--model",
                str(tiny_bert_dir), "--adapter", str(work / "ref"), "--input", str(work / "test.csv"),
                "--output", str(work / f"{name}.csv"), "--logits", str(work / f"{name}.npy"), *extra,
            ],
            capture_output=True, text=True, env=cli_env(), timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
    plain, tuned = np.load(work / "plain.npy"), np.load(work / "tuned.npy")
    assert plain.shape == (40, 4) and np.ptp(plain, axis=0).min() > 1e-4  # rows differ, so order matters
    np.testing.assert_allclose(tuned, plain, atol=1e-4)


def test_shifted_proxy_writes_ood_style_rows(tmp_path):
    import pandas as pd

    src = tmp_path / "test.csv"
    pd.DataFrame(
        {
            "label": [3, 4],
            "title": ["t1", "t2"],
            "description": [
                "Unions say they are #39;disappointed#39; after talks with AT&amp;T. Workers didn't agree.",
                "SPACE.com - TORONTO, Canada -- A second\\team of rocketeers (Reuters) won  #36;10 million.",
            ],
        }
    ).to_csv(src, index=False)
    out = tmp_path / "shifted.csv"
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "shifted_proxy.py"), str(src), str(out)],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    df = pd.read_csv(out)
    assert list(df.columns) == ["label", "text"] and df["label"].tolist() == [3, 4]
    first, second = df["text"]
    # Description only, entities decoded, Treebank tokens, "&" dropped, sentences joined by a tab.
    assert first == "Unions say they are 'disappointed ' after talks with AT T .\tWorkers did n't agree ."
    assert (
        "second team" in second
        and "( Reuters )" in second
        and "$ 10 million" in second
        and "t2" not in second
    )


def test_cpu_profile_reports_the_limit_and_the_breakdown(tmp_path, tiny_bert_dir):
    data = tmp_path / "data"
    (data / "ag_news").mkdir(parents=True)
    write_text_csv(data / "ag_news" / "train.csv", n=400, seed=1)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"model: {{name: '{tiny_bert_dir}'}}\nadapter: {{method: lora, r: 4}}\ntrain: {{batch_size: 8}}\n"
    )
    res = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "cpu_profile.py"), "--data", str(data), "--recipe",
            str(recipe), "--rows", "64",
        ],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    # Three GEMM shapes at the recipe's micro-batch, a positive limit and rate, and the op categories.
    assert out.count("GFLOP/s\n") >= 4, out
    limit = float(out.split("fp32 limit of this CPU: ")[1].split()[0])
    speed = float(out.split("one epoch: ")[1].split()[0])
    assert limit > 0 and speed > 0, out
    assert "matrix products" in out and "aten::" in out, out


def test_int8_profile_reports_the_limit_and_the_operators(tmp_path, tiny_bert_dir):
    train = write_text_csv(tmp_path / "train.csv", n=80, seed=1)
    test = write_text_csv(tmp_path / "test.csv", n=48, seed=2)
    run = tmp_path / "run"
    env = cli_env(LORACLF_CACHE=str(tmp_path / "cache"))
    res = subprocess.run(
        [
            sys.executable, "-m", "loraclf", "train", "--model", str(tiny_bert_dir), "--train", str(train),
            "--out", str(run), "--epochs", "1", "--quiet", "train.batch_size=8", "model.head=linear",
        ],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "int8_profile.py"), str(run), "--data", str(test), "--rows", "32"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert out.startswith("32 rows of "), out
    # One line per weight shape of the tiny graph, the limit, the measured rate and its fraction, the operators.
    assert out.count("GOP/s, fp32") >= 2, out
    limit = float(out.split("int8 limit of this CPU: ")[1].split()[0])
    rate = float(out.split("scoring: ")[1].split()[0])
    assert limit > 0 and rate > 0, out
    assert "% of the limit" in out and "MatMul" in out.split("by operator:")[1], out
