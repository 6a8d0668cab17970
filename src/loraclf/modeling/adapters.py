"""Which parameters train: LoRA adapters through peft, the head alone, or the full model.

LoRA (Hu et al., 2021) freezes a pretrained weight ``W (d_out × d_in)`` and learns a low-rank update,
``h = W x + (alpha / r) · B A x`` with ``A (r × d_in)`` and ``B (d_out × r)``, so one adapted matrix costs
``r · (d_in + d_out)`` trainable parameters. loraclf resolves the user's target names to the model's full module
names *before* handing them to peft, because peft silently ignores target and rank-pattern keys that match nothing;
here a key that matches nothing is an error listing the names that exist. Per-layer ranks (a list, or an expression
in the layer index ``i`` such as ``8*2**(i//4)``) become an exact per-module ``rank_pattern``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass

from torch import nn

from loraclf.config import AdapterConfig
from loraclf.utils.errors import UserError, did_you_mean, short_list

try:  # GPT-2 style models use a transposed linear layer
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = ()

LINEAR_TYPES = (nn.Linear, Conv1D) if Conv1D else (nn.Linear,)
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class Target:
    """One adaptable matrix: full module name, layer index, shape, and whether it is GPT-2's Conv1D."""

    name: str
    layer: int | None
    d_in: int
    d_out: int
    conv1d: bool
    has_bias: bool


def layer_of(name: str) -> int | None:
    m = _LAYER_INDEX.search("." + name + ".")
    return int(m.group(1)) if m else None


def head_name(model: nn.Module) -> str:
    from loraclf.modeling.backbones import head_module_name

    return head_module_name(model)


def linear_modules(model: nn.Module) -> list[Target]:
    """Every linear layer inside the transformer blocks (the head excluded): the candidates for LoRA."""
    head = head_name(model)
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, LINEAR_TYPES) or name == head or name.startswith(head + "."):
            continue
        is_conv = bool(Conv1D) and isinstance(mod, Conv1D)
        if is_conv:
            d_in, d_out = mod.weight.shape
        else:
            d_out, d_in = mod.weight.shape
        out.append(Target(name, layer_of(name), int(d_in), int(d_out), is_conv, mod.bias is not None))
    return out


def short_names(targets: list[Target]) -> list[str]:
    """Names a user can type: the module path below the layer index (``attention.self.query``) and its last part."""
    names = []
    for t in targets:
        if t.layer is None:
            continue
        tail = t.name.split(f".{t.layer}.", 1)[-1]
        for n in (tail.rsplit(".", 1)[-1], tail):
            if n not in names:
                names.append(n)
    return names


def _matches(key: str, name: str) -> bool:
    return name == key or name.endswith("." + key)


def _alias(key: str, t: Target) -> bool:
    if t.layer is None:
        return False
    parts = t.name.split(f".{t.layer}.", 1)[-1].split(".")
    in_attention = any(p in ("attention", "attn", "self_attn", "crossattention") for p in parts)
    return key == "all-linear" or (key == "attention") == in_attention


def select_targets(model: nn.Module, spec: AdapterConfig) -> list[Target]:
    """Resolve target keys and the layer filter into concrete modules; any key matching nothing is an error."""
    candidates = linear_modules(model)
    layers = sorted({t.layer for t in candidates if t.layer is not None})
    if spec.layers is not None:
        bad = [i for i in spec.layers if i not in layers]
        if bad:
            raise UserError(
                f"adapter.layers: layer(s) {bad} do not exist; the model has layers {layers[0]}..{layers[-1]}"
            )
    chosen: dict[str, Target] = {}
    for key in spec.targets:
        if key in ("attention", "mlp", "all-linear"):
            hits = [t for t in candidates if _alias(key, t)]
        else:
            hits = [t for t in candidates if _matches(key, t.name)]
        if not hits:
            names = short_names(candidates)
            raise UserError(
                f"--targets: '{key}' matches no module of this model{did_you_mean(key, names)}; "
                f"its modules are: {short_list(names, 16)} (or the aliases attention, mlp, all-linear)"
            )
        for t in hits:
            if spec.layers is None or t.layer in spec.layers:
                chosen[t.name] = t
    if not chosen:
        raise UserError(
            "adapter.layers: no targeted module lies in the selected layers; widen adapter.layers"
        )
    return list(chosen.values())


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
}


def eval_schedule(expr: str, **names: float) -> float:
    """Evaluate an arithmetic expression in the given names (``8*2**(i//4)``) without ``eval``."""

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            return {"min": min, "max": max}[node.func.id](*(walk(a) for a in node.args))
        raise ValueError(ast.dump(node))

    try:
        return walk(ast.parse(expr, mode="eval"))
    except ZeroDivisionError:
        raise UserError(f"schedule expression '{expr}' divides by zero; fix the expression") from None
    except OverflowError:
        raise UserError(f"schedule expression '{expr}' gives a number too large for a rank; fix it") from None
    except (SyntaxError, ValueError, TypeError):
        allowed = ", ".join(names)
        raise UserError(
            f"schedule expression '{expr}' is not arithmetic in {allowed} (+ - * / // ** %, min, max); "
            "write e.g. 8*2**(i//4)"
        ) from None


def layer_ranks(spec: AdapterConfig, num_layers: int) -> dict[int, tuple[int, float]]:
    """Rank and alpha of every layer index: per-layer lists or expressions, else the uniform r and alpha."""
    out = {}
    for i in range(num_layers):
        if isinstance(spec.layer_ranks, list):
            if len(spec.layer_ranks) != num_layers:
                raise UserError(
                    f"--layer-ranks: {len(spec.layer_ranks)} ranks given but the model has {num_layers} layers; "
                    "give one rank per layer or an expression such as 8*2**(i//4)"
                )
            r = spec.layer_ranks[i]
        elif isinstance(spec.layer_ranks, str):
            r = eval_schedule(spec.layer_ranks, i=i)
        else:
            r = spec.r
        if (isinstance(r, float) and not math.isfinite(r)) or r != int(r) or not 1 <= r <= 2**31:
            raise UserError(
                f"{'adapter.layer_ranks' if spec.layer_ranks is not None else 'adapter.r (--rank)'} gives rank "
                f"{r} for layer {i}; ranks must be whole numbers from 1 to 2^31"
            )
        r = int(r)
        if isinstance(spec.layer_alphas, list):
            if len(spec.layer_alphas) != num_layers:
                raise UserError(
                    f"adapter.layer_alphas: {len(spec.layer_alphas)} values for {num_layers} layers"
                )
            alpha = float(spec.layer_alphas[i])
        elif isinstance(spec.layer_alphas, str):
            alpha = float(eval_schedule(spec.layer_alphas, i=i, r=r))
        elif spec.alpha is not None:
            alpha = float(spec.alpha)
        else:
            alpha = 2.0 * r  # the reports' rule of thumb: alpha = 2r
        out[i] = (r, alpha)
    return out


def num_layers_of(model: nn.Module) -> int:
    cfg = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    raise UserError(f"cannot tell the number of layers of {type(model).__name__}")


def lora_config(model: nn.Module, spec: AdapterConfig, task_type: str | None, **extra):
    """Build the exact peft LoraConfig for this model: full module names and a per-module rank pattern.

    ``extra`` goes to LoraConfig as is (DoRA, rsLoRA and the initialisation; see methods/lora.py).
    """
    from peft import LoraConfig

    targets = select_targets(model, spec)
    per_layer = layer_ranks(spec, num_layers_of(model))
    base_r, base_alpha = spec.r, float(spec.alpha if spec.alpha is not None else 2 * spec.r)
    rank_pattern, alpha_pattern = {}, {}
    for t in targets:
        r, alpha = (
            per_layer.get(t.layer, (base_r, base_alpha)) if t.layer is not None else (base_r, base_alpha)
        )
        if r > min(t.d_in, t.d_out):
            # B·A then has more parameters than the full update it stands for, and peft would try to allocate it.
            raise UserError(
                f"LoRA rank {r} exceeds the smaller side ({min(t.d_in, t.d_out)}) of {t.name} "
                f"({t.d_out}×{t.d_in}); use a rank of at most {min(t.d_in, t.d_out)}"
            )
        # peft matches pattern keys as suffixes of module names; the full name anchored by ^ is unambiguous.
        if r != base_r:
            rank_pattern[f"^{re.escape(t.name)}"] = r
        if alpha != base_alpha:
            alpha_pattern[f"^{re.escape(t.name)}"] = alpha
    return (
        LoraConfig(
            task_type=task_type,
            r=base_r,
            lora_alpha=base_alpha,
            lora_dropout=spec.dropout,
            bias=spec.bias,
            target_modules=[t.name for t in targets],
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            fan_in_fan_out=any(t.conv1d for t in targets),
            modules_to_save=[head_name(model)],
            **extra,
        ),
        targets,
        per_layer,
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) as peft reports them: a modules_to_save head counts twice in the total."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
