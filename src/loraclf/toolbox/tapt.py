"""Task-adaptive pretraining (TAPT): masked-LM training with LoRA on the task's own texts, merged into the backbone.

Gururangan et al., "Don't Stop Pretraining: Adapt Language Models to Domains and Tasks" (ACL 2020) continue the
masked-LM objective on the unlabelled texts of the task before fine-tuning the classifier; the gain is largest
where the texts to classify differ from the pretraining corpus. loraclf's version, ``loraclf tapt``:

1. **Texts.** The training texts (``--train``, labels ignored) and every ``--unlabelled`` file, cleaned as the recipe
   cleans them (``data.clean``), empty rows and exact duplicates dropped; ``--max-texts N`` keeps a seeded sample.
2. **Model.** The recipe's backbone (``model.name``) as a masked LM (``AutoModelForMaskedLM``). A backbone shipped
   without a masked-LM head, such as the offline MiniLM (a sentence-transformers BERT), gets a fresh head: the
   transform (dense + LayerNorm) and the output bias are newly initialised, while the decoder matrix *is* the word
   embedding matrix (``tie_word_embeddings``), so nothing of vocabulary size is added.
3. **What trains.** LoRA on the encoder's linear layers the recipe adapts (``adapter.targets``, ``adapter.r``,
   ``adapter.alpha``, ``adapter.dropout``; the recipe's method must be ``lora``-like, otherwise r=8 on every linear
   layer), plus the masked-LM head's own parameters (transform and bias). The tied decoder is the frozen embedding
   matrix: it is counted once, as frozen. :func:`tapt_plan` gives the same count from the config alone, which
   ``loraclf plan --tapt`` prints.
4. **Loop.** An explicit AdamW loop with linear warmup and decay; masking by transformers'
   ``DataCollatorForLanguageModeling`` (``--mask-prob``, 15% by default, of which 80% [MASK], 10% random, 10% kept);
   bf16 autocast where ``train.precision`` resolves to it; seeded order and masks, so a run repeats exactly.
5. **Output.** LoRA is merged into the encoder and the encoder's weights are written over the original backbone
   (whose pooler, if any, is kept) as a plain Hugging Face folder with the tokenizer and ``tapt.json`` (texts,
   steps, trainable count, MLM loss before and after, seconds). ``model.name=DIR`` then trains a classifier from the
   adapted weights with the same architecture, so the classifier's trainable count (``loraclf plan``) is unchanged.

The MLM loss before and after is measured on a fixed probe of up to 256 of the texts with fixed masks.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from loraclf.config import Recipe
from loraclf.utils.errors import UserError, say, short_list

LORA_METHODS = ("lora", "dora", "rslora", "pissa", "olora")
PROBE_TEXTS = 256


@dataclass
class TaptOptions:
    """Settings of the TAPT stage (the CLI flags of ``loraclf tapt``)."""

    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    head_lr: float | None = None  # the masked-LM head's learning rate; None = lr
    mask_prob: float = 0.15
    max_length: int = 128
    max_texts: int | None = None
    warmup_ratio: float = 0.06
    seed: int = 42

    def check(self) -> None:
        """Raises UserError naming the flag of the first impossible value."""
        if not self.epochs > 0:
            raise UserError(f"--epochs must be above 0, got {self.epochs}")
        for flag, value in (
            ("--max-steps", self.max_steps),
            ("--batch-size", self.batch_size),
            ("--max-texts", self.max_texts),
        ):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        if self.max_length < 8:
            raise UserError(f"--max-length must be at least 8 tokens, got {self.max_length}")
        if not 0 < self.mask_prob < 1:
            raise UserError(f"--mask-prob must be between 0 and 1 (exclusive), got {self.mask_prob}")
        for flag, value in (("--lr", self.lr), ("--head-lr", self.head_lr)):
            if value is not None and not value > 0:
                raise UserError(f"{flag} must be above 0, got {value}")


# --- the model -----------------------------------------------------------------------------------------------------


def _encoder(model: nn.Module) -> nn.Module:
    """The bare encoder inside a masked-LM model (``model.bert``, ``model.roberta``, …)."""
    return getattr(model, model.base_model_prefix)


def head_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The masked-LM head's own parameters: everything outside the encoder except the tied decoder matrix."""
    prefix = model.base_model_prefix + "."
    tied = model.get_input_embeddings().weight
    return [(n, p) for n, p in model.named_parameters() if not n.startswith(prefix) and p is not tied]


def lora_targets(model: nn.Module, recipe: Recipe) -> list[str]:
    """Full names of the encoder's linear layers that LoRA adapts: the recipe's ``adapter.targets`` (short names
    such as ``query`` or ``attention.self.query``; ``all-linear`` or none means every linear layer in the blocks).

    Raises:
        UserError: a target name matches no linear layer of the encoder (the message lists those that exist).
    """
    prefix = model.base_model_prefix + "."
    linears = [
        n
        for n, m in model.named_modules()
        if n.startswith(prefix) and isinstance(m, nn.Linear) and ".layer." in n and "pooler" not in n
    ]
    wanted = recipe.adapter.targets if recipe.adapter.method in LORA_METHODS else None
    if not wanted or "all-linear" in wanted:
        return linears
    chosen = [n for n in linears if any(n.endswith("." + w) for w in wanted)]
    missing = [w for w in wanted if not any(n.endswith("." + w) for n in linears)]
    if missing:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise UserError(
            f"adapter.targets: {', '.join(missing)} matches no linear layer of the encoder; "
            f"choose from {short_list(names)} or all-linear"
        )
    return chosen


def _lora_config(model: nn.Module, recipe: Recipe):
    from peft import LoraConfig

    use = recipe.adapter.method in LORA_METHODS
    r = recipe.adapter.r if use else 8
    alpha = (recipe.adapter.alpha or 2 * r) if use else 16
    dropout = recipe.adapter.dropout if use else 0.0
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model, recipe))


def add_lora(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Wrap the masked LM in peft LoRA and unfreeze the head's own parameters; the tied decoder stays frozen."""
    from peft import get_peft_model

    head = [p for _, p in head_parameters(model)]
    model = get_peft_model(model, _lora_config(model, recipe))
    for p in head:
        p.requires_grad_(True)
    return model


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters, each tensor once (``parameters()`` yields a shared tensor once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_mlm(recipe: Recipe):
    """(masked LM, tokenizer, fresh_head, source folder or id) for the recipe's backbone.

    Raises:
        UserError: the backbone has no masked-LM form (a causal LM such as GPT-2), its weights or tokenizer cannot
            be loaded, or a fresh head could not be tied to the word embeddings.
    """
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from loraclf.modeling.backbones import is_causal_lm, load_config, load_tokenizer, resolve_weights

    name = recipe.model.name
    config = load_config(name, None, recipe.model)
    if is_causal_lm(config):
        raise UserError(
            f"model.name: '{name}' is a causal LM; TAPT trains a masked LM (BERT, RoBERTa, MiniLM, MPNet, …)"
        )
    source = resolve_weights(name)
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            source, config=config, revision=recipe.model.revision, output_loading_info=True
        )
    except ValueError:
        raise UserError(
            f"model.name: '{name}' ({config.model_type}) has no masked-LM form in transformers; "
            "TAPT needs an encoder such as BERT, RoBERTa, MiniLM or MPNet"
        ) from None
    except OSError as exc:
        raise UserError(f"model.name: cannot load weights of '{name}' ({type(exc).__name__})") from None
    fresh = any(not k.startswith(model.base_model_prefix + ".") for k in info["missing_keys"])
    if fresh and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise UserError(
            f"model.name: '{name}' has no masked-LM head and its config unties the output embeddings; "
            "set tie_word_embeddings: true in its config.json"
        )
    return model, load_tokenizer(name, recipe.model), fresh, source


def tapt_plan(recipe: Recipe) -> dict:
    """The TAPT stage's trainable count from the config alone (meta device, no weights).

    Returns:
        ``{"lora": int, "head": int, "trainable": int, "total": int, "targets": int}``: LoRA parameters, the
        masked-LM head's own parameters (transform and bias; the decoder is the tied, frozen embedding matrix),
        their sum, all parameters, and the number of adapted linear layers.

    Raises:
        UserError: as :func:`load_mlm` for a causal LM or an architecture without a masked-LM form.
    """
    from transformers import AutoModelForMaskedLM

    from loraclf.modeling.backbones import is_causal_lm, load_config

    config = load_config(recipe.model.name, None, recipe.model, prefer_shipped=True)
    if is_causal_lm(config):
        raise UserError(f"model.name: '{recipe.model.name}' is a causal LM; TAPT trains a masked LM")
    config.tie_word_embeddings = True
    try:
        with torch.device("meta"):
            model = AutoModelForMaskedLM.from_config(config)
    except ValueError:
        raise UserError(f"model.name: '{recipe.model.name}' has no masked-LM form in transformers") from None
    head = sum(p.numel() for _, p in head_parameters(model))
    targets = len(lora_targets(model, recipe))
    wrapped = add_lora(model, recipe)
    trainable = count_trainable(wrapped)
    total = sum(p.numel() for p in wrapped.parameters())
    return {
        "lora": trainable - head,
        "head": head,
        "trainable": trainable,
        "total": total,
        "targets": targets,
    }


# --- texts, masking and the loop -----------------------------------------------------------------------------------


def gather_texts(train: list[str], unlabelled: list[str], recipe: Recipe, max_texts: int | None, seed: int):
    """The training and unlabelled texts, cleaned, empty rows and duplicates dropped, optionally sampled.

    Returns:
        (texts, counts): the texts and ``{file: texts kept from it}`` (before the ``max_texts`` sample).

    Raises:
        UserError: a file is missing or unreadable, or no text is left (naming the flag).
    """
    import numpy as np

    from loraclf.data.paths import check_data_path
    from loraclf.data.tables import load_texts

    seen, texts, counts = set(), [], {}
    for flag, paths in (("--train", train), ("--unlabelled", unlabelled)):
        for path in paths:
            check_data_path(path, flag)
            ts, _ = load_texts(path, recipe.data, flag, labelled=False)
            kept = [t for t in ts.texts if t.strip() and t not in seen]
            seen.update(kept)
            texts += kept
            counts[path] = len(kept)
    if not texts:
        raise UserError(
            "--train/--unlabelled: no non-empty text in the files given; pass files with a text column"
        )
    if max_texts and max_texts < len(texts):
        pick = np.sort(np.random.default_rng(seed).choice(len(texts), max_texts, replace=False))
        texts = [texts[i] for i in pick]
    return texts, counts


def _single_head(model: nn.Module) -> nn.Module | None:
    """The masked-LM head as one module mapping hidden states to vocabulary logits (BERT's ``cls``, RoBERTa's
    ``lm_head``), or None where the head is spread over several modules (DistilBERT)."""
    heads = [
        m
        for n, m in model.named_children()
        if n != model.base_model_prefix and next(m.parameters(), None) is not None
    ]
    return heads[0] if len(heads) == 1 else None


def masked_lm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of the masked positions, the same value as ``model(**batch).loss``.

    The vocabulary projection (30k × hidden for MiniLM) runs only on the masked positions, about 15% of the tokens,
    instead of all of them: it is the largest matrix product of a small encoder's masked-LM step.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = _single_head(base)
    if head is None:
        return model(**batch).loss
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    states = _encoder(base)(**inputs).last_hidden_state
    chosen = labels != -100
    logits = head(states[chosen])
    return nn.functional.cross_entropy(logits.float(), labels[chosen])


def _batches(tok, texts: list[str], opts: TaptOptions, seed: int, order: list[int]):
    """Masked batches (dicts of tensors) over ``texts`` in ``order``; the masks come from a generator seeded here."""
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(tok, mlm_probability=opts.mask_prob, seed=seed)
    for start in range(0, len(order), opts.batch_size):
        rows = [texts[i] for i in order[start : start + opts.batch_size]]
        enc = tok(rows, truncation=True, max_length=opts.max_length, return_special_tokens_mask=True)
        yield collate([{k: enc[k][j] for k in enc} for j in range(len(rows))])


@torch.no_grad()
def mlm_loss(model, tok, texts: list[str], opts: TaptOptions, device, precision: str) -> float:
    """Mean masked-LM loss over ``texts`` with masks seeded by ``opts.seed`` (the same masks on every call)."""
    from loraclf.utils.devices import autocast

    was = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in _batches(tok, texts, opts, opts.seed + 1, list(range(len(texts)))):
        n = int((batch["labels"] != -100).sum())
        if n == 0:
            continue
        with autocast(device, precision):
            loss = masked_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
        total, count = total + float(loss) * n, count + n
    model.train(was)
    return total / max(count, 1)


def train_mlm(model, tok, texts: list[str], opts: TaptOptions, device, precision: str, progress: bool) -> int:
    """The TAPT loop: AdamW, linear warmup and decay, gradient clipping at 1.0; returns the optimizer steps run."""
    from transformers import get_linear_schedule_with_warmup

    from loraclf.utils.devices import autocast
    from loraclf.utils.progress import TrainProgress

    per_epoch = math.ceil(len(texts) / opts.batch_size)
    steps = opts.max_steps or max(1, round(per_epoch * opts.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    # A fresh head starts at chance: it may learn at its own rate (--head-lr) while LoRA keeps the recipe's.
    head = {id(p) for _, p in head_parameters(getattr(model, "get_base_model", lambda: model)())}
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr": opts.lr},
        {"params": [p for p in params if id(p) in head], "lr": opts.head_lr or opts.lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, round(steps * opts.warmup_ratio), steps)
    order_rng = torch.Generator().manual_seed(opts.seed)
    bar = TrainProgress(steps, 0, progress)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        order = torch.randperm(len(texts), generator=order_rng).tolist()
        for batch in _batches(tok, texts, opts, opts.seed + 1000 + epoch, order):
            with autocast(device, precision):
                loss = masked_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(loss=f"{loss.item():.3f}")
            if step >= steps:
                break
        epoch += 1
    bar.close()
    model.eval()
    return step


# --- writing the adapted backbone ----------------------------------------------------------------------------------


def save_backbone(merged: nn.Module, tok, source: str, recipe: Recipe, out: Path) -> None:
    """Write the merged encoder's weights over the original backbone (pooler kept) with the tokenizer into ``out``.

    Raises:
        UserError: the encoder's weights do not fit the original backbone (an unexpected architecture).
    """
    from transformers import AutoModel

    base = AutoModel.from_pretrained(source, revision=recipe.model.revision)
    state = _encoder(merged).state_dict()
    missing, unexpected = base.load_state_dict(state, strict=False)
    if unexpected or any("pooler" not in k for k in missing):
        raise UserError(
            f"model.name: the adapted encoder does not fit '{recipe.model.name}' "
            f"(missing {short_list(missing, 4)}, unexpected {short_list(unexpected, 4)})"
        )
    base.save_pretrained(out)
    tok.save_pretrained(out)


def run_tapt(
    recipe: Recipe, train: list[str], unlabelled: list[str], out: str, opts: TaptOptions, progress: bool
):
    """Adapt the recipe's backbone by TAPT and write it to ``out``; returns the ``tapt.json`` record.

    Raises:
        UserError: a bad option, file, model or output folder, naming the flag or key.
    """
    from loraclf.utils.devices import pick_device, pick_precision, set_threads

    opts.check()
    target = Path(out).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"--out: '{out}' exists and is not empty; choose a new folder")
    texts, counts = gather_texts(train, unlabelled, recipe, opts.max_texts, opts.seed)
    set_threads(recipe.train.threads)
    device = pick_device(recipe.train.device)
    precision = pick_precision(recipe.train.precision, device)
    torch.manual_seed(opts.seed)  # the fresh head's and LoRA's initialisation
    model, tok, fresh, source = load_mlm(recipe)
    model = add_lora(model, recipe).to(device)
    trainable, total = count_trainable(model), sum(p.numel() for p in model.parameters())
    say(
        f"tapt: {len(texts):,} texts; {'fresh' if fresh else 'pretrained'} masked-LM head; "
        f"{trainable:,} trainable of {total:,} parameters; {device}, {precision}"
    )
    probe = texts[:: max(1, len(texts) // PROBE_TEXTS)][:PROBE_TEXTS]
    before = mlm_loss(model, tok, probe, opts, device, precision)
    started = time.perf_counter()
    steps = train_mlm(model, tok, texts, opts, device, precision, progress)
    seconds = time.perf_counter() - started
    after = mlm_loss(model, tok, probe, opts, device, precision)
    say(f"tapt: {steps:,} steps in {seconds:.0f} s; masked-LM loss {before:.3f} → {after:.3f}")
    merged = model.merge_and_unload().cpu()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_backbone(merged, tok, source, recipe, partial)
    record = {
        "model": recipe.model.name,
        "texts": len(texts),
        "files": counts,
        "fresh_head": fresh,
        "trainable": trainable,
        "total": total,
        "steps": steps,
        "seconds": round(seconds, 1),
        "mlm_loss_before": round(before, 4),
        "mlm_loss_after": round(after, 4),
        "device": str(device),
        "precision": precision,
        "options": asdict(opts),
    }
    (partial / "tapt.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if target.exists():
        target.rmdir()
    partial.rename(target)
    return record
