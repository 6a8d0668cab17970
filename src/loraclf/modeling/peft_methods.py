"""peft configurations of the adapter methods beyond plain LoRA, their parameter kinds and AdaLoRA's training hooks.

Every method here is built by peft; loraclf only chooses the modules and the sizes, so that the same call makes
the meta-device plan and the trained model (see methods.py). Per method, what trains on an adapted matrix
``W (d_out × d_in)``:

* **DoRA** (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): LoRA's ``B·A`` for the direction plus a
  magnitude vector of ``d_out``; ``r · (d_in + d_out) + d_out``.
* **rsLoRA** (Kalajievo 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA"): LoRA scaled by
  ``alpha / sqrt(r)``; same count as LoRA. **PiSSA** / **OLoRA** initialise A and B from the weight's principal
  singular vectors / a QR decomposition (and subtract them from ``W``): same shapes, so the plan builds them with
  the default initialisation on the meta device, where there is no weight to decompose.
* **VeRA** (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation"): one pair of frozen random
  projections shared by all layers (buffers, not trained) and two scaling vectors per matrix: ``d_out + r``.
* **AdaLoRA** (Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning"): an SVD-shaped
  update ``P·Λ·Q`` (peft's ``lora_B``, ``lora_E``, ``lora_A``) whose singular values are pruned during training from
  the initial rank ``adapter.r`` to an average of ``adapter.target_rank``; counted at the initial rank,
  ``r · (d_in + d_out + 1)``.
* **IA³** (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
  Learning"): one learned vector rescaling a matrix's output (``d_out``) or, for feed-forward matrices, its input
  (``d_in``).
* **LoHa** (Hyeon-Woo et al. 2022, "FedPara"): the Hadamard product of two rank-r products,
  ``2 · r · (d_in + d_out)``. **LoKr** (Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS
  Fine-Tuning to Model Evaluation"): a Kronecker product of a small full factor and a rank-r factor.
* **Prompt tuning** (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"):
  ``virtual_tokens × hidden`` input embeddings prepended to every text. **Prefix tuning** (Li & Liang 2021,
  "Prefix-Tuning: Optimizing Continuous Prompts for Generation"): key/value prefixes in every layer,
  ``virtual_tokens × layers × 2 × hidden``.

Where ``adapter.targets`` is null each method takes peft's default modules for the architecture (peft's
``TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING``), resolved to full module names so a name matching nothing is an
error; LoRA keeps loraclf's own query/value defaults (modeling/defaults.py) so existing recipes keep their counts.
"""

from __future__ import annotations

import dataclasses
import inspect

from torch import nn

from loraclf.config import AdapterConfig
from loraclf.modeling.adapters import head_name, lora_config, select_targets
from loraclf.utils.errors import UserError

PLANNED_AS_DEFAULT_INIT = (
    "pissa",
    "olora",
    "orthogonal",
)  # same shapes as the default init; need real weights
DATA_INITS = ("eva", "corda", "loftq", "mica")  # need calibration data or extra configs loraclf does not take


def _task_type(model: nn.Module) -> str | None:
    # loraclf's own pooled head is called "head"; peft's SEQ_CLS task type would look for "classifier"/"score".
    return None if head_name(model) == "head" else "SEQ_CLS"


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def resolved_targets(model: nn.Module, spec: AdapterConfig, method: str) -> list:
    """The targeted modules: the recipe's names, or the method's default for this architecture."""
    if spec.targets is not None:
        if not spec.targets:
            raise UserError("adapter.targets (--targets) is empty; name at least one module or leave it null")
        return select_targets(model, spec)
    return select_targets(model, dataclasses.replace(spec, targets=default_targets(model, method)))


def default_targets(model: nn.Module, method: str) -> list[str]:
    """peft's default target modules of ``method`` for this model type (LoRA: loraclf's query/value defaults)."""
    from peft.utils import constants

    from loraclf.modeling.defaults import QV_TARGETS

    kind = _model_type(model)
    if method == "lora":
        return list(QV_TARGETS.get(kind, ["attention"]))
    table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{method.upper()}_TARGET_MODULES_MAPPING")
    if kind not in table:
        raise UserError(
            f"--targets: peft has no default {method} modules for model type '{kind}'; name them with --targets"
        )
    return list(table[kind])


def _names(targets) -> list[str]:
    return [t.name for t in targets]


def _conv1d(targets) -> bool:
    return any(t.conv1d for t in targets)


def lora_family(model: nn.Module, spec: AdapterConfig, dora: bool, meta: bool):
    """LoraConfig for LoRA/DoRA with rsLoRA scaling and peft's initialisations (default init when planning)."""
    init = spec.init
    if meta and isinstance(init, str) and init.startswith(PLANNED_AS_DEFAULT_INIT):
        init = True  # identical parameter shapes; the decomposition itself needs real weights
    if spec.targets is None:
        spec = dataclasses.replace(spec, targets=default_targets(model, "lora"))
    extra = {"use_dora": dora, "use_rslora": spec.rslora, "init_lora_weights": init}
    config, _, _ = lora_config(model, spec, _task_type(model), **extra)
    return config


def check_init(spec: AdapterConfig) -> None:
    init = spec.init
    if isinstance(init, bool):
        return
    ok = (
        init == "gaussian"
        or init in PLANNED_AS_DEFAULT_INIT
        or (init.startswith("pissa_niter_") and init.removeprefix("pissa_niter_").isdigit())
    )
    if init in DATA_INITS:
        raise UserError(
            f"adapter.init: '{init}' needs calibration data or its own config; loraclf cannot plan it"
        )
    if not ok:
        raise UserError(
            f"adapter.init: '{init}' is not one of true, false, gaussian, pissa, pissa_niter_N, olora, orthogonal"
        )


def vera_config(model: nn.Module, spec: AdapterConfig):
    from peft import VeraConfig

    targets = resolved_targets(model, spec, "vera")
    return VeraConfig(
        task_type=_task_type(model),
        r=spec.r,
        target_modules=_names(targets),
        vera_dropout=spec.dropout,
        bias="vera_only" if spec.bias == "lora_only" else spec.bias,
        fan_in_fan_out=_conv1d(targets),
        modules_to_save=[head_name(model)],
        projection_prng_key=0,  # the shared projections are regenerated from this key when a run is loaded
    )


def adalora_config(model: nn.Module, spec: AdapterConfig):
    from peft import AdaLoraConfig

    targets = resolved_targets(model, spec, "adalora")
    return AdaLoraConfig(
        task_type=_task_type(model),
        init_r=spec.r,
        target_r=spec.target_rank or max(1, spec.r // 2),
        lora_alpha=float(spec.alpha if spec.alpha is not None else 2 * spec.r),
        lora_dropout=spec.dropout,
        bias=spec.bias,
        target_modules=_names(targets),
        fan_in_fan_out=_conv1d(targets),
        modules_to_save=[head_name(model)],
        total_step=1_000,  # a placeholder: training sets the real schedule in adalora_prepare before step 1
    )


def ia3_config(model: nn.Module, spec: AdapterConfig):
    from peft import IA3Config
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF

    targets = _names(resolved_targets(model, spec, "ia3"))
    ff_keys = FF.get(_model_type(model), [])
    # Feed-forward matrices are rescaled on their input (peft's rule); peft needs them to be a subset of targets.
    feedforward = [n for n in targets if any(n == k or n.endswith("." + k) for k in ff_keys)]
    return IA3Config(
        task_type=_task_type(model),
        target_modules=targets,
        feedforward_modules=feedforward,
        fan_in_fan_out=_conv1d(resolved_targets(model, spec, "ia3")),
        modules_to_save=[head_name(model)],
    )


def lycoris_config(model: nn.Module, spec: AdapterConfig, method: str):
    from peft import LoHaConfig, LoKrConfig

    targets = resolved_targets(model, spec, method)
    if _conv1d(targets):
        raise UserError(
            f"adapter.method {method}: peft's {method} cannot adapt GPT-2's Conv1D layers "
            f"({targets[0].name.rsplit('.', 1)[-1]}); use lora, dora, vera, adalora or ia3"
        )
    cls = LoHaConfig if method == "loha" else LoKrConfig
    return cls(
        task_type=_task_type(model),
        r=spec.r,
        alpha=float(spec.alpha if spec.alpha is not None else 2 * spec.r),
        module_dropout=spec.dropout,
        target_modules=_names(targets),
        modules_to_save=[head_name(model)],
    )


def prompt_config(model: nn.Module, spec: AdapterConfig, prefix: bool):
    from peft import PrefixTuningConfig, PromptTuningConfig

    if prefix:
        # peft hands the prefixes to the wrapped model as `past_key_values`; transformers 5 renamed that argument
        # `cache` and peft only finds it by signature, so the prefixes go through loraclf's own head (which takes
        # both names) into a backbone whose attention reads a cache. HF's own classification heads take neither.
        if head_name(model) != "head":
            raise UserError(
                f"adapter.method prefix: {type(model).__name__}'s own head cannot take peft's key/value prefixes "
                "in this transformers; set model.head=mlp or model.head=linear"
            )
        if "cache" not in inspect.signature(model.backbone.forward).parameters:
            raise UserError(
                f"adapter.method prefix: {type(model.backbone).__name__} has no key/value cache to hold the "
                "prefixes; use adapter.method prompt"
            )
    cls = PrefixTuningConfig if prefix else PromptTuningConfig
    return cls(
        task_type="SEQ_CLS", num_virtual_tokens=spec.virtual_tokens, modules_to_save=[head_name(model)]
    )


def after_build(model: nn.Module, spec: AdapterConfig) -> nn.Module:
    """Settle what trains after peft built the model, identically on the meta device and on real weights.

    AdaLoRA's ``ranknum`` is a constant (the initial rank) that peft leaves trainable when built on the meta device
    and frozen on real weights; it never receives a gradient, so it is frozen. Methods whose peft config has no bias
    option train every bias themselves under bias=all.
    """
    for name, p in model.named_parameters():
        if ".ranknum." in name:
            p.requires_grad_(False)
        elif spec.bias == "all" and spec.method in BIAS_BY_LORACLF and name.endswith("bias"):
            p.requires_grad_(True)
    return model


BIAS_BY_LORACLF = ("ia3", "loha", "lokr", "prompt", "prefix")


def merge(model: nn.Module) -> nn.Module:
    """Fold the trained method into the frozen weights and drop peft's wrappers (``merge_and_unload``).

    The trained head copies (peft's ``modules_to_save``) are put in place first: peft's VeRA, IA³, LoHa and LoKr
    unloading reads a ``weight`` from each wrapper it replaces, which loraclf's MLP head (a Sequential) has not.
    """
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, module.modules_to_save[module.active_adapter])
    return model.merge_and_unload()


# --- parameter kinds for the plan breakdown ---------------------------------------------------------------------

KINDS = {
    "lora_magnitude_vector": "dora magnitude",
    "lora_A": "lora A",
    "lora_B": "lora B",
    "lora_E": "adalora E",
    "vera_lambda_b": "vera lambda_b",
    "vera_lambda_d": "vera lambda_d",
    "vera_A": "vera shared A",
    "vera_B": "vera shared B",
    "ia3_l": "ia3 vector",
    "hada_w1_a": "loha factor",
    "hada_w1_b": "loha factor",
    "hada_w2_a": "loha factor",
    "hada_w2_b": "loha factor",
    "lokr_w1": "lokr factor",
    "lokr_w1_a": "lokr factor",
    "lokr_w1_b": "lokr factor",
    "lokr_w2": "lokr factor",
    "lokr_w2_a": "lokr factor",
    "lokr_w2_b": "lokr factor",
    "prompt_encoder": "virtual tokens",
}


def param_kind(name: str) -> str | None:
    """The breakdown kind of a trainable parameter name (``lora A``, ``dora magnitude``, ``virtual tokens``…)."""
    for part in name.split("."):
        if part in KINDS:
            return KINDS[part]
    return None


# --- AdaLoRA inside loraclf's loop -------------------------------------------------------------------------------


def adalora_prepare(model: nn.Module, total_steps: int) -> None:
    """Give AdaLoRA the real schedule: 10% of the steps before pruning starts, the last 20% at the final ranks."""
    config = model.peft_config[model.active_adapter]
    config.tinit = total_steps // 10
    config.tfinal = total_steps // 5
    if config.tinit >= total_steps - config.tfinal:  # very short runs: prune from the first step
        config.tinit, config.tfinal = 0, 0
    model.base_model.rankallocator.set_total_step(total_steps)


def adalora_after_step(model: nn.Module, step: int) -> None:
    """peft's rank allocation; it reads the gradients, so it runs after optimizer.step and before zero_grad."""
    model.base_model.update_and_allocate(step)


def adalora_orth_loss(model: nn.Module):
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


def adalora_checkpoint_state(model: nn.Module) -> dict:
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


def adalora_restore_state(model: nn.Module, state: dict) -> None:
    """Put :func:`adalora_checkpoint_state`'s dict back into a freshly built model (on the parameters' device)."""
    allocator = model.base_model.rankallocator
    device = next(p.device for p in model.parameters() if p.requires_grad)
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        setattr(allocator, key, {name: t.to(device) for name, t in state.get(key, {}).items()})
    model.peft_config[model.active_adapter].rank_pattern = state.get("rank_pattern")


def adalora_final_state(model: nn.Module) -> dict:
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
