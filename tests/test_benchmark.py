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
