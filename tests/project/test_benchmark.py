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


# --- shifted development sets: benchmarks/shift_sets.py and benchmarks/kaggle_dev.py -------------------------------


def load_script(name: str):
    """A benchmarks/ script as a module, so that its functions are tested directly."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_test_csv(path, per_class: int = 40):
    """A test.csv with AG News's quirks in its descriptions, ``per_class`` rows of each label 1-4."""
    import pandas as pd

    quirks = [
        "Nasa #39;s newest project. It was &lt;b&gt;big&lt;/b&gt; news for AT amp;T, which didn't say quot;yes quot;.",
        "Oracle Corp. raised its offer by \\$1.5 billion on Sept. 30. He is No. 1 in the U.S. market.",
        "SINGAPORE (Reuters) - Oil prices rose on Monday as traders bought\\contracts for the #36;50 mark",
        "Kenneth Bigley of Medtronic said the 2004 plan - a big one - works. I.B.M. is next.",
    ]
    rows = [
        (label, f"Title {i} of class {label}", quirks[i % 4])
        for i in range(per_class)
        for label in (1, 2, 3, 4)
    ]
    pd.DataFrame(rows, columns=["label", "title", "description"]).to_csv(path, index=False)
    return path


def test_description_only_tokenised_matches_ood_unlabeled_format():
    shift_sets = load_script("shift_sets")
    fmt = shift_sets.description_only_tokenised
    # "#39;" dropped, escaped markup removed with its text kept, "quot;"/"amp;" split, Treebank tokens.
    assert fmt(
        "Nasa #39;s newest project. It was &lt;b&gt;big&lt;/b&gt; news for AT amp;T, which didn't say quot;yes quot;."
    ) == ("Nasa s newest project .\tIt was big news for AT amp ; T , which did n't say quot ; yes quot ; .")
    # Sentences split as Punkt splits them: not after Corp., Sept. or U.S.; after "No." and an unknown initialism.
    assert fmt(
        "Oracle Corp. raised its offer by \\$1.5 billion on Sept. 30. He is No. 1 in the U.S. market. I.B.M. is next"
    ) == (
        "Oracle Corp. raised its offer by $ 1.5 billion on Sept. 30 .\tHe is No .\t1 in the U.S. market .\t"
        "I.B.M .\tis next"
    )
    assert fmt("A #36;5 deal\\for AT&T #151; done") == "A $ 5 deal for AT T -- done"
    assert fmt("") == ""


def test_shift_sets_builds_every_set_from_a_fake_test_csv(tmp_path):
    import numpy as np
    import pandas as pd

    shift_sets = load_script("shift_sets")
    test = pd.read_csv(fake_test_csv(tmp_path / "test.csv"))
    prior = {1: 0.55, 2: 0.15, 3: 0.15, 4: 0.15}
    sets = shift_sets.build_sets(test, seed=3, strength=0.6, prior=prior)
    assert list(sets) == list(shift_sets.SETS)
    for name, frame in sets.items():
        assert list(frame.columns) == ["label", "text"], name
    assert sets["clean"]["text"].tolist() == (test.title + " " + test.description).tolist()
    assert sets["title_only"]["text"].tolist() == test.title.tolist()
    assert all(
        frame["label"].tolist() == test.label.tolist() for n, frame in sets.items() if n != "prior_shift"
    )
    tokenised = sets["description_only_tokenised"]["text"]
    assert tokenised[0] == shift_sets.description_only_tokenised(test.description[0])
    assert not tokenised.str.contains("Title").any()
    one_sentence = test.description.str.startswith("SINGAPORE")  # the only one-sentence description
    assert (tokenised.str.contains("\t") == ~one_sentence).all()
    noised = sets["noised"]["text"]
    assert (noised != sets["clean"]["text"]).mean() > 0.9
    again = shift_sets.build_sets(test, seed=3, strength=0.6, prior=prior)["noised"]["text"]
    assert again.tolist() == noised.tolist()  # seeded
    plain = shift_sets.build_sets(test, seed=3, strength=0.0, prior=prior)["noised"]["text"]
    from loraclf.config import CleanConfig
    from loraclf.data.clean import clean_texts

    assert plain.tolist() == clean_texts(
        sets["clean"]["text"].tolist(), CleanConfig()
    )  # strength 0: cleaned only
    assert "#39;" not in " ".join(noised) and "&lt;" not in " ".join(noised)  # noise works on decoded text
    # 40 rows a class and 55/15/15/15: all 40 of label 1 and 10 of each other label, in test.csv's order.
    shifted = sets["prior_shift"]
    assert shifted["label"].value_counts().sort_index().tolist() == [40, 10, 10, 10]
    keep = shift_sets.prior_shift(test.label.to_numpy(), prior, np.random.default_rng(3))
    assert (np.diff(keep) > 0).all() and shifted["text"].tolist() == sets["clean"]["text"][keep].tolist()


def test_prior_shift_errors_and_parse_prior():
    import numpy as np
    import pytest

    shift_sets = load_script("shift_sets")
    labels = np.array([1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="no rows with label 4"):
        shift_sets.prior_shift(labels, {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sum to 1"):
        shift_sets.prior_shift(labels, {1: 0.5, 2: 0.6}, np.random.default_rng(0))
    assert shift_sets.parse_prior("55,15,15,15") == {1: 0.55, 2: 0.15, 3: 0.15, 4: 0.15}
    assert shift_sets.parse_prior("2,1,1,0") == {1: 0.5, 2: 0.25, 3: 0.25, 4: 0.0}
    with pytest.raises(SystemExit, match="--prior needs four non-negative shares"):
        shift_sets.parse_prior("50,50")


def test_shift_sets_script_writes_the_files_and_prints_the_mixes(tmp_path):
    import pandas as pd

    data = tmp_path / "data"
    (data / "ag_news").mkdir(parents=True)
    fake_test_csv(data / "ag_news" / "test.csv", per_class=11)
    out = tmp_path / "sets"
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "shift_sets.py"), "--data", str(data), "--out", str(out), "--seed", "1"],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("clean", "title_only", "description_only_tokenised", "noised", "prior_shift"):
        frame = pd.read_csv(out / f"{name}.csv")
        assert list(frame.columns) == ["label", "text"] and len(frame) == (
            20 if name == "prior_shift" else 44
        )
        assert f"{name}.csv" in res.stdout
    assert "labels 1:55% 2:15% 3:15% 4:15%" in res.stdout  # 11 of label 1, 3 of each other label
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "shift_sets.py"), "--data", str(tmp_path), "--out", str(out)],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert res.returncode != 0 and res.stderr.strip().splitlines()[-1].startswith("shift_sets: ")


def test_shift_sets_on_the_real_test_csv(data_dir, tmp_path):
    import pandas as pd

    out = tmp_path / "sets"
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "shift_sets.py"), "--data", str(data_dir), "--out", str(out)],
        capture_output=True, text=True, env=cli_env(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    test = pd.read_csv(data_dir / "ag_news" / "test.csv")
    sets = {
        name: pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        for name in load_script("shift_sets").SETS
    }
    for name in ("clean", "title_only", "description_only_tokenised", "noised"):
        assert len(sets[name]) == len(test) and sets[name]["label"].tolist() == test.label.tolist(), name
        assert (sets[name]["text"].str.strip() != "").all(), name
    shares = sets["prior_shift"]["label"].value_counts(normalize=True).sort_index()
    assert abs(shares[1] - 0.55) < 0.002 and all(abs(shares[k] - 0.15) < 0.002 for k in (2, 3, 4))
    assert len(sets["prior_shift"]) > 2000
    # The ood_unlabeled.csv format: tab-separated sentences in about a quarter of the rows, as there; no "&", no
    # backslash, no title; and about as many rows cut mid-sentence as there.
    tok = sets["description_only_tokenised"]["text"]
    assert 0.18 < tok.str.contains("\t").mean() < 0.30
    assert not tok.str.contains("&", regex=False).any() and not tok.str.contains("\\", regex=False).any()
    assert 0.07 < 1 - tok.str.rstrip().str.contains(r"(?:[.!?]|'')$").mean() < 0.17
    assert (sets["noised"]["text"] != sets["clean"]["text"]).mean() > 0.95


def test_kaggle_dev_labels_are_the_documented_sample():
    import numpy as np
    import pandas as pd

    labels = pd.read_csv(REPO / "benchmarks" / "data" / "kaggle_dev.csv")
    assert list(labels.columns) == ["id", "label", "machine", "unsure"]  # ids and labels only, no text
    first = np.sort(np.random.default_rng(2026).choice(8000, 400, replace=False))
    order = np.random.default_rng(2027).permutation(8000)
    second = np.sort([i for i in order if i not in set(first)][:400])
    assert labels["id"].tolist() == [*first, *second]  # the two draws benchmarks/data/README.md states
    assert set(labels["label"]) == {1, 2, 3, 4} and set(labels["machine"]) == set(labels["unsure"]) == {0, 1}
    readme = (REPO / "benchmarks" / "data" / "README.md").read_text()
    counts = labels.groupby("label")["machine"].agg(["size", "sum"])
    for label, row in counts.iterrows():  # the README's table agrees with the file
        assert (
            f"| {label} " in readme
            and f"| {row['size']} | {row['size'] - row['sum']} | {row['sum']} |" in readme
        )
    assert f"{int(labels['machine'].sum())} machine-written" in readme
    assert f"{int(labels['unsure'].sum())} unsure" in readme


def test_kaggle_dev_joins_labels_and_texts(tmp_path):
    import pandas as pd
    import pytest

    kaggle_dev = load_script("kaggle_dev")
    labels = pd.DataFrame({"id": [2, 0, 5], "label": [1, 4, 2], "machine": [1, 0, 1], "unsure": [0, 0, 1]})
    texts = pd.DataFrame({"id": range(6), "text": [f"text {i}" for i in range(6)]})
    sets = kaggle_dev.dev_sets(labels, texts)
    assert sets["all"].to_dict("list") == {"label": [1, 4, 2], "text": ["text 2", "text 0", "text 5"]}
    assert sets["real"].to_dict("list") == {"label": [4], "text": ["text 0"]}
    assert sets["machine"]["text"].tolist() == ["text 2", "text 5"]
    assert kaggle_dev.dev_sets(labels, texts, exclude_unsure=True)["machine"]["text"].tolist() == ["text 2"]
    with pytest.raises(SystemExit, match="not in the texts file"):
        kaggle_dev.dev_sets(labels, texts[texts.id != 5])
    with pytest.raises(SystemExit, match="id 2 is labelled twice"):
        kaggle_dev.dev_sets(pd.concat([labels, labels.head(1)]), texts)


def test_kaggle_dev_on_the_real_file(data_dir, tmp_path):
    import pandas as pd

    out = tmp_path / "dev"
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kaggle_dev.py"), "--data", str(data_dir), "--out", str(out)],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    labels = pd.read_csv(REPO / "benchmarks" / "data" / "kaggle_dev.csv")
    kaggle = pd.read_csv(data_dir / "ag_news" / "kaggle_test.csv").set_index("id")
    frames = {name: pd.read_csv(out / f"{name}.csv") for name in ("all", "real", "machine")}
    assert len(frames["all"]) == 800 and len(frames["machine"]) == int(labels.machine.sum())
    assert len(frames["real"]) + len(frames["machine"]) == 800
    assert frames["all"]["text"].tolist() == kaggle.loc[labels["id"], "text"].tolist()
    assert frames["all"]["label"].tolist() == labels["label"].tolist()


def test_tapt_benchmark_table_gives_mean_and_spread_per_arm():
    tapt = load_script("tapt")
    run = {"test": 0.9, "real": 0.92, "machine": 0.84, "seconds": 100.0}
    results = {"plain": [run, {**run, "machine": 0.86}], "tapt": [run]}
    lines = tapt.table(results).splitlines()
    assert lines[0] == "| arm | test | real | machine | train s |"
    assert lines[2].startswith("| plain | 90.00 ± 0.00 | 92.00 ± 0.00 | 85.00 ± 1.41 |")
    assert lines[3].startswith("| tapt | 90.00 ± 0.00 |")
