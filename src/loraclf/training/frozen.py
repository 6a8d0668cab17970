"""Caching the frozen lower layers: when adapters start at layer k, layers 0..k-1 are computed once, not every epoch.

With LoRA on the upper layers only (``adapter.layers``, or per-layer ranks of 0 below k), nothing below layer k
has a trainable weight, so the states entering layer k depend on the text alone, as long as the lower layers draw no
dropout masks. ``FrozenCache`` runs the lower layers once over the training rows (a forward hook on layer k-1
captures its output and stops the pass there), keeps each row's states unpadded in one flat tensor, and during
training swaps layers 0..k-1 for stand-ins: layer k-1's stand-in hands back the cached states of the current
batch, the others pass their input through. The model's own forward (embeddings, masks, upper layers, pooling,
head) runs unchanged, so the saving is the forward cost of k layers per step, for any architecture with a list of
blocks. Backward never reached the frozen layers anyway: nothing below k needs a gradient.

With several processes (distributed.py) each rank caches only the rows it owns and trains on those; the cache
maps the run's row numbers to its own. The size check compares the cache with the memory the process may still
take where the cache lives: free GPU memory on CUDA; on a CPU the least of available memory and the headroom under
the cgroup's memory limit (a container's limit, not the host's RAM: :mod:`loraclf.utils.memory`), divided among the
job's processes on the machine, which all build their caches at once.

Before training uses it, the cache checks itself: the model's logits on one batch through the stand-ins must match
the logits of the real layers. Anything it cannot serve (trainable parameters below k, an architecture without a
block list, a mismatch, too little memory) leaves training as it was and says why in one line.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from loraclf.data.batching import collate, sorted_batches
from loraclf.modeling.adapters import layer_of
from loraclf.utils.devices import autocast
from loraclf.utils.memory import size_text, usable_memory
from loraclf.utils.progress import bar as progress_bar

# Share of the memory still free (the model is loaded by then) the cache may take: the rest holds a training
# step's activations and gradients, the optimizer's state (small with adapters) and the evaluation's batches.
MEMORY_SHARE = 0.5


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once layer k-1 has run."""


def block_list(model: nn.Module) -> nn.ModuleList | None:
    """The transformer's list of blocks (``encoder.layer``, GPT-2's ``h``): the longest numbered ModuleList."""
    lists = [
        mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList)
        and len(mod) > 1
        and name.rsplit(".", 1)[-1] in ("layer", "layers", "h")
    ]
    best = max(lists, key=len, default=None)
    return best


def first_trainable_layer(model: nn.Module, head: str) -> int | None:
    """The lowest block index holding a trainable parameter; None if one trains outside the blocks and the head."""
    lowest = None
    for name, prm in model.named_parameters():
        if not prm.requires_grad:
            continue
        if f".{head}." in f".{name}." or "modules_to_save" in name:
            continue
        layer = layer_of(name)
        if layer is None:
            return None  # e.g. embeddings or a norm outside the blocks train: nothing is frozen below
        lowest = layer if lowest is None else min(lowest, layer)
    return lowest


class _Pass(nn.Module):
    """Stands in for a frozen block below k-1: its input is never used, so it returns it untouched."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.as_tuple else hidden_states


class _Replay(nn.Module):
    """Stands in for block k-1: returns the cached output of the frozen layers for the current batch."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple
        self.states: torch.Tensor | None = None

    def forward(self, hidden_states, *args, **kwargs):
        states = (
            self.states.to(hidden_states.dtype) if self.states.dtype != hidden_states.dtype else self.states
        )
        return (states,) if self.as_tuple else states


class FrozenCache:
    """The outputs of blocks 0..k-1 for every training row, and the module swap that replays them."""

    def __init__(
        self,
        blocks: nn.ModuleList,
        k: int,
        flat: torch.Tensor,
        offsets: np.ndarray,
        as_tuple: bool,
        local: np.ndarray | None = None,
    ):
        self.blocks, self.k, self.flat, self.offsets = blocks, k, flat, offsets
        self.local = local  # run row number → cached row (None: the same), when a rank caches its own rows
        self.real = list(blocks[:k])
        self.stand_ins = [_Pass(as_tuple) for _ in range(k - 1)] + [_Replay(as_tuple)]
        self.zero_row = flat.shape[0] - 1  # the flat tensor ends with a row of zeros for padding positions

    @property
    def replay(self) -> _Replay:
        return self.stand_ins[-1]

    def select(self, rows: np.ndarray, width: int) -> None:
        """Load the cached states of ``rows`` into the replay, padded to ``width`` positions."""
        if self.local is not None:
            rows = self.local[rows]
        index = np.full((len(rows), width), self.zero_row, dtype=np.int64)
        for j, i in enumerate(rows):
            start, end = self.offsets[i], self.offsets[i + 1]
            index[j, : end - start] = np.arange(start, end)
        self.replay.states = self.flat[torch.from_numpy(index).to(self.flat.device)]

    def install(self) -> None:
        for i, mod in enumerate(self.stand_ins):
            self.blocks[i] = mod

    def uninstall(self) -> None:
        for i, mod in enumerate(self.real):
            self.blocks[i] = mod

    @contextlib.contextmanager
    def bypassed(self):
        """The real layers for a while (evaluation runs on other rows than the cached ones)."""
        self.uninstall()
        try:
            yield
        finally:
            self.install()


def _capture(model, blocks, k, ids, pad_id, device, precision, batch_size, progress):
    """Run the model up to block k-1 on every row; return the flat states, offsets and the blocks' output kind."""
    caught = {}

    def hook(_module, _inputs, output):
        caught["tuple"] = isinstance(output, tuple)
        caught["states"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    lengths = np.array([len(x) for x in ids])
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    flat = None
    handle = blocks[k - 1].register_forward_hook(hook)
    try:
        with torch.no_grad(), progress_bar(len(ids), f"cache layers 0-{k - 1}", progress) as bar:
            for rows in sorted_batches(lengths, batch_size):
                input_ids, mask = collate(ids, rows, pad_id, device)
                with autocast(device, precision), contextlib.suppress(_Stop):
                    model(input_ids=input_ids, attention_mask=mask)
                states = caught["states"]
                if flat is None:
                    dtype = torch.bfloat16 if precision == "bf16" else states.dtype
                    flat = torch.zeros((int(offsets[-1]) + 1, states.shape[-1]), dtype=dtype, device=device)
                for j, i in enumerate(rows):
                    flat[offsets[i] : offsets[i + 1]] = states[j, : lengths[i]]
                bar.update(len(rows))
    finally:
        handle.remove()
    return flat, offsets, caught.get("tuple", False)


def device_memory(device: torch.device) -> tuple[int | None, str]:
    """Bytes the cache may draw on where it lives, and what they are: free GPU memory on CUDA; on a CPU what this
    process may still take (cgroup limit and available memory, its share among the machine's ranks)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free, f"the {free / 2**30:.1f} GB free on {device}"
    return usable_memory()


def build(
    model, head: str, ids, pad_id, device, precision, batch_size, progress, say, rows=None
) -> FrozenCache | None:
    """A checked FrozenCache for the training rows, or None (with one line through ``say``) when it cannot help.

    ``rows`` (run row numbers) limits the cache to those rows: a rank's own share when several train.
    """
    blocks = block_list(model)
    k = first_trainable_layer(model, head)
    if blocks is None or not k:
        return None  # adapters in layer 0 (or outside the blocks): nothing frozen below them
    local = None
    if rows is not None:
        local = np.full(len(ids), -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        ids = [ids[i] for i in rows]
    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", 0)
    need = sum(len(x) for x in ids) * hidden * (2 if precision == "bf16" else 4)
    memory, what = device_memory(device)
    if memory is not None and need > MEMORY_SHARE * memory:
        # Activations and the optimizer need the rest: training without the cache is only slower.
        say(f"frozen-layer cache: off ({size_text(need)} would exceed {MEMORY_SHARE:.0%} of {what})")
        return None
    # The cached states must not depend on dropout: turn it off below k, as the recipe option promises.
    for block in blocks[:k]:
        for mod in block.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0
    was_training = model.training
    model.eval()
    try:
        flat, offsets, as_tuple = _capture(
            model, blocks, k, ids, pad_id, device, precision, batch_size, progress
        )
        cache = FrozenCache(blocks, k, flat, offsets, as_tuple)
        ok = _agrees(model, cache, ids, pad_id, device, precision)
        cache.local = local
    except (torch.OutOfMemoryError, MemoryError):
        # Memory taken since the plan (another process, fragmentation): train without the cache, as planned off.
        if device.type == "cuda":
            torch.cuda.empty_cache()
        say(f"frozen-layer cache: off (out of {device.type} memory while computing its {size_text(need)})")
        return None
    finally:
        model.train(was_training)
    if not ok:
        say("frozen-layer cache: off (its replayed states do not reproduce this model's output)")
        return None
    say(f"frozen-layer cache: layers 0-{k - 1} computed once for {len(ids):,} rows ({need / 2**20:,.0f} MB)")
    return cache


def _agrees(model, cache: FrozenCache, ids, pad_id, device, precision) -> bool:
    """Logits of a few rows through the real layers and through the replay: equal up to rounding."""
    rows = np.arange(min(8, len(ids)))
    input_ids, mask = collate(ids, rows, pad_id, device)
    with torch.no_grad(), autocast(device, precision):
        real = model(input_ids=input_ids, attention_mask=mask).logits.float()
        cache.install()
        try:
            cache.select(rows, input_ids.shape[1])
            replayed = model(input_ids=input_ids, attention_mask=mask).logits.float()
        finally:
            cache.uninstall()
    tol = 5e-2 if precision in ("bf16", "fp16") else 1e-4
    return bool(torch.allclose(real, replayed, atol=tol, rtol=tol))
