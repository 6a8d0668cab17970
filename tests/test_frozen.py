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
