"""The frozen-layer cache: adapters from layer k up, layers below k computed once and replayed.

A run with the cache must train like the same run without it (fp32, no dropout: the same losses up to rounding),
on BERT (mean pooling), RoBERTa (its own head) and GPT-2 (its own last-token head, causal attention).
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli, write_text_csv
from loraclf.config import AdapterConfig, ModelConfig
from loraclf.modeling.backbones import build_model
from loraclf.modeling.methods import apply_adapters
from loraclf.training.frozen import block_list, first_trainable_layer

TINY = [
    "--quiet", "train.batch_size=8", "train.lr=2e-2", "train.threads=1", "train.precision=fp32",
    "model.dropout=0", "adapter.dropout=0", "model.head_dropout=0", "--epochs", "2",
]  # fmt: skip
ARCHS = {
    "bert": ["model.head=linear"],
    "roberta": ["model.head=default", "adapter.targets=query,value"],
    "gpt2": ["model.head=default", "adapter.targets=c_attn"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dirs):
    d = tmp_path_factory.mktemp("frozen")
    for name in ("roberta", "gpt2"):  # give the backbones without a tokenizer the BERT word-level one
        for f in tiny_model_dirs["bert"].iterdir():
            if "token" in f.name or f.name == "vocab.txt":
                (tiny_model_dirs[name] / f.name).write_bytes(f.read_bytes())
    return {
        "train": write_text_csv(d / "train.csv", 64, seed=0),
        "eval": write_text_csv(d / "eval.csv", 24, seed=5),
    }


def _train(model_dir, data, out, *extra):
    res = run_cli(
        "train", "--model", model_dir, "--train", data["train"], "--eval", data["eval"], "--out", out, *TINY, *extra
    )  # fmt: skip
    assert res.returncode == 0, res
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return res, history, json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_cached_run_trains_like_the_uncached_one(tiny_model_dirs, data, tmp_path, arch):
    extra = [*ARCHS[arch], "adapter.layers=1"]
    res, cached, m_cached = _train(tiny_model_dirs[arch], data, tmp_path / "cached", *extra)
    assert "frozen-layer cache: layers 0-0 computed once for 64 rows" in res.stderr
    cached_err = res.stderr
    res, plain, m_plain = _train(
        tiny_model_dirs[arch], data, tmp_path / "plain", *extra, "train.cache_frozen=false"
    )
    assert "frozen-layer cache" not in res.stderr
    # The stand-ins hold no weights; the parameter line still counts the whole model.
    counted = re.search(r"training ([\d,]+) of ([\d,]+) parameters", res.stderr).groups()
    assert counted == re.search(r"training ([\d,]+) of ([\d,]+) parameters", cached_err).groups()
    assert [h["step"] for h in cached] == [h["step"] for h in plain]
    for a, b in zip(cached, plain):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-4)
    assert m_cached["accuracy"] == m_plain["accuracy"]
    assert m_cached["loss"] == pytest.approx(m_plain["loss"], rel=1e-3, abs=1e-4)


def test_no_cache_when_layer_0_or_anything_outside_the_blocks_trains(tiny_model_dirs, data, tmp_path):
    res, _, _ = _train(tiny_model_dirs["bert"], data, tmp_path / "all", *ARCHS["bert"])
    assert "frozen-layer cache" not in res.stderr
    res, _, _ = _train(
        tiny_model_dirs["bert"],
        data,
        tmp_path / "bias",
        *ARCHS["bert"],
        "adapter.layers=1",
        "adapter.bias=all",
    )
    assert "frozen-layer cache" not in res.stderr  # bias=all trains the embeddings' LayerNorm bias too


@pytest.mark.parametrize(
    ("adapter", "expected"),
    [
        (AdapterConfig(layers=[1]), 1),
        (AdapterConfig(), 0),
        (AdapterConfig(layers=[1], bias="lora_only"), 1),
        (AdapterConfig(layers=[1], bias="all"), None),
        (AdapterConfig(layers=[1], layer_ranks=[4, 8]), 1),
    ],
)
def test_first_trainable_layer(tiny_model_dirs, adapter, expected):
    model = apply_adapters(build_model(str(tiny_model_dirs["bert"]), 4, ModelConfig(head="mlp")), adapter)
    assert len(block_list(model)) == 2
    assert first_trainable_layer(model, "head") == expected


# --- memory the process may really use (issue 28, finding 10) ------------------------------------------------------

GB = 2**30


def fake_cgroups(tmp_path, proc: str, files: dict[str, str]):
    """A /proc/self/cgroup text and a /sys/fs/cgroup tree of ``files`` (relative path → content)."""
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


def test_a_cgroup_v2_limit_on_a_parent_slice_counts(tmp_path):
    from loraclf.utils.memory import cgroup_memory

    root, proc = fake_cgroups(
        tmp_path,
        "0::/user.slice/job.scope\n",
        {
            "user.slice/job.scope/memory.max": "max\n",
            "user.slice/job.scope/memory.current": "123\n",
            "user.slice/memory.max": f"{8 * GB}\n",
            "user.slice/memory.current": f"{3 * GB}\n",
            "memory.max": "max\n",  # the root
        },
    )
    assert cgroup_memory(root, proc) == (8 * GB, 3 * GB)


def test_a_cgroup_v1_limit_counts_and_its_no_limit_value_does_not(tmp_path):
    from loraclf.utils.memory import cgroup_memory

    proc = "4:memory:/docker/abc\n3:cpu:/docker/abc\n"
    root, proc_file = fake_cgroups(
        tmp_path,
        proc,
        {
            "memory/docker/abc/memory.limit_in_bytes": f"{GB}\n",
            "memory/docker/abc/memory.usage_in_bytes": "1024\n",
        },
    )
    assert cgroup_memory(root, proc_file) == (GB, 1024)
    (root / "memory/docker/abc/memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_memory(root, proc_file) is None
    # Inside a container the process's path is not under the mount: the mount's root is its own cgroup.
    (root / "memory/memory.limit_in_bytes").write_text(f"{2 * GB}\n")
    assert cgroup_memory(root, proc_file) == (2 * GB, 0)


def test_usable_memory_is_the_least_known_and_shared_among_local_ranks(monkeypatch):
    from loraclf.utils import memory

    monkeypatch.setattr(memory, "mem_available", lambda: 200 * GB)  # the host's memory
    monkeypatch.setattr(memory, "cgroup_memory", lambda: (8 * GB, 2 * GB))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    amount, what = memory.usable_memory()
    assert amount == 2 * GB and "6.0 GB left under the cgroup's 8.0 GB memory limit" in what
    assert "shared by 3 processes" in what


def test_the_cache_turns_itself_off_in_one_line_under_a_small_cgroup_limit(
    tiny_model_dirs, data, tmp_path, monkeypatch
):
    """On a host with plenty of RAM (as sysconf and MemAvailable report) inside a container limited to almost
    nothing, the cache is planned against the limit and stays off, saying so in one line."""
    import os

    from loraclf.utils import memory

    root, proc = fake_cgroups(
        tmp_path, "0::/\n", {"memory.max": f"{GB}\n", "memory.current": f"{GB - 64 * 1024}\n"}
    )
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)
    (tmp_path / "meminfo").write_text(f"MemTotal: {256 * 2**20} kB\nMemAvailable: {250 * 2**20} kB\n")
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "meminfo")
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda n: 2**26 if n == "SC_PHYS_PAGES" else real_sysconf(n))  # 256 GB
    res, _, _ = _train(tiny_model_dirs["bert"], data, tmp_path / "run", *ARCHS["bert"], "adapter.layers=1")
    lines = [x for x in res.stderr.splitlines() if "frozen-layer cache" in x]
    assert len(lines) == 1 and lines[0].startswith("frozen-layer cache: off (")
    assert "would exceed 50% of the 0.1 MB left under the cgroup's 1.0 GB memory limit" in lines[0]
