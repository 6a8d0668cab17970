"""Parameter plans: the reports' roberta-base counts, plan == built model, budget checks and search."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from conftest import run_cli
from loraclf.config import AdapterConfig, ModelConfig, Recipe
from loraclf.modeling.adapters import count_parameters
from loraclf.modeling.backbones import build_model
from loraclf.modeling.methods import apply_adapters
from loraclf.modeling.plan import Plan, check_budget, plan, search
from loraclf.utils.errors import UserError

# The four configurations of the course reports, roberta-base with its own head and 4 classes.
REPORTS = [
    (
        dict(targets=["query"], layer_ranks="8*2**(i//4)"),
        ["--targets", "query", "--layer-ranks", "8*2**(i//4)"],
        937_732,
    ),
    (
        dict(targets=["query", "value"], r=8, bias="lora_only"),
        ["--targets", "query,value", "--rank", "8", "--bias", "lora_only"],
        907_012,
    ),
    (
        dict(targets=["query", "key", "value"], r=4, bias="all"),
        ["--targets", "query,key,value", "--rank", "4", "--bias", "all"],
        916_996,
    ),
    (dict(targets=["query", "value"], r=6), ["--targets", "query,value", "--rank", "6"], 814_852),
]


def recipe(name: str, model: dict | None = None, **adapter) -> Recipe:
    return Recipe(model=ModelConfig(name=str(name), **(model or {})), adapter=AdapterConfig(**adapter))


@pytest.mark.parametrize(("adapter", "flags", "expected"), REPORTS, ids=[str(r[2]) for r in REPORTS])
def test_report_counts_roberta_base(adapter, flags, expected):
    p = plan(recipe("roberta-base", **adapter), 4)
    assert p.trainable == expected
    assert p.trainable == p.adapters + p.biases + p.head + p.other
    assert p.head == 768 * 768 + 768 + 768 * 4 + 4  # dense + out_proj of RobertaClassificationHead


@pytest.mark.parametrize(("adapter", "flags", "expected"), REPORTS, ids=[str(r[2]) for r in REPORTS])
def test_report_counts_through_cli(adapter, flags, expected):
    res = run_cli("plan", "--model", "roberta-base", "--num-labels", "4", *flags, "--json")
    assert res.returncode == 0, res
    out = json.loads(res.stdout)
    assert out["trainable"] == expected
    assert out["total"] > expected


def test_roberta_qv_r8_breakdown():
    p = plan(recipe("roberta-base", targets=["query", "value"], r=8), 4)
    assert p.adapters == 12 * 2 * 8 * (768 + 768)
    assert set(p.adapters_per_layer) == set(range(12))
    assert p.biases == 0 and p.other == 0


def test_layer_schedule_doubles_every_four_layers():
    p = plan(recipe("roberta-base", targets=["query"], layer_ranks="8*2**(i//4)"), 4)
    per_layer = [p.adapters_per_layer[i] for i in range(12)]
    assert per_layer == [8 * 1536] * 4 + [16 * 1536] * 4 + [32 * 1536] * 4


# --- plan == the model that trains ---------------------------------------------------------------------------------

TINY_CASES = [
    ("bert", {}, {}),
    ("bert", {"head": "mlp"}, {}),
    ("bert", {"head": "linear", "pooling": "cls"}, {"targets": ["query", "key", "value"], "bias": "all"}),
    ("bert", {}, {"targets": ["query", "value"], "bias": "lora_only"}),
    ("bert", {}, {"targets": ["query"], "layer_ranks": [2, 6]}),
    ("bert", {}, {"targets": ["query"], "layer_ranks": "4*2**i"}),
    ("bert", {}, {"targets": ["all-linear"], "layers": [1]}),
    ("bert", {"head": "mlp"}, {"targets": ["attention"], "bias": "all", "r": 3}),
    ("bert", {}, {"method": "head"}),
    ("bert", {}, {"method": "head", "bias": "all"}),
    ("bert", {"head": "mlp"}, {"method": "full"}),
    ("roberta", {}, {"targets": ["query", "value"]}),
    ("roberta", {}, {"targets": ["query", "key", "value"], "r": 4, "bias": "all"}),
    ("roberta", {"head": "mlp"}, {"targets": ["query", "value"], "bias": "lora_only"}),
    ("gpt2", {}, {"targets": ["c_attn"]}),
    ("gpt2", {}, {"targets": ["c_fc", "c_proj"], "bias": "lora_only"}),
    ("gpt2", {"head": "mlp"}, {"targets": ["c_attn"], "bias": "all"}),
    ("gpt2", {}, {"method": "head"}),
    ("gpt2", {}, {"method": "full"}),
]


@pytest.mark.parametrize(
    ("arch", "model", "adapter"), TINY_CASES, ids=[f"{a}-{m}-{d}" for a, m, d in TINY_CASES]
)
def test_plan_equals_built_model(tiny_model_dirs, arch, model, adapter):
    r = recipe(tiny_model_dirs[arch], model, **adapter)
    p = plan(r, 3)
    torch.manual_seed(0)
    real = apply_adapters(build_model(r.model.name, 3, r.model, meta=False), r.adapter)
    trainable, total = count_parameters(real)
    assert (p.trainable, p.total) == (trainable, total)
    assert p.trainable == p.adapters + p.biases + p.head + p.other
    assert not any(t.is_meta for t in real.parameters())


# The trainable counts of TINY_CASES from first principles, so that a fault shared by the plan and the build (both
# go through apply_adapters) still shows. Tiny models: hidden H = 32, 2 layers, intermediate 64 (GPT-2: 4H), K = 3.
# LoRA on Linear(i, o) adds r·(i + o); a BERT/RoBERTa layer has 288 biases (q, k, v, attention output, 2 LayerNorms,
# intermediate 64, output 32), a GPT-2 block 352 (2 LayerNorms, c_attn 96, attention c_proj, c_fc 128, c_proj).
H, K = 32, 3
OWN_HEAD = H * K + K  # BERT's classifier on the pooled output
MLP_HEAD = H * H + H + H * K + K  # loraclf's MLP head, also RoBERTa's own classification head
QV = 2 * 2 * 8 * (H + H)  # LoRA r=8 on query and value of 2 layers
BIASES = 2 * 288 + H  # every bias of the BERT/RoBERTa encoder: 2 layers + the embeddings' LayerNorm
CLOSED_FORM = [
    QV + OWN_HEAD,
    QV + MLP_HEAD,
    2 * 3 * 8 * (H + H) + BIASES + OWN_HEAD,  # q, k, v; a linear head over cls (no pooler)
    QV + 2 * 2 * H + OWN_HEAD,  # the biases of the adapted modules only
    (2 + 6) * (H + H) + OWN_HEAD,
    (4 + 8) * (H + H) + OWN_HEAD,  # 4·2^i for layers 0 and 1
    8 * (4 * (H + H) + (H + 64) + (64 + H)) + OWN_HEAD,  # every linear layer of layer 1 only
    2 * 4 * 3 * (H + H) + BIASES + MLP_HEAD,  # "attention": q, k, v and its output projection
    OWN_HEAD,
    BIASES + H + OWN_HEAD,  # the pooler's bias trains too: the model's own head reads the pooler
    # Full fine-tuning: embeddings (193-word vocabulary, 128 positions, 2 types, LayerNorm), 2 layers, the MLP head
    # (no pooler: loraclf's head pools itself).
    (193 + 128 + 2) * H
    + 2 * H
    + 2 * (4 * (H * H + H) + 2 * H + (H * 64 + 64) + (64 * H + H) + 2 * H)
    + MLP_HEAD,
    QV + MLP_HEAD,
    2 * 3 * 4 * (H + H) + BIASES + MLP_HEAD,
    QV + 2 * 2 * H + MLP_HEAD,
    2 * 8 * (H + 3 * H) + H * K,  # c_attn is Conv1D(H, 3H); GPT-2's score head has no bias
    2 * 8 * ((H + 4 * H) + (4 * H + H) + (H + H)) + 2 * (4 * H + H + H) + H * K,  # c_fc, both c_proj
    2 * 8 * (H + 3 * H) + 2 * 352 + H + MLP_HEAD,  # every bias: 2 blocks + the final LayerNorm
    H * K,
    # wte, wpe (128 positions), 2 blocks (LayerNorms, c_attn, c_proj, c_fc, c_proj), ln_f, the score head.
    (193 + 128) * H
    + 2 * (4 * H + (3 * H * H + 3 * H) + (H * H + H) + (4 * H * H + 4 * H) + (4 * H * H + H))
    + 2 * H
    + H * K,
]


@pytest.mark.parametrize(
    ("arch", "model", "adapter", "expected"),
    [(*case, n) for case, n in zip(TINY_CASES, CLOSED_FORM)],
    ids=[f"{a}-{m}-{d}" for a, m, d in TINY_CASES],
)
def test_plan_matches_its_closed_form(tiny_model_dirs, arch, model, adapter, expected):
    p = plan(recipe(tiny_model_dirs[arch], model, **adapter), K)
    assert p.trainable == expected
    if adapter.get("method") == "full":
        assert p.trainable == p.total


def test_plan_method_head_counts_only_the_head(tiny_model_dirs):
    p = plan(recipe(tiny_model_dirs["bert"], method="head"), 3)
    assert p.trainable == p.head == 32 * 3 + 3  # BERT's classifier on the pooled output
    assert p.adapters == 0


def test_target_matching_nothing_lists_module_names(tiny_model_dirs):
    with pytest.raises(UserError) as exc:
        plan(recipe(tiny_model_dirs["bert"], targets=["query", "qury"]), 3)
    msg = str(exc.value)
    assert "'qury'" in msg
    assert 'did you mean "query"' in msg
    for name in ("query", "key", "value", "intermediate.dense"):
        assert name in msg


def test_gpt2_target_names_are_its_own(tiny_model_dirs):
    with pytest.raises(UserError) as exc:
        plan(recipe(tiny_model_dirs["gpt2"], targets=["query"]), 3)
    assert "c_attn" in str(exc.value)


def test_layer_ranks_of_wrong_length(tiny_model_dirs):
    with pytest.raises(UserError) as exc:
        plan(recipe(tiny_model_dirs["bert"], targets=["query"], layer_ranks=[4, 4, 4]), 3)
    msg = str(exc.value)
    assert "3 ranks" in msg and "2 layers" in msg


def test_layer_ranks_of_wrong_length_through_cli(tiny_bert_dir):
    res = run_cli("plan", "--model", tiny_bert_dir, "--num-labels", "3", "--layer-ranks", "4,4,4", "--json")
    assert res.returncode == 2
    assert res.stdout == ""
    assert "--layer-ranks" in res.stderr and "2 layers" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_layers_outside_the_model(tiny_model_dirs):
    with pytest.raises(UserError, match=r"adapter.layers.*\[5\]"):
        plan(recipe(tiny_model_dirs["bert"], layers=[0, 5]), 3)


def test_bad_schedule_expression(tiny_model_dirs):
    with pytest.raises(UserError, match="schedule expression"):
        plan(recipe(tiny_model_dirs["bert"], layer_ranks="__import__('os')"), 3)


def test_check_budget_message_has_both_numbers():
    p = Plan("m", 4, "lora", trainable=1_234_567, total=10_000_000, budget=1_000_000)
    with pytest.raises(UserError) as exc:
        check_budget(p)
    msg = str(exc.value).replace(",", "")
    assert "1234567" in msg and "1000000" in msg and "234567" in msg
    check_budget(
        Plan("m", 4, "lora", trainable=1_000_000, total=10_000_000, budget=1_000_000)
    )  # exactly fits
    check_budget(Plan("m", 4, "lora", trainable=5, total=10, budget=None))


def test_plan_over_budget_through_cli_prints_plan_then_fails(tiny_bert_dir):
    res = run_cli("plan", "--model", tiny_bert_dir, "--num-labels", "4", "--budget", "100", "--json")
    assert res.returncode == 2
    out = json.loads(res.stdout)
    assert out["fits"] is False and out["budget"] == 100
    assert str(out["trainable"]) in res.stderr.replace(",", "")


# --- search --------------------------------------------------------------------------------------------------------


def _cli_trainable(model: str, num_labels: int, flags: str) -> int:
    res = run_cli("plan", "--model", model, "--num-labels", str(num_labels), *shlex.split(flags), "--json")
    assert res.returncode == 0, res
    return json.loads(res.stdout)["trainable"]


@pytest.mark.parametrize(("which", "budget"), [("roberta-base", 1_000_000), ("tiny-bert", 3_000)])
def test_search_candidates_fit_are_sorted_and_reproduce(tiny_bert_dir, which, budget):
    model = "roberta-base" if which == "roberta-base" else str(tiny_bert_dir)
    found = search(Recipe(model=ModelConfig(name=model)), 4, budget, top=12)
    assert found, "search found nothing under a budget that fits many configurations"
    assert all(c.trainable <= budget for c in found)
    adapters = [c.adapters for c in found]
    assert adapters == sorted(adapters, reverse=True)
    for c in found[:3]:
        assert _cli_trainable(model, 4, c.flags()) == c.trainable, c.flags()


def test_search_through_cli_json(tiny_bert_dir):
    res = run_cli(
        "plan", "--model", tiny_bert_dir, "--num-labels", "4", "--search", "--budget", "3000", "--json"
    )
    assert res.returncode == 0, res
    rows = json.loads(res.stdout)
    assert rows and all(r["trainable"] <= 3000 for r in rows)
    assert _cli_trainable(str(tiny_bert_dir), 4, rows[0]["flags"]) == rows[0]["trainable"]


def test_search_below_the_head_finds_nothing(tiny_bert_dir):
    assert search(Recipe(model=ModelConfig(name=str(tiny_bert_dir))), 4, 50) == []


def test_plan_counts_labels_of_a_training_file(tiny_bert_dir, tiny_csv):
    res = run_cli("plan", "--model", tiny_bert_dir, "--train", tiny_csv, "--method", "head", "--json")
    assert res.returncode == 0, res
    out = json.loads(res.stdout)
    assert out["num_labels"] == 4
    assert out["trainable"] == 32 * 4 + 4  # BERT's classifier for the file's 4 classes
