"""The int8 ONNX Runtime prediction path: export, checks, cache, fallback, and agreement with PyTorch.

Tiny BERT (linear head over mean pooling), RoBERTa (its own head) and GPT-2 (its own last-token head, a causal
mask) runs are trained for a few steps; their int8 graphs must give the PyTorch model's answers, handle padding the
way the PyTorch model does, and be built once per set of weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import loraclf
from conftest import make_rows, run_cli, write_text_csv
from loraclf.inference import int8_runtime, onnx_int8
from loraclf.utils import devices
from loraclf.utils.devices import pick_inference_precision
from loraclf.utils.errors import UserError

TINY = ["--quiet", "train.batch_size=8", "train.lr=2e-2", "train.threads=1", "--epochs", "3"]
ARCHS = {
    "bert": ["model.head=linear"],
    "roberta": ["model.head=default", "adapter.targets=query,value"],
    "gpt2": ["model.head=default", "adapter.targets=c_attn"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dirs) -> dict:
    d = tmp_path_factory.mktemp("int8")
    train_csv = write_text_csv(d / "train.csv", 80, seed=0)
    eval_csv = write_text_csv(d / "eval.csv", 40, seed=5)
    runs = {}
    for name, extra in ARCHS.items():
        model = tiny_model_dirs[name]
        if name != "bert":  # RoBERTa and GPT-2 dirs hold no tokenizer: reuse the BERT word-level one
            for f in tiny_model_dirs["bert"].iterdir():
                if "token" in f.name or f.name == "vocab.txt":
                    (model / f.name).write_bytes(f.read_bytes())
        out = d / f"run-{name}"
        res = run_cli(
            "train", "--model", model, "--train", train_csv, "--eval", eval_csv, "--out", out, *TINY, *extra
        )  # fmt: skip
        assert res.returncode == 0, res
        runs[name] = out
    texts = [f"{r[1]} {r[2]}" for r in make_rows(40, seed=3)]
    return {"runs": runs, "texts": texts, "eval": eval_csv}


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_int8_graph_gives_the_pytorch_answers(trained, arch):
    run = trained["runs"][arch]
    fast = loraclf.load(run, precision="int8")
    exact = loraclf.load(run, precision="fp32")
    assert fast.precision == "int8" and fast.engine is not None, "the export fell back to PyTorch"
    assert exact.engine is None
    p8, p32 = fast.predict_proba(trained["texts"]), exact.predict_proba(trained["texts"])
    assert p8.shape == p32.shape == (40, 4)
    np.testing.assert_allclose(p8.sum(1), 1.0, atol=1e-6)
    assert np.abs(p8 - p32).max() < 0.05
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_padding_does_not_change_a_rows_answer(trained, arch):
    """A short row alone and the same row padded beside a long one: the mask must hide the padding.

    int8 activations take one scale per batch, so batch-mates move a row's probabilities a little (below 1e-3
    here); a padding leak moves them by far more.
    """
    fast = loraclf.load(trained["runs"][arch], precision="int8")
    exact = loraclf.load(trained["runs"][arch], precision="fp32", calibration=False)  # engine.probs is raw
    ids = fast.encode(["stocks profit bank", " ".join(["football goal coach league match"] * 6)])
    assert len(ids[0]) < len(ids[1])
    together = fast.engine.probs(ids, fast.tokenizer.pad_token_id, 4, batch_size=2)
    alone = fast.engine.probs(ids[:1], fast.tokenizer.pad_token_id, 4, batch_size=1)
    reference = exact.probs_of_ids(ids[:1])
    np.testing.assert_allclose(together[0], alone[0], atol=3e-3)
    np.testing.assert_allclose(together[0], reference[0], atol=3e-3)


def test_causal_lms_stay_on_pytorch_unless_int8_is_asked_for(trained):
    """GPT-2's outlier activations do not survive per-tensor int8; `auto` keeps it on PyTorch.

    Its graph still exports (the export checks the fp32 graph against PyTorch on padded rows, causal mask included).
    """
    run = trained["runs"]["gpt2"]
    assert loraclf.load(run).engine is None
    assert loraclf.load(run).precision in ("bf16", "fp32")
    assert loraclf.load(run, precision="int8").engine is not None


def test_graph_is_exported_once_per_weights(trained, monkeypatch):
    run = trained["runs"]["bert"]
    loraclf.load(run, precision="int8")  # exported (or found) here

    def refuse(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this run's graph")

    monkeypatch.setattr(onnx_int8, "export", refuse)
    again = loraclf.load(run, precision="int8")
    assert again.engine is not None
    assert int8_runtime.digest(run) != int8_runtime.digest(trained["runs"]["roberta"])


def test_failed_export_falls_back_to_pytorch_with_a_note(trained, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LORACLF_CACHE", str(tmp_path / "empty-cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_int8, "export", broken)
    run = loraclf.load(trained["runs"]["bert"], precision="auto")
    assert run.engine is None and run.precision in ("bf16", "fp32")
    assert "int8 export" in capsys.readouterr().err
    assert len(run.predict(trained["texts"][:5])) == 5


def test_monte_carlo_dropout_uses_the_pytorch_model(trained):
    run = loraclf.load(trained["runs"]["bert"], precision="int8")
    a = run.predict_proba(trained["texts"][:8], mc_dropout=3)
    assert a.shape == (8, 4) and run._model is not None  # built on demand for the dropout passes
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(a, run.predict_proba(trained["texts"][:8], mc_dropout=3))  # seeded passes
    # Dropout was really on: the average of dropout passes differs from the deterministic PyTorch answer.
    plain = loraclf.load(trained["runs"]["bert"], precision=run.torch_precision)
    assert not np.allclose(a, plain.predict_proba(trained["texts"][:8]), atol=1e-6)


def test_predict_and_evaluate_name_the_engine(trained, tmp_path):
    run = trained["runs"]["bert"]
    res = run_cli("predict", run, "--input", trained["eval"], "--output", tmp_path / "p.csv", "--quiet")
    assert res.returncode == 0, res
    assert "int8, ONNX Runtime" in res.stderr
    res = run_cli(
        "predict", run, "--input", trained["eval"], "--output", tmp_path / "q.csv", "--quiet", "--precision", "fp32"
    )  # fmt: skip
    assert res.returncode == 0 and "fp32, PyTorch on cpu" in res.stderr
    for precision in ("int8", "fp32"):
        res = run_cli("evaluate", run, "--data", trained["eval"], "--json", "--precision", precision)
        assert res.returncode == 0, res


def test_bad_precision_is_one_line_exit_2(trained, tmp_path):
    res = run_cli(
        "predict", trained["runs"]["bert"], "--input", trained["eval"], "--output", tmp_path / "p.csv",
        "--precision", "fp64",
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "--precision" in res.stderr and "Traceback" not in res.stderr


def test_int8_needs_a_cpu_and_onnxruntime(monkeypatch):
    with pytest.raises(UserError, match="CPU"):
        pick_inference_precision("int8", torch.device("cuda"))
    monkeypatch.setattr(devices, "onnx_available", lambda: False)
    with pytest.raises(UserError, match="pip install onnxruntime"):
        pick_inference_precision("int8", torch.device("cpu"))
    assert pick_inference_precision("auto", torch.device("cpu")) in ("bf16", "fp32")


# --- the PyTorch-free start-up (inference/int8_runtime.py) ------------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_cached_run_tokenises_and_scores_like_the_pytorch_path(trained, arch):
    from loraclf.inference.int8_runtime import open_cached

    run = trained["runs"][arch]
    full = loraclf.load(run, precision="int8")  # exports the graph when the cache has none yet
    cached = open_cached(run)
    assert cached is not None and cached.pad_id == full.tokenizer.pad_token_id
    long = " ".join(["football goal coach league match"] * 80)  # past the run's max length: truncated
    texts = [*trained["texts"], "", "   ", long, "stocks &amp; bank #39;profit"]
    want, got = full.encode(texts), cached.encode(texts)
    assert max(len(x) for x in want) == full.max_length
    assert [x.tolist() for x in got] == [x.tolist() for x in want]
    np.testing.assert_allclose(cached.predict_proba(texts), full.predict_proba(texts), rtol=0, atol=1e-9)


def test_cached_path_only_when_nothing_asks_for_pytorch(trained, tmp_path, monkeypatch):
    from loraclf.inference import int8_runtime

    run = trained["runs"]["bert"]
    loraclf.load(run, precision="int8")
    assert int8_runtime.open_cached(run) is not None
    assert int8_runtime.open_cached(run, precision="fp32") is None
    assert int8_runtime.open_cached(run, device="cuda") is None
    assert int8_runtime.open_cached(trained["runs"]["gpt2"]) is None  # causal: PyTorch under auto
    monkeypatch.setattr(int8_runtime, "_gpu_may_be_present", lambda: True)
    assert int8_runtime.open_cached(run) is None
    assert int8_runtime.open_cached(run, device="cpu") is not None
    monkeypatch.undo()
    monkeypatch.setenv("LORACLF_CACHE", str(tmp_path / "empty-cache"))
    assert int8_runtime.open_cached(run) is None  # no graph yet: the PyTorch path exports it


def test_predict_and_evaluate_with_a_cached_graph_import_no_torch(trained, tmp_path):
    import subprocess
    import sys

    from conftest import cli_env

    run = trained["runs"]["bert"]
    loraclf.load(run, precision="int8")  # the graph is cached, as after `loraclf train`
    inp = write_text_csv(tmp_path / "in.csv", 30, seed=9)
    code = (
        "import sys; from loraclf.cli.main import main; "
        f"rc = main(['predict', {str(run)!r}, '--input', {str(inp)!r}, '--output', {str(tmp_path / 'p.csv')!r}, "
        "'--quiet', '--probabilities']); "
        f"rc += main(['evaluate', {str(run)!r}, '--data', {str(inp)!r}, '--quiet']); "
        "print('LOADED', rc, sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "LOADED 0 []" in res.stdout, res.stdout[-2000:]
    assert "int8, ONNX Runtime" in res.stderr
    # The same file through the PyTorch-loading API: the same probabilities.
    import pandas as pd

    got = pd.read_csv(tmp_path / "p.csv")
    texts = pd.read_csv(inp)["text"].tolist()
    want = loraclf.load(run, precision="int8").predict_proba(texts)
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(), want, atol=1e-6)


def _copy_run(trained, tmp_path):
    """A copy of the BERT run whose files a test may change; its int8 graph is the original's (same cache key)."""
    import shutil

    run = trained["runs"]["bert"]
    loraclf.load(run, precision="int8")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_cached_path_splits_special_tokens_when_the_tokenizer_says_so(trained, tmp_path):
    import json

    from loraclf.inference.int8_runtime import open_cached

    run = _copy_run(trained, tmp_path)
    config_file = run / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["split_special_tokens"] = True  # "[SEP]" in a text is then ordinary text, not the separator
    config_file.write_text(json.dumps(config))
    texts = ["football [SEP] league [MASK] match", "stocks [CLS] bank"]
    want = loraclf.load(run, precision="int8").encode(texts)
    cached = open_cached(run)
    assert cached is not None
    assert [x.tolist() for x in cached.encode(texts)] == [x.tolist() for x in want]
    assert [x.tolist() for x in want] != [
        x.tolist() for x in open_cached(trained["runs"]["bert"]).encode(texts)
    ]


def test_damaged_tokenizer_leaves_the_cached_path_and_fails_in_one_line(trained, tmp_path):
    from loraclf.inference.int8_runtime import open_cached

    run = _copy_run(trained, tmp_path)
    (run / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "truncation":')
    assert open_cached(run) is None
    res = run_cli("predict", run, "--input", trained["eval"], "--output", tmp_path / "p.csv", "--quiet")
    assert res.returncode == 2, res
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "tokenizer" in res.stderr and not (tmp_path / "p.csv").exists()


def test_cached_path_follows_the_thread_settings(trained, monkeypatch):
    from loraclf.inference.int8_runtime import open_cached

    run = trained["runs"]["bert"]  # trained with train.threads=1
    loraclf.load(run, precision="int8")
    assert open_cached(run).engine.session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setattr(loraclf.inference.int8_runtime, "read_recipe", _recipe_without_threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert open_cached(run).engine.session.get_session_options().intra_op_num_threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert open_cached(run).engine.session.get_session_options().intra_op_num_threads == 0  # ORT's default


def _recipe_without_threads(run):
    import dataclasses

    from loraclf.runfolder.schema import read_recipe

    recipe = read_recipe(run)
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, threads=None))


def _tokenizer_of_kind(kind: str, texts: list[str]):
    """A fast tokenizer trained offline on ``texts``: byte-level BPE (RoBERTa/GPT-2 style, prefix space, offsets
    trimmed), WordPiece with lower-casing and accent stripping (uncased BERT), or Unigram (SentencePiece style)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    if kind == "byte-level-bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", 2), ("<s>", 1), trim_offsets=True, add_prefix_space=True
        )
    elif kind == "wordpiece-uncased":
        tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(
            texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
        )
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=64,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["byte-level-bpe", "wordpiece-uncased", "unigram"])
def test_cached_run_tokenises_like_transformers_for_every_tokenizer_kind(tmp_path, kind):
    from transformers import RobertaConfig, RobertaModel

    from loraclf.inference.int8_runtime import open_cached

    rows = make_rows(80, seed=0)
    texts = [f"{r[1]} {r[2]}" for r in rows]
    odd = ["Café naïve Ünïcödé résumé", "  spaced   out\ttabs ", "emoji 🚀 rocket", "", "CAPS Lower MiXeD",
           "ﬁ ligature and ＦＵＬＬ width", " ".join(["football goal coach league match"] * 40)]  # fmt: skip
    tok = _tokenizer_of_kind(kind, texts + odd)
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    RobertaModel(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    train_csv = write_text_csv(tmp_path / "train.csv", 80, seed=0)
    run = tmp_path / "run"
    res = run_cli(
        "train", "--model", model_dir, "--train", train_csv, "--out", run, *TINY[:-2], "--epochs", "1",
        "model.head=default", "adapter.targets=query,value",
    )  # fmt: skip
    assert res.returncode == 0, res
    full = loraclf.load(run, precision="int8", device="cpu")
    cached = open_cached(run, device="cpu")
    assert cached is not None
    probe = [*texts[:10], *odd]
    want, got = full.encode(probe), cached.encode(probe)
    assert [x.tolist() for x in got] == [x.tolist() for x in want]
    assert max(len(x) for x in want) == full.max_length  # the long text is truncated the same way
    np.testing.assert_allclose(cached.predict_proba(probe), full.predict_proba(probe), rtol=0, atol=1e-9)


# --- the cache key names the backbone; the quantised graph is checked (code review, section 19) --------------------


def _copy_run_with_backbone(run, backbone, tmp_path):
    """A copy of ``run`` whose recipe names ``backbone`` (a model folder or a hub id)."""
    import shutil

    import yaml

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    recipe = yaml.safe_load((copy / "recipe.yaml").read_text())
    recipe["model"]["name"] = str(backbone)
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return copy


def test_the_graph_key_names_the_backbone(trained, tiny_model_dirs, tmp_path):
    """A run trained on ``--model ./my-bert`` whose folder is later replaced must not keep the old graph."""
    import os
    import shutil

    backbone = tmp_path / "my-bert"
    shutil.copytree(tiny_model_dirs["bert"], backbone)
    run = _copy_run_with_backbone(trained["runs"]["bert"], backbone, tmp_path)
    before = int8_runtime.digest(run)
    assert int8_runtime.digest(run) == before  # the same folder: the same graph
    weights = backbone / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data)  # replaced by a file of the same size: another modification time
    os.utime(weights, ns=(1, 1))
    assert int8_runtime.digest(run) != before
    hub = _copy_run_with_backbone(trained["runs"]["bert"], "org/model", tmp_path / "hub")
    other = tmp_path / "hub" / "run" / "recipe.yaml"
    key = int8_runtime.digest(hub)
    other.write_text(other.read_text().replace("revision: null", "revision: v2"))
    assert int8_runtime.digest(hub) != key


def test_argmax_agreement_counts_only_rows_pytorch_decides_clearly():
    expected = np.array([[0.9, 0.1], [0.51, 0.49], [0.2, 0.8], [0.7, 0.3]])
    got = np.array(
        [[0.8, 0.2], [0.4, 0.6], [0.6, 0.4], [0.6, 0.4]]
    )  # row 1 flips within the margin: not counted
    assert onnx_int8.argmax_agreement(expected, got) == pytest.approx(2 / 3)
    assert onnx_int8.argmax_agreement(np.full((2, 2), 0.5), np.eye(2)) == 1.0


@pytest.mark.parametrize(
    ("shares", "note", "fp32"),
    [([0.5, 0.97], "quantised again with reduce_range (agrees on 97%)", False),
     ([0.5, 0.6], "(60% with reduce_range); using the fp32 ONNX graph", True)],
    ids=["reduce-range", "fp32"],
)  # fmt: skip
def test_a_quantised_graph_that_disagrees_with_pytorch_is_not_cached(
    trained, monkeypatch, capsys, tmp_path, shares, note, fp32
):
    import onnx
    import onnxruntime.quantization

    monkeypatch.setenv("LORACLF_CACHE", str(tmp_path / "cache"))
    answers = iter(shares)
    monkeypatch.setattr(onnx_int8, "argmax_agreement", lambda expected, got: next(answers))
    real, calls = onnxruntime.quantization.quantize_dynamic, []
    monkeypatch.setattr(
        onnxruntime.quantization,
        "quantize_dynamic",
        lambda *a, **k: calls.append(k.get("reduce_range")) or real(*a, **k),
    )
    fast = loraclf.load(trained["runs"]["bert"], precision="int8")
    assert fast.engine is not None and calls == [False, True]
    err = [x for x in capsys.readouterr().err.splitlines() if "probe rows" in x]
    assert len(err) == 1 and "the int8 graph picked PyTorch's class on 50% of clear probe rows" in err[0]
    assert note in err[0]
    ops = {node.op_type for node in onnx.load(str(fast.engine.path)).graph.node}
    assert ("DynamicQuantizeLinear" in ops or "MatMulInteger" in ops) != fp32
    if fp32:  # the fp32 graph gives PyTorch's answers
        exact = loraclf.load(trained["runs"]["bert"], precision="fp32")
        texts = trained["texts"]
        np.testing.assert_allclose(fast.predict_proba(texts), exact.predict_proba(texts), atol=1e-4)
