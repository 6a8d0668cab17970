"""Task-adaptive pretraining (``loraclf tapt``, ``plan --tapt``) on a tiny BERT: counts, loss, output, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import REPO, make_rows, run_cli, write_text_csv

RECIPE = REPO / "recipes" / "minilm-cpu.yaml"


@pytest.fixture
def unlabelled_csv(tmp_path):
    """60 texts in the kaggle_test.csv layout (id,text), no labels."""
    rows = make_rows(60, seed=7)
    path = tmp_path / "unlabelled.csv"
    pd.DataFrame({"id": range(60), "text": [f"{t} {d}" for _, t, d in rows]}).to_csv(path, index=False)
    return path


def _recipe(model_dir, *overrides):
    from loraclf.config import apply_overrides, load_recipe, validate

    return validate(apply_overrides(load_recipe(RECIPE), [f"model.name={model_dir}", *overrides]))


def _tapt(tmp_path, model_dir, train, unlabelled, out="adapted", *extra):
    return run_cli(
        "tapt", "--config", RECIPE, "--train", train, "--unlabelled", unlabelled, "--out", tmp_path / out,
        "--max-steps", "25", "--batch-size", "16", "--lr", "5e-2", "--json", "--quiet",
        f"model.name={model_dir}", "adapter.r=4", *extra,
    )  # fmt: skip


def test_fresh_head_is_tied_to_the_embeddings_and_counted_once(tiny_bert_dir):
    from loraclf.toolbox.tapt import add_lora, count_trainable, head_parameters, load_mlm, tapt_plan

    recipe = _recipe(tiny_bert_dir, "adapter.r=4")
    model, _, fresh, _ = load_mlm(recipe)
    assert fresh  # the fixture saves a bare BertModel: no masked-LM head in the checkpoint
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    vocab = model.config.vocab_size
    head = dict(head_parameters(model))
    assert sum(p.numel() for p in head.values()) == 32 * 32 + 32 + 2 * 32 + vocab  # dense, LayerNorm, bias
    assert not any("decoder.weight" in n for n in head)
    # LoRA r=4 on every linear layer of 2 blocks: q, k, v, attention output (32→32), intermediate (32→64),
    # output (64→32): r·(d_in + d_out) each.
    lora = 2 * 4 * (4 * 64 + 96 + 96)
    wrapped = add_lora(model, recipe)
    assert count_trainable(wrapped) == lora + 32 * 32 + 32 + 2 * 32 + vocab
    assert not wrapped.get_input_embeddings().weight.requires_grad
    stage = tapt_plan(recipe)
    assert (stage["lora"], stage["trainable"]) == (lora, count_trainable(wrapped))


def test_fast_loss_equals_the_models_own_loss(tiny_bert_dir):
    from loraclf.toolbox.tapt import TaptOptions, _batches, load_mlm, masked_lm_loss

    model, tok, _, _ = load_mlm(_recipe(tiny_bert_dir))
    texts = [f"{t} {d}" for _, t, d in make_rows(8)]
    batch = next(_batches(tok, texts, TaptOptions(mask_prob=0.3), 0, list(range(8))))
    model.eval()
    assert torch.allclose(masked_lm_loss(model, batch), model(**batch).loss, atol=1e-5)


def test_tapt_lowers_the_loss_and_writes_a_backbone_the_classifier_trains_from(
    tmp_path, tiny_bert_dir, tiny_csv, unlabelled_csv
):
    from safetensors.torch import load_file

    from loraclf.toolbox.tapt import tapt_plan

    r = _tapt(tmp_path, tiny_bert_dir, tiny_csv, unlabelled_csv)
    assert r.returncode == 0, r
    record = json.loads(r.stdout)
    assert record["mlm_loss_after"] < record["mlm_loss_before"] - 0.3
    assert record["texts"] == 140 and record["steps"] == 25 and record["fresh_head"]
    assert record["trainable"] == tapt_plan(_recipe(tiny_bert_dir, "adapter.r=4"))["trainable"]
    out = tmp_path / "adapted"
    assert json.loads((out / "tapt.json").read_text()) == record
    old, new = load_file(tiny_bert_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert old.keys() == new.keys()  # same architecture, pooler included
    assert torch.equal(old["pooler.dense.weight"], new["pooler.dense.weight"])
    assert torch.equal(old["embeddings.word_embeddings.weight"], new["embeddings.word_embeddings.weight"])
    assert not torch.equal(
        old["encoder.layer.0.attention.self.query.weight"], new["encoder.layer.0.attention.self.query.weight"]
    )
    # The classifier's plan is the original backbone's, and `train` runs from the folder.
    plans = [
        json.loads(
            run_cli("plan", "--config", RECIPE, "--num-labels", "4", "--json", f"model.name={m}").stdout
        )
        for m in (tiny_bert_dir, out)
    ]
    assert plans[0]["trainable"] == plans[1]["trainable"] and plans[0]["total"] == plans[1]["total"]
    t = run_cli(
        "train", "--config", RECIPE, "--train", tiny_csv, "--out", tmp_path / "run", "--epochs", "1",
        "--quiet", f"model.name={out}",
    )  # fmt: skip
    assert t.returncode == 0, t


def test_tapt_is_deterministic(tmp_path, tiny_bert_dir, tiny_csv, unlabelled_csv):
    runs = [
        _tapt(tmp_path, tiny_bert_dir, tiny_csv, unlabelled_csv, f"a{i}", "--max-steps", "4") for i in (0, 1)
    ]
    assert all(r.returncode == 0 for r in runs), runs
    files = [(tmp_path / f"a{i}" / "model.safetensors").read_bytes() for i in (0, 1)]
    assert files[0] == files[1]


def test_plan_tapt_counts_the_stage(tiny_model_dirs):
    r = run_cli(
        "plan", "--config", RECIPE, "--num-labels", "4", "--tapt", "--json",
        f"model.name={tiny_model_dirs['roberta']}", "adapter.targets=[query,value]", "adapter.r=2",
    )  # fmt: skip
    assert r.returncode == 0, r
    stage = json.loads(r.stdout)["tapt"]
    # RoBERTa's lm_head: dense 32×32 + bias, LayerNorm, vocabulary bias; the decoder is the tied embedding.
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_model_dirs["roberta"]).vocab_size
    assert stage["head"] == 32 * 32 + 32 + 2 * 32 + vocab
    assert stage["lora"] == 2 * 2 * 2 * (32 + 32) and stage["targets"] == 4
    text = run_cli(
        "plan", "--config", RECIPE, "--num-labels", "4", "--tapt", f"model.name={tiny_model_dirs['bert']}"
    )
    assert "TAPT stage" in text.stdout and "masked-LM head" in text.stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--unlabelled", "missing.csv"], "--unlabelled: file"),
        (["--mask-prob", "1.5"], "--mask-prob"),
        (["--max-steps", "0"], "--max-steps"),
        (["--head-lr", "0"], "--head-lr"),
        (["model.name=gpt2"], "causal LM"),
        (["adapter.targets=[nonesuch]"], "adapter.targets"),
    ],
)
def test_tapt_bad_inputs_are_one_line_errors(tmp_path, tiny_bert_dir, tiny_csv, extra, message):
    args = ["tapt", "--config", RECIPE, "--train", tiny_csv, "--out", tmp_path / "o", "--quiet"]
    r = run_cli(*args, f"model.name={tiny_bert_dir}", *extra)
    assert r.returncode == 2 and message in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_tapt_refuses_empty_texts_and_a_used_folder(tmp_path, tiny_bert_dir, tiny_csv):
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"id": [0, 1], "text": ["", "  "]}).to_csv(empty, index=False)
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,text\n")
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    cases = [
        (["--train", empty, "--out", tmp_path / "o"], "no non-empty text"),
        (["--train", header_only, "--out", tmp_path / "o"], "no data rows"),
        (["--train", tiny_csv, "--out", used], "--out"),
        (
            ["--train", write_text_csv(tmp_path / "t.csv", 4), "--out", tmp_path / "o", "--batch-size", "0"],
            "--batch-size",
        ),
    ]
    for args, message in cases:
        r = run_cli("tapt", "--config", RECIPE, *args, "--quiet", f"model.name={tiny_bert_dir}")
        assert r.returncode == 2 and message in r.stderr, (args, r)
