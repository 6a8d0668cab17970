"""`loraclf export`: merged Hugging Face folders and the int8 ONNX graph load without loraclf and give its answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

import loraclf
from conftest import LABELS, make_rows, run_cli, write_text_csv

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "train.threads=1", "--epochs", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dirs):
    d = tmp_path_factory.mktemp("export")
    train_csv = write_text_csv(d / "train.csv", 64, seed=0)
    for f in tiny_model_dirs[
        "bert"
    ].iterdir():  # RoBERTa's folder has no tokenizer: reuse the BERT word-level one
        if "token" in f.name or f.name == "vocab.txt":
            (tiny_model_dirs["roberta"] / f.name).write_bytes(f.read_bytes())
    runs = {}
    for name, extra in {
        "pooled": ["--model", tiny_model_dirs["bert"], "model.head=mlp"],
        "own-head": ["--model", tiny_model_dirs["roberta"], "model.head=default"],
    }.items():
        runs[name] = d / name
        res = run_cli("train", "--train", train_csv, "--out", runs[name], *TINY, *extra)
        assert res.returncode == 0, res
    return {"runs": runs, "texts": [f"{r[1]} {r[2]}" for r in make_rows(12, seed=4)]}


def test_own_head_run_exports_a_plain_classification_folder(trained, tmp_path):
    out = tmp_path / "hf"
    res = run_cli("export", trained["runs"]["own-head"], "--out", out)
    assert res.returncode == 0, res
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged: no adapter left
    enc = tok(trained["texts"], return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    expected = loraclf.load(trained["runs"]["own-head"], precision="fp32").predict_proba(trained["texts"])
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_pooled_head_run_exports_backbone_and_head(trained, tmp_path):
    out = tmp_path / "pooled"
    assert run_cli("export", trained["runs"]["pooled"], "--out", out).returncode == 0
    spec = json.loads((out / "head.json").read_text())
    assert spec["pooling"] == "mean" and spec["head"] == "mlp" and spec["labels"] == LABELS
    backbone = AutoModel.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    head = load_file(str(out / "head.safetensors"))
    enc = tok(trained["texts"], return_tensors="pt", padding=True)
    with torch.no_grad():
        states = backbone(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1)
        hidden = torch.relu(pooled @ head["1.weight"].T + head["1.bias"])
        probs = torch.softmax(hidden @ head["4.weight"].T + head["4.bias"], -1).numpy()
    expected = loraclf.load(trained["runs"]["pooled"], precision="fp32").predict_proba(trained["texts"])
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_onnx_export_runs_in_onnx_runtime_alone(trained, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "onnx"
    assert run_cli("export", trained["runs"]["pooled"], "--out", out, "--format", "onnx").returncode == 0
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "labels.json", "README.md", "tokenizer.json"}
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(trained["texts"], return_tensors="np", padding=True)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0]
    expected = loraclf.load(trained["runs"]["pooled"], precision="fp32").predict_proba(trained["texts"])
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_export_refuses_an_occupied_folder_and_a_bad_format(trained, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    res = run_cli("export", trained["runs"]["pooled"], "--out", tmp_path / "taken")
    assert res.returncode == 2 and "not an empty folder" in res.stderr
    res = run_cli("export", trained["runs"]["pooled"], "--out", tmp_path / "new", "--format", "gguf")
    assert res.returncode == 2 and "--format" in res.stderr and not (tmp_path / "new").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial folder left behind
