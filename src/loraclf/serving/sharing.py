"""One copy of each backbone's weights in memory, however many runs over it are served.

A run's classifier is rebuilt exactly as ``loraclf predict`` builds it unmerged
(:func:`loraclf.inference.run.build_trained_model` with ``merge=False``): the pretrained backbone, the method's
peft wrapper, the run's trained weights. That is one full backbone per run. :class:`SharedWeights` then walks the
rebuilt model and, for every parameter and buffer that is bit-for-bit the pretrained backbone's, puts the one shared
tensor in its place; the run's duplicate is freed. What stays the run's own is what its training changed: adapter
matrices, the trained head, BitFit's biases, PiSSA's residual weights, all of a fully fine-tuned model (and VeRA's
frozen random projections, which peft makes per model from a fixed seed). So each
served run costs about its ``model.safetensors``, and a run that changed the backbone itself (``full``, or an
initialisation that rewrites the base weights) keeps its own copy of what it changed, which the load line reports.

Why not peft's own multi-adapter model (``load_adapter``/``set_adapter``)? One ``PeftModel`` holds adapters of one
peft type only (LoRA and IA³ cannot sit in one model; ``PeftMixedModel`` mixes the LoRA family but not IA³, VeRA or
prompt tuning, and BitFit, head-only and full runs are no peft adapters at all), and ``set_adapter`` switches the
shared model's state, so batches of different adapters would run one after the other through one object anyway.
Separate wrappers over shared tensors serve every method, need no switching, and each computes exactly the model
``predict`` computes. Serving never merges an adapter (merging writes into the base weights, which are shared here)
and never writes a weight.

Tensors are matched by name (peft's and the head's prefixes removed, so a run with the model's own head and one with
loraclf's pooled head share the encoder) and then compared with :func:`torch.equal`, so a tensor is shared only when
it is identical: sharing can save memory but never change an answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections import defaultdict

import torch
from torch import nn

from loraclf.config import Recipe

# Path parts that peft's wrappers insert between the model's own module names.
WRAPPER_PARTS = ("base_layer",)
WRAPPER_PREFIXES = ("base_model.model.", "base_model.")


def backbone_key(recipe: Recipe) -> tuple[str, str | None]:
    """Which pretrained weights a run starts from: the resolved weights source and the hub revision."""
    from loraclf.modeling.backbones import resolve_weights

    return resolve_weights(recipe.model.name), recipe.model.revision


def _canonical_paths(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """One path per module object: peft reaches some modules twice (prompt tuning's ``word_embeddings`` is the
    backbone's embedding), and the path inside the wrapped model is the one that names the pretrained tensor."""
    paths: dict[int, list[str]] = defaultdict(list)
    modules = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths[id(module)].append(path)
        modules[id(module)] = module
    chosen = {}
    for key, options in paths.items():
        inside = [p for p in options if p.startswith("base_model")]
        chosen[key] = ((inside or options)[0], modules[key])
    return chosen


def _strip(path: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def _own_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The names under which a classifier holds its encoder: loraclf's ``backbone.``, the HF class's own prefix."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = getattr(base, "base_model_prefix", "") or ""
    return ("backbone.", *((own + ".",) if own else ()))


def tensor_name(path: str, own: tuple[str, ...]) -> str:
    """The pretrained backbone's name of a tensor of a run's model (``base_model.model.backbone.encoder.layer.0.
    attention.self.query.base_layer.weight`` → ``encoder.layer.0.attention.self.query.weight``)."""
    parts = [p for p in _strip(path, WRAPPER_PREFIXES).split(".") if p not in WRAPPER_PARTS]
    return _strip(".".join(parts), own)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def drop_untrained_heads(model: nn.Module) -> None:
    """peft keeps the untrained head beside each trained copy (``modules_to_save``); prediction reads only the
    trained one, so the original is pointed at it and its own weights freed."""
    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper) and module.active_adapters:
            trained = module.modules_to_save[module.active_adapters[0]]
            if module.original_module is not trained:
                module.original_module = trained


def release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise, and the resident size would count
    every rebuilt backbone); a no-op where the C library has no ``malloc_trim``."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


class SharedWeights:
    """The pretrained tensors of each backbone, held once; :meth:`adopt` puts them into a run's model."""

    def __init__(self):
        self._pools: dict[tuple, dict[str, torch.Tensor]] = {}
        self._users: dict[tuple, int] = {}  # runs sharing each pool

    def pool(self, recipe: Recipe, device: torch.device) -> dict[str, torch.Tensor]:
        """The named pretrained tensors of the run's backbone (loaded on first use, then kept while a run shares
        them)."""
        key = backbone_key(recipe)
        if key not in self._pools:
            self._pools[key] = self._load(recipe, device)
        return self._pools[key]

    @staticmethod
    def _load(recipe: Recipe, device: torch.device) -> dict[str, torch.Tensor]:
        """The bare pretrained encoder (pooler included where the architecture has one), as named tensors."""
        from transformers import AutoModel

        from loraclf.modeling.backbones import load_config

        source, revision = backbone_key(recipe)
        config = load_config(recipe.model.name, model_cfg=recipe.model)
        encoder = AutoModel.from_pretrained(source, config=config, revision=revision).to(device).eval()
        encoder.requires_grad_(False)
        return {**dict(encoder.named_parameters()), **dict(encoder.named_buffers())}

    def adopt(self, model: nn.Module, recipe: Recipe, trained: set[str]) -> tuple[int, int]:
        """Replace every tensor of ``model`` identical to the backbone's pretrained one by the shared tensor.

        Args:
            model: A run's rebuilt (unmerged) classifier, on the device the pool lives on.
            recipe: The run's recipe (names its backbone).
            trained: Names of the tensors loaded from the run's ``model.safetensors``; they stay the run's own.

        Returns:
            (bytes of weights now shared with the pool, bytes of weights and buffers the run holds on its own).
        """
        drop_untrained_heads(model)
        pool = self.pool(recipe, next(model.parameters()).device)
        own_prefixes = _own_prefixes(model)
        for path, module in _canonical_paths(model).values():
            for table in (module._parameters, module._buffers):
                for leaf, t in list(table.items()):
                    full = f"{path}.{leaf}" if path else leaf
                    ref = None if t is None or full in trained else pool.get(tensor_name(full, own_prefixes))
                    if ref is not None and ref is not t and self._same(t, ref):
                        table[leaf] = ref
        pooled = {id(t) for t in pool.values()}
        # Weights count: a shared buffer (the position indices) is a few kB held once per backbone.
        shared = sum(_nbytes(p) for p in model.parameters() if id(p) in pooled)
        own = sum(_nbytes(t) for t in [*model.parameters(), *model.buffers()] if id(t) not in pooled)
        key = backbone_key(recipe)
        self._users[key] = self._users.get(key, 0) + (shared > 0)
        if not self._users[key]:  # loaded for a run that shares none of it (a full fine-tune): not kept idle
            del self._pools[key], self._users[key]
        release_free_memory()
        return shared, own

    @staticmethod
    def _same(t: torch.Tensor, ref: torch.Tensor) -> bool:
        if t.shape != ref.shape or t.dtype != ref.dtype:
            return False
        with torch.no_grad():
            return bool(torch.equal(t, ref.to(t.device)))
