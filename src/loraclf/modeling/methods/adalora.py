"""AdaLoRA (Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning") through peft's
AdaLoraConfig, and the hooks that run its rank allocation inside loraclf's loop.

An SVD-shaped update ``P·Λ·Q`` (peft's ``lora_B``, ``lora_E``, ``lora_A``) whose singular values are pruned during
training from the initial rank ``adapter.r`` to an average of ``adapter.target_rank``; counted at the initial rank,
``r · (d_in + d_out + 1)`` per adapted matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraclf.config import AdapterConfig
from loraclf.modeling.methods import _peft
from loraclf.modeling.methods.base import Method, describe_ranked

if TYPE_CHECKING:
    from torch import nn


def _config(model: nn.Module, spec: AdapterConfig, meta: bool):
    from peft import AdaLoraConfig

    targets = _peft.resolved_targets(model, spec)
    return AdaLoraConfig(
        **_peft.common_kwargs(model),
        init_r=spec.r,
        target_r=spec.target_rank or max(1, spec.r // 2),
        lora_alpha=float(spec.alpha if spec.alpha is not None else 2 * spec.r),
        lora_dropout=spec.dropout,
        bias=spec.bias,
        target_modules=_peft.names(targets),
        fan_in_fan_out=_peft.conv1d(targets),
        total_step=1_000,  # a placeholder: training sets the real schedule in prepare() before step 1
    )


def freeze_ranknum(model: nn.Module) -> None:
    """Freeze ``ranknum``, a constant (the initial rank) that peft leaves trainable when built on the meta device and
    frozen on real weights; it never receives a gradient, so the plan must not count it."""
    for name, p in model.named_parameters():
        if ".ranknum." in name:
            p.requires_grad_(False)


def prepare(model: nn.Module, total_steps: int) -> None:
    """Give AdaLoRA the real schedule: 10% of the steps before pruning starts, the last 20% at the final ranks."""
    config = model.peft_config[model.active_adapter]
    config.tinit = total_steps // 10
    config.tfinal = total_steps // 5
    if config.tinit >= total_steps - config.tfinal:  # very short runs: prune from the first step
        config.tinit, config.tfinal = 0, 0
    model.base_model.rankallocator.set_total_step(total_steps)


def after_step(model: nn.Module, step: int) -> None:
    """peft's rank allocation; it reads the gradients, so it runs after optimizer.step and before zero_grad."""
    model.base_model.update_and_allocate(step)


def orth_loss(model: nn.Module):
    """``orth_reg_weight · mean ‖PᵀP − I‖_F`` over AdaLoRA's P and Q, as peft's AdaLoraModel.forward adds it.

    peft adds the term only inside its own forward and only when labels are passed; loraclf computes its own loss,
    so the same formula (peft's, on the same parameters) is added here.
    """
    import torch

    adapter = model.active_adapter
    weight = model.peft_config[adapter].orth_reg_weight
    terms = []
    for n, p in model.named_parameters():
        if ("lora_A" in n or "lora_B" in n) and adapter in n:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(*cov.size(), dtype=cov.dtype, device=cov.device)
            terms.append(torch.norm(cov - eye, p="fro"))
    return weight * torch.stack(terms).mean() if terms else 0.0


def checkpoint_state(model: nn.Module) -> dict:
    """What a checkpoint needs beyond the weights for ``--resume`` to continue AdaLoRA exactly: the rank
    allocator's importance scores and their moving averages (peft keeps them outside the parameters, so without
    them a resumed run would restart its averages from zero and prune differently) and the rank pattern so far."""
    allocator = model.base_model.rankallocator
    config = model.peft_config[model.active_adapter]

    def cpu(table: dict) -> dict:
        return {name: t.detach().to("cpu").clone() for name, t in table.items()}

    return {
        "ipt": cpu(allocator.ipt),
        "exp_avg_ipt": cpu(allocator.exp_avg_ipt),
        "exp_avg_unc": cpu(allocator.exp_avg_unc),
        "rank_pattern": config.rank_pattern,
    }


def restore_state(model: nn.Module, state: dict) -> None:
    """Put :func:`checkpoint_state`'s dict back into a freshly built model (on the parameters' device)."""
    allocator = model.base_model.rankallocator
    device = next(p.device for p in model.parameters() if p.requires_grad)
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        setattr(allocator, key, {name: t.to(device) for name, t in state.get(key, {}).items()})
    model.peft_config[model.active_adapter].rank_pattern = state.get("rank_pattern")


def final_state(model: nn.Module) -> dict:
    """The rank each adapted matrix ended with (singular values left unmasked), for run.json."""
    ranks = {}
    for n, p in model.named_parameters():
        if n.endswith("lora_E." + model.active_adapter):
            module = n.removeprefix("base_model.model.").rsplit(".lora_E", 1)[0]
            ranks[module] = int((p.detach() != 0).sum())
    config = model.peft_config[model.active_adapter]
    return {
        "method": "adalora",
        "init_rank": config.init_r,
        "target_rank": config.target_r,
        "total_step": config.total_step,
        "final_ranks": ranks,
        "final_rank_total": sum(ranks.values()),
    }


ADALORA = Method(
    name="adalora",
    summary="AdaLoRA: SVD-shaped updates whose ranks are pruned to adapter.target_rank during training",
    source="Zhang et al. 2023, Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (peft AdaLoraConfig)",
    family="adalora",
    build=_config,
    after_build=freeze_ranknum,
    kinds={"lora_A": "lora A", "lora_B": "lora B", "lora_E": "adalora E"},
    accepts=frozenset({"targets", "r", "alpha", "dropout", "target_rank", "bias_lora_only"}),
    merges=True,
    default_targets=_peft.peft_default_targets("ADALORA"),
    describe=describe_ranked,
    after_step=after_step,
    extra_loss=orth_loss,
    prepare=prepare,
    final_state=final_state,
    checkpoint_state=checkpoint_state,
    restore_state=restore_state,
)
