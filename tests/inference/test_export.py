"""`loraclf export`: merged Hugging Face folders and the int8 ONNX graph load without loraclf and give its answers.

Every head kind is trained on a tiny model, exported with ``--format hf`` and loaded by a plain
``pipeline("text-classification")`` in a fresh interpreter where ``import loraclf`` fails: the model's own head
(BERT, RoBERTa, GPT-2) without remote code, loraclf's pooled heads (mlp and linear over mean, cls and last pooling)
through the folder's ``modeling_loraclf.py``. Labels and probabilities must match ``loraclf predict`` on the same
rows.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import loraclf
from conftest import LABELS, cli_env, make_rows, run_cli, run_cli_forked, write_text_csv

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "train.threads=1", "--epochs", "1"]
# name → (backbone, recipe overrides); every head kind loraclf trains.
RUNS = {
    "own-bert": ("bert", ["model.head=default"]),
    "own-roberta": ("roberta", ["model.head=default"]),
    "own-gpt2": ("gpt2", ["model.head=default", "adapter.targets=c_attn"]),
    "mlp-mean": ("bert", ["model.head=mlp", "model.pooling=mean"]),
    "mlp-cls": ("roberta", ["model.head=mlp", "model.pooling=cls"]),
    "mlp-last": ("gpt2", ["model.head=mlp", "model.pooling=last", "adapter.targets=c_attn"]),
    "linear-mean": ("roberta", ["model.head=linear", "model.pooling=mean"]),
    "linear-cls": ("bert", ["model.head=linear", "model.pooling=cls"]),
    "linear-last": ("gpt2", ["model.head=linear", "model.pooling=last", "adapter.targets=c_attn"]),
}

# Loads every exported folder the way a user without loraclf would, and reports labels and probabilities.
PLAIN_PIPELINE = r"""
import json, sys
sys.modules["loraclf"] = None  # any import of loraclf now fails: the folder must stand alone
from transformers import AutoModelForSequenceClassification, pipeline
jobs, texts = json.loads(sys.stdin.read())
out = {}
for name, folder, remote in jobs:
    clf = pipeline("text-classification", model=folder, trust_remote_code=remote, device="cpu")
    rows = clf(texts, top_k=None, truncation=True, batch_size=4)  # batches pad: pooling must ignore the pads
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote)
    out[name] = {
        "labels": [max(r, key=lambda d: d["score"])["label"] for r in rows],
        "probs": [{d["label"]: d["score"] for d in r} for r in rows],
        "class": type(clf.model).__name__,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
    }
print(json.dumps(out))
"""


def _texts() -> list[str]:
    texts = [f"{r[1]} {r[2]}" for r in make_rows(11, seed=4)]
    # One text far longer than the run's max_length: the pipeline must truncate where loraclf predict does.
    return [*texts, " ".join(f"{r[1]} {r[2]}" for r in make_rows(8, seed=5))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dirs):
    d = tmp_path_factory.mktemp("export")
    train_csv = write_text_csv(d / "train.csv", 64, seed=0)
    for name in ("roberta", "gpt2"):  # backbones without a tokenizer: reuse the BERT word-level one
        for f in tiny_model_dirs["bert"].iterdir():
            if "token" in f.name or f.name == "vocab.txt":
                (tiny_model_dirs[name] / f.name).write_bytes(f.read_bytes())
    runs = {name: d / name for name in RUNS}
    jobs = {
        name: [
            "train",
            "--model",
            tiny_model_dirs[arch],
            "--train",
            train_csv,
            "--out",
            runs[name],
            *TINY,
            *extra,
        ]
        for name, (arch, extra) in RUNS.items()
    }
    for name, res in run_cli_forked(jobs, d).items():
        assert res.returncode == 0, (name, res)
    return {"runs": runs, "texts": _texts(), "dir": d}


@pytest.fixture(scope="module")
def exported(trained):
    """Each run exported (hf), predicted by `loraclf predict` in fp32, and loaded by a plain pipeline."""
    d = trained["dir"]
    inputs = d / "rows.csv"
    pd.DataFrame({"text": trained["texts"]}).to_csv(inputs, index=False)
    folders, expected = {}, {}
    for name, run in trained["runs"].items():
        folders[name] = (
            d / f"export-{name}"
        )  # distinct names: transformers caches remote code per folder name
        res = run_cli("export", run, "--out", folders[name])
        assert res.returncode == 0, (name, res)
        pred = d / f"pred-{name}.csv"
        args = ("predict", run, "--input", inputs, "--output", pred, "--probabilities", "--precision", "fp32")
        res = run_cli(*args, "--quiet")
        assert res.returncode == 0, (name, res)
        expected[name] = pd.read_csv(pred, dtype=str)
    jobs = [[name, str(folders[name]), not name.startswith("own-")] for name in RUNS]
    env = cli_env(HF_MODULES_CACHE=str(d / "hf-modules"))
    env["PYTHONPATH"] = ""  # neither this checkout's sources nor anything else of loraclf's
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_PIPELINE],
        input=json.dumps([jobs, trained["texts"]]),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {
        "folders": folders,
        "expected": expected,
        "plain": json.loads(proc.stdout.strip().splitlines()[-1]),
    }


@pytest.mark.parametrize("name", RUNS)
def test_every_hf_export_loads_in_a_plain_pipeline_with_loraclf_predict_answers(exported, name):
    plain, expected = exported["plain"][name], exported["expected"][name]
    assert plain["id2label"] == {str(i): lab for i, lab in enumerate(LABELS)}  # the training file's names
    own = name.startswith("own-")
    assert (plain["class"] == "LoraclfForSequenceClassification") != own  # own heads: transformers' own class
    assert (exported["folders"][name] / "modeling_loraclf.py").is_file() != own
    assert plain["labels"] == expected["Label"].tolist()
    probs = np.array([[row[lab] for lab in LABELS] for row in plain["probs"]])
    want = expected[[f"prob_{lab}" for lab in LABELS]].astype(float).to_numpy()
    np.testing.assert_allclose(probs, want, atol=1e-4)


def test_pooled_export_config_names_its_code_head_and_labels(exported):
    config = json.loads((exported["folders"]["mlp-last"] / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == (
        "modeling_loraclf.LoraclfForSequenceClassification"
    )
    assert config["model_type"] == "loraclf" and config["backbone"]["model_type"] == "gpt2"
    assert (config["head"], config["pooling"]) == ("mlp", "last")
    assert config["label2id"] == {lab: i for i, lab in enumerate(LABELS)}
    assert not (exported["folders"]["mlp-last"] / "head.json").exists()


def test_own_head_run_exports_a_plain_classification_folder(trained, exported):
    out = exported["folders"]["own-roberta"]
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged: no adapter left
    texts = trained["texts"][:-1]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    expected = loraclf.load(trained["runs"]["own-roberta"], precision="fp32").predict_proba(texts)
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_onnx_export_runs_in_onnx_runtime_alone(trained, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "onnx"
    assert run_cli("export", trained["runs"]["mlp-mean"], "--out", out, "--format", "onnx").returncode == 0
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "labels.json", "README.md", "tokenizer.json"}
    texts = trained["texts"][:-1]
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(texts, return_tensors="np", padding=True)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0]
    expected = loraclf.load(trained["runs"]["mlp-mean"], precision="fp32").predict_proba(texts)
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_the_onnx_readme_snippet_runs_on_a_text_longer_than_the_position_table(trained, tmp_path):
    """The README's snippet must truncate: a text beyond the backbone's 128 positions crashed ORT's Gather."""
    import re

    out = tmp_path / "onnx"
    assert run_cli("export", trained["runs"]["mlp-mean"], "--out", out, "--format", "onnx").returncode == 0
    code = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
    long_text = " ".join(["stocks profit bank merger earnings shares"] * 60)  # 360 words, 128 positions
    code = code.replace("'some text'", repr(long_text)) + "\nprint(logits.argmax(1).tolist())\n"
    res = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, env=cli_env())
    assert res.returncode == 0, res.stderr[-2000:]
    expected = loraclf.load(trained["runs"]["mlp-mean"], precision="fp32").predict_proba([long_text])
    assert json.loads(res.stdout.strip().splitlines()[-1]) == expected.argmax(1).tolist()


def test_export_refuses_an_occupied_folder_and_a_bad_format(trained, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    res = run_cli("export", trained["runs"]["mlp-mean"], "--out", tmp_path / "taken")
    assert res.returncode == 2 and "not an empty folder" in res.stderr
    res = run_cli("export", trained["runs"]["mlp-mean"], "--out", tmp_path / "new", "--format", "gguf")
    assert res.returncode == 2 and "--format" in res.stderr and not (tmp_path / "new").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial folder left behind


def test_the_temperature_is_folded_into_the_heads_last_layer_only():
    import torch

    from loraclf.inference.export import fold_temperature

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x = torch.randn(5, 6)
    before = model(x).detach()
    first = model[0].weight.detach().clone()
    fold_temperature(model, 3, 2.5)
    torch.testing.assert_close(model(x).detach(), before / 2.5)
    assert torch.equal(model[0].weight, first)
    fold_temperature(model, 3, 1.0)  # 1.0: untouched
    torch.testing.assert_close(model(x).detach(), before / 2.5)
    with pytest.raises(ValueError, match="no linear layer with 7 outputs"):
        fold_temperature(model, 7, 2.0)
