"""The quick start's data away from this repository's neighbourhood (loraclf/data/hub_fetch.py), without a network.

The hub is replaced by a fake loader: unreachable → one line naming both ways to give data, exit 2, nothing
written; reachable → ``data/ag_news/{train,test}.csv`` in the layout the quick start reads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import cli_env
from loraclf.data import hub_fetch


@pytest.fixture
def away(tmp_path, monkeypatch):
    """A working directory with no ../shared/data beside it and no LORACLF_DATA."""
    work = tmp_path / "clone"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("LORACLF_DATA", raising=False)
    return work


def fake_hub(train_per_label: int = 30) -> dict[str, list[tuple[str, int]]]:
    train = [(f"train text {i} of class {i % 4}, with a comma", i % 4) for i in range(4 * train_per_label)]
    train += [(f"extra world story {i}", 0) for i in range(20)]  # unequal classes, as AG News' sample is
    test = [(f'test "quoted" text {i}', i % 4) for i in range(12)]
    return {"train": train, "test": test}


def test_unreachable_hub_is_one_line_with_both_ways_and_exit_2(away, monkeypatch, capsys):
    def offline():
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(hub_fetch, "_load_splits", offline)
    assert hub_fetch.main(["data"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    error = lines[-1]
    assert error.startswith("quickstart: error: ") and "\n" not in error
    assert "LORACLF_DATA=" in error and "connect to the hub" in error and "ConnectionError" in error
    assert not (away / "data" / "ag_news" / "train.csv").exists()


def test_reachable_hub_writes_the_quick_start_layout(away, monkeypatch, capsys):
    hub = fake_hub()
    monkeypatch.setattr(hub_fetch, "_load_splits", lambda: hub)
    assert hub_fetch.main(["data", "--train-rows", "70"]) == 0
    assert capsys.readouterr().out.strip() == "data"
    train = pd.read_csv(away / "data" / "ag_news" / "train.csv", keep_default_na=False)
    test = pd.read_csv(away / "data" / "ag_news" / "test.csv", keep_default_na=False)
    assert list(train.columns) == ["text", "label"] and list(test.columns) == ["text", "label"]
    assert list(zip(test["text"], test["label"])) == hub["test"]  # the test split whole, quotes intact
    assert set(train["label"]) == {0, 1, 2, 3}  # the hub's labels as they are
    assert len(train) == 70
    counts = train["label"].value_counts()
    assert counts[0] == round(70 * 50 / 140) and counts[1] == round(
        70 * 30 / 140
    )  # each class keeps its share
    assert set(zip(train["text"], train["label"])) <= set(hub["train"])
    assert not list((away / "data" / "ag_news").glob(".*tmp"))

    # The folder is reused: a second quick start does not go to the hub again.
    monkeypatch.setattr(hub_fetch, "_load_splits", lambda: pytest.fail("the hub was asked again"))
    assert hub_fetch.main(["data"]) == 0


def test_shared_data_and_loraclf_data_come_before_the_hub(tmp_path, monkeypatch, capsys):
    work = tmp_path / "repo"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("LORACLF_DATA", raising=False)
    monkeypatch.setattr(hub_fetch, "_load_splits", lambda: pytest.fail("the hub was asked"))
    assert hub_fetch.main([]) == 0
    assert capsys.readouterr().out.strip() == str(hub_fetch.SHARED)

    mine = tmp_path / "mine"
    (mine / "ag_news").mkdir(parents=True)
    (mine / "ag_news" / "train.csv").write_text("text,label\na,1\n")
    monkeypatch.setenv("LORACLF_DATA", str(mine))
    assert hub_fetch.main([]) == 0
    assert capsys.readouterr().out.strip() == str(mine)

    monkeypatch.setenv("LORACLF_DATA", str(tmp_path / "nowhere"))
    assert hub_fetch.main([]) == 2
    assert "holds no ag_news/train.csv" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["offline-mode", "closed-port"])
def test_the_real_loader_without_a_hub_says_so_in_one_line(tmp_path, how):
    """The default loader with the hub off (HF_HUB_OFFLINE=1) or unreachable (an endpoint on a closed loopback
    port; no network needed): exit 2, exactly one line on stderr, no retries, nothing written."""
    env = cli_env(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))
    env.pop("LORACLF_DATA", None)
    if how == "closed-port":
        env.pop("HF_HUB_OFFLINE")
        env.pop("HF_DATASETS_OFFLINE")
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens there
    (tmp_path / "clone").mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "loraclf.data.hub_fetch", "data"],
        cwd=tmp_path / "clone",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.count("LORACLF_DATA=") == 1 and "connect to the hub" in res.stderr
    assert not os.path.exists(tmp_path / "clone" / "data" / "ag_news" / "train.csv")


def test_stratified_sample_is_seeded_and_ordered():
    rows = fake_hub()["train"]
    a = hub_fetch.sample_stratified(rows, 40, seed=3)
    assert a == hub_fetch.sample_stratified(rows, 40, seed=3)
    assert a != hub_fetch.sample_stratified(rows, 40, seed=4)
    assert [rows.index(r) for r in a] == sorted(rows.index(r) for r in a)
    assert hub_fetch.sample_stratified(rows, 0) == rows
