"""GPU and precision decisions, tested as far as a CPU allows: CUDA is faked where a decision only reads it."""

from types import SimpleNamespace

import pytest
import torch

from loraclf.config import Recipe, from_dict
from loraclf.data.batching import collate
from loraclf.training import steps
from loraclf.training.session import make_optimizer
from loraclf.utils import devices as hardware
from loraclf.utils.errors import UserError

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture
def fake_cuda(monkeypatch):
    """A visible CUDA GPU whose bf16 support the test sets: native (compute capability 8.0, A100) or emulated
    (7.5, T4), with torch's own semantics for ``is_bf16_supported`` (emulation counts unless excluded)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")

    def with_bf16(native: bool):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (8, 0) if native else (7, 5))
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation
        )

    with_bf16(True)
    return with_bf16


def test_auto_device_prefers_cuda(fake_cuda):
    assert hardware.pick_device("auto").type == "cuda"


def test_auto_device_is_cpu_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert hardware.pick_device("auto") == CPU


@pytest.mark.parametrize(
    ("name", "fragment"), [("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("tpu7", "not a device")]
)
def test_unavailable_or_unknown_device_is_a_user_error(monkeypatch, name, fragment):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=fragment):
        hardware.pick_device(name)


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda_is_bf16_on_ampere_else_fp16(fake_cuda, bf16, expected):
    fake_cuda(bf16)
    assert hardware.pick_precision("auto", CUDA) == expected
    # Prediction on a GPU stays on PyTorch: int8 is the CPU path.
    assert hardware.pick_inference_precision("auto", CUDA) == expected


def test_bf16_on_a_gpu_that_only_emulates_it_is_refused(fake_cuda):
    fake_cuda(False)
    with pytest.raises(UserError, match="emulates bf16"):
        hardware.pick_precision("bf16", CUDA)


def test_auto_precision_on_a_t4_is_fp16_although_torch_reports_emulated_bf16(fake_cuda):
    fake_cuda(False)
    assert torch.cuda.is_bf16_supported()  # torch's default counts emulation: T4s and V100s say yes
    assert hardware.pick_precision("auto", CUDA) == "fp16"


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(UserError, match="needs a GPU"):
        hardware.pick_precision("fp16", CPU)


def test_int8_on_a_gpu_is_refused(fake_cuda):
    with pytest.raises(UserError, match="--device cpu"):
        hardware.pick_inference_precision("int8", CUDA)


def test_cpu_auto_precision_follows_the_cpu_bf16_support(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert hardware.pick_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert hardware.pick_precision("auto", CPU) == "fp32"


def test_autocast_runs_matrix_products_in_bf16_and_fp32_is_untouched():
    a = torch.randn(4, 8)
    with hardware.autocast(CPU, "bf16"):
        assert (a @ a.T).dtype == torch.bfloat16
    with hardware.autocast(CPU, "fp32"):
        assert (a @ a.T).dtype == torch.float32


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    return model


def test_optimizer_is_fused_on_cuda_and_skips_decay_on_biases_and_norms():
    recipe = from_dict(Recipe, {"train": {"lr": 1e-3, "weight_decay": 0.1}})
    opt = make_optimizer(_model(), recipe, CUDA)
    assert opt.defaults["fused"] is True
    decay, no_decay = opt.param_groups  # LoRA+ off: two groups, as plain AdamW
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])  # the two Linear weights
    assert len(no_decay["params"]) == 4  # two biases, LayerNorm weight and bias
    assert not make_optimizer(_model(), recipe, CPU).defaults["fused"]


def test_batches_are_pinned_and_copied_without_blocking_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(
        torch.Tensor,
        "to",
        lambda self, device, non_blocking=False: calls.append((str(device), non_blocking)) or self,
    )
    import numpy as np

    ids = [np.array([5, 6, 7]), np.array([5])]
    input_ids, mask = collate(ids, np.array([0, 1]), 0, CUDA, pin=True)
    assert calls == ["pin", "pin", ("cuda", True), ("cuda", True)]
    assert input_ids.shape == (2, 8) and mask.sum().item() == 4  # width rounded up to a multiple of 8
    calls.clear()
    collate(ids, np.array([0, 1]), 0, CPU, pin=True)
    assert calls == [("cpu", False), ("cpu", False)]


def _step_with_scaler(grad_value: float):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    before = model.weight.detach().clone()
    loss = model(torch.ones(1, 2)).sum() * grad_value
    scaler.scale(loss).backward()
    steps.optimizer_step(SimpleNamespace(model=model, optimizer=opt, scheduler=sched, scaler=scaler), 1.0)
    return before, model, scaler, sched


def test_loss_scaled_step_updates_weights_and_clears_gradients():
    before, model, scaler, sched = _step_with_scaler(1.0)
    assert not torch.equal(before, model.weight)
    assert model.weight.grad is None
    assert scaler.get_scale() == 2.0**8  # no overflow: the scale is kept
    assert sched.last_epoch == 1


class _OverflowingScaler:
    """A GradScaler stand-in whose step overflowed: ``update`` halves the scale (the step was skipped)."""

    def __init__(self):
        self.scale = 2.0

    def unscale_(self, optimizer):
        pass

    def get_scale(self):
        return self.scale

    def step(self, optimizer):
        pass

    def update(self):
        self.scale /= 2


@pytest.mark.parametrize("overflow", [True, False])
def test_the_methods_hook_runs_only_on_steps_the_scaler_took(overflow):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    model(torch.ones(1, 2)).sum().backward()
    scaler = _OverflowingScaler() if overflow else None
    seen = []  # AdaLoRA's allocator reads the gradients: inf ones would turn its importance scores into NaN
    s = SimpleNamespace(model=model, optimizer=opt, scheduler=sched, scaler=scaler)
    took = steps.optimizer_step(s, 1.0, after_step=lambda: seen.append(model.weight.grad is not None))
    assert took is not overflow
    assert seen == ([] if overflow else [True])
    assert model.weight.grad is None


def test_loss_scaled_step_skips_an_overflowing_step_and_lowers_the_scale():
    before, model, scaler, sched = _step_with_scaler(float("inf"))
    assert torch.equal(before, model.weight)  # fp16 overflow: the step is skipped, weights untouched
    assert scaler.get_scale() == 2.0**7
    assert sched.last_epoch == 0  # the schedule waits for a step that happened
    assert model.weight.grad is None


class _Recorder(torch.nn.Module):
    """A stand-in classifier that records the batch shapes it is given and returns the first token id as logit."""

    def __init__(self):
        super().__init__()
        self.shapes = []
        self.config = type("Config", (), {"num_labels": 2})()

    def forward(self, input_ids, attention_mask):
        self.shapes.append(tuple(input_ids.shape))
        logits = torch.stack([input_ids[:, 0].float(), -input_ids[:, 0].float()], dim=1)
        return type("Out", (), {"logits": logits})()


def test_cpu_inference_runs_at_most_cpu_max_batch_rows_and_keeps_input_order():
    import numpy as np

    from loraclf.inference.predict import CPU_MAX_BATCH, forward_probs

    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 50, size=int(n)) for n in rng.integers(3, 20, size=100)]
    model = _Recorder()
    probs = forward_probs(model, ids, 0, torch.device("cpu"), "fp32", batch_size=128)
    assert max(rows for rows, _ in model.shapes) == CPU_MAX_BATCH < 128
    assert sum(rows for rows, _ in model.shapes) == 100
    # Row i's probabilities come from row i's own first token, whatever batch it ran in.
    first = np.array([x[0] for x in ids], dtype=float)
    expected = 1 / (1 + np.exp(-2 * first))
    assert np.allclose(probs[:, 0], expected)
    small = _Recorder()
    forward_probs(small, ids, 0, torch.device("cpu"), "fp32", batch_size=8)
    assert max(rows for rows, _ in small.shapes) == 8  # a smaller batch than the cap is kept


def test_lora_plus_speeds_up_only_the_b_matrices(tiny_bert_dir):
    """LoRA+ (Hayou et al. 2024): B at lr · ratio; A, DoRA's magnitudes, biases and the head at lr."""
    from loraclf.config import apply_overrides
    from loraclf.modeling.backbones import build_model
    from loraclf.modeling.methods import apply_adapters

    recipe = apply_overrides(
        Recipe(),
        [f"model.name={tiny_bert_dir}", "model.head=mlp", "adapter.method=dora", "adapter.bias=all",
         "train.loraplus_lr_ratio=16", "train.lr=1e-3"],
    )  # fmt: skip
    model = apply_adapters(build_model(str(tiny_bert_dir), 3, recipe.model), recipe.adapter)
    opt = make_optimizer(model, recipe, CPU)
    lr_of = {id(q): g["lr"] for g in opt.param_groups for q in g["params"]}
    by_kind = {}
    for name, q in model.named_parameters():
        if q.requires_grad:
            kind = next((k for k in ("lora_B", "lora_A", "magnitude", "bias") if k in name), "head")
            by_kind.setdefault(kind, set()).add(round(lr_of[id(q)], 9))
    assert by_kind["lora_B"] == {0.016}
    for kind in ("lora_A", "magnitude", "bias", "head"):
        assert by_kind[kind] == {0.001}, (kind, by_kind)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(q.requires_grad for q in model.parameters())
