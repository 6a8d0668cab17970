"""Generative augmentation: adapt a causal LM to the target domain, then sample labelled texts from class prompts.

The method of the course reports, in five steps:

1. **Adapt.** A causal LM (GPT-2 or any ``AutoModelForCausalLM``; a hub id or a local folder) is fine-tuned for a few
   epochs on unlabelled texts of the target domain (``--target``, by default the ``--input`` texts) with the
   next-token loss. LoRA by default (``c_attn`` in GPT-2, ``q_proj``/``v_proj`` in Llama-style models, otherwise
   every linear layer), all weights with ``--lm-full``. The adapters are merged afterwards, so ``--lm-out`` receives
   a plain model folder that ``--lm`` accepts next time (with ``--lm-epochs 0``).
2. **Prompt.** Each class has a list of prompts (YAML: label → list of strings; AG News ships as
   ``prompts/ag_news.yaml``). A class's samples go through its prompts in a shuffled round robin; a sample's label
   is its prompt's class.
3. **Length.** A skew-normal distribution is fitted to the word counts of the labelled texts (news lengths are
   right-skewed); each sample draws a length, clipped to [``--min-words``, ``--max-words``] and turned into a token
   budget with the tokenizer's tokens-per-word ratio measured on the same texts (about 1.3 for GPT-2 on English).
4. **Sample.** Nucleus sampling (top-p 0.95, temperature 1.0) with a repetition penalty (1.3 by default: small LMs
   otherwise fall into loops). The prompt is cut off and the text trimmed to its last complete sentence.
5. **Filter.** Samples under half of ``--min-words`` and duplicates (lower-cased, punctuation-blind, also against
   the labelled texts) are dropped. With ``--filter-run RUN`` a sample is kept only when that loraclf classifier
   gives the prompt's class a probability of at least ``--min-confidence``: this removes samples that drifted to
   another topic, the main source of label noise in generated data.

With a real model, e.g. GPT-2 small adapted on the unlabelled out-of-domain texts, filtered by a trained run::

    loraclf augment --method generate --lm gpt2 --input train.csv --target ood_unlabeled.csv \\
        --per-class 500 --lm-out lms/gpt2-news --filter-run runs/minilm --output train+gen.csv

Offline, ``--lm`` must be a local folder with config.json, weights and tokenizer files. The tests run every step on
a 2-layer GPT-2 with a tokenizer trained on the fixture texts: they check the mechanics, not the quality of samples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# label_key makes 3, "3" and 3.0 one label (and keeps "03" as written), as the training data loader does.
from loraclf.data.labels import label_key
from loraclf.utils.errors import UserError, short_list

DEFAULT_PROMPTS = Path(__file__).parent / "prompts" / "ag_news.yaml"
MAX_LM_LENGTH = 128  # tokens per adaptation example; news texts rarely need more
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")

Log = Callable[[str], None] | None


def _say(log: Log, message: str) -> None:
    if log is not None:
        log(message)


@dataclass
class Adaptation:
    """How the LM is adapted to the target-domain texts."""

    epochs: int = 2  # passes over the texts; 0 keeps the LM as it is
    lr: float = 2e-4  # AdamW learning rate (5e-5 suits full fine-tuning)
    batch_size: int = 8
    full: bool = False  # every weight instead of LoRA adapters
    seed: int = 42


@dataclass
class Sampling:
    """How samples are drawn from the LM."""

    top_p: float = 0.95  # nucleus: the smallest token set holding this probability mass
    temperature: float = 1.0
    repetition_penalty: float = 1.3  # above 1 divides the logits of tokens already present
    batch_size: int = 16  # prompts generated together
    seed: int = 42


# --- the language model ------------------------------------------------------------------------------------------


def load_lm(name: str):
    """(model, tokenizer) of a causal LM from a local folder or a hub id; the pad token falls back to EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraclf.modeling.backbones import resolve_weights

    path = Path(name).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"--lm: folder '{name}' has no config.json; pass a Hugging Face causal LM folder")
    source = str(path) if path.is_dir() else resolve_weights(name)
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"--lm: cannot load a causal LM from '{name}' ({type(exc).__name__}); offline, pass a local "
            "folder with config.json, weights and tokenizer files"
        ) from None
    if tok.eos_token is None:
        raise UserError(
            f"--lm: the tokenizer of '{name}' has no end-of-text token; set eos_token in its files"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def lora_targets(model) -> list[str] | str:
    """Attention projections LoRA adapts: GPT-2's fused ``c_attn``, Llama-style ``q_proj``/``v_proj``, else all."""
    if model.config.model_type == "gpt2":
        return ["c_attn"]
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    return ["q_proj", "v_proj"] if {"q_proj", "v_proj"} <= names else "all-linear"


def _bf16(device: torch.device) -> bool:
    from loraclf.utils.devices import cpu_has_fast_bf16, cuda_native_bf16

    if device.type == "cuda":
        return cuda_native_bf16(device)
    return device.type == "cpu" and cpu_has_fast_bf16()


def lm_loss(model, tok, texts: list[str], device: torch.device, bf16: bool) -> torch.Tensor:
    """Next-token loss of a batch; each text ends with EOS so that the LM learns where news items stop."""
    tok.padding_side = "right"
    enc = tok(
        [t + tok.eos_token for t in texts],
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=MAX_LM_LENGTH,
    )
    # Padding is masked by position, not by id: the pad token is often EOS, whose real occurrences must count.
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(**enc.to(device), labels=labels.to(device)).loss


def adapt_lm(model, tok, texts: list[str], opts: Adaptation, device: torch.device, log: Log = None):
    """Fine-tune ``model`` on ``texts`` (LoRA unless ``opts.full``); returns a plain (merged) model in eval mode."""
    if not opts.full:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=lora_targets(model),
            fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
        )
        model = get_peft_model(model, config)
    torch.manual_seed(opts.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr)
    order_rng = torch.Generator().manual_seed(opts.seed)
    bf16, size = _bf16(device), opts.batch_size
    for epoch in range(opts.epochs):
        order = torch.randperm(len(texts), generator=order_rng).tolist()
        losses = []
        for start in range(0, len(order), size):
            loss = lm_loss(model, tok, [texts[i] for i in order[start : start + size]], device, bf16)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        _say(log, f"adapt: epoch {epoch + 1}/{opts.epochs}, loss {np.mean(losses):.3f}, {len(texts):,} texts")
    model.eval()
    return model if opts.full else model.merge_and_unload()


# --- lengths and prompts -----------------------------------------------------------------------------------------


@dataclass
class LengthModel:
    """A skew-normal distribution of text lengths in words, clipped to [lo, hi]."""

    a: float
    loc: float
    scale: float
    lo: int
    hi: int

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        from scipy.stats import skewnorm

        if self.scale <= 0:
            values = np.full(n, self.loc)
        else:
            values = skewnorm.rvs(self.a, self.loc, self.scale, size=n, random_state=rng)
        return np.clip(np.rint(values), self.lo, self.hi).astype(int)


def fit_lengths(word_counts, lo: int, hi: int) -> LengthModel:
    """Fit a skew-normal to word counts by maximum likelihood (a point mass when there is too little spread)."""
    from scipy.stats import skewnorm

    counts = np.asarray(word_counts, dtype=float)
    if len(np.unique(counts)) < 3:
        return LengthModel(0.0, float(np.median(counts)) if len(counts) else float(lo), 0.0, lo, hi)
    a, loc, scale = skewnorm.fit(counts)
    return LengthModel(float(a), float(loc), float(scale), lo, hi)


def tokens_per_word(tok, texts: list[str], limit: int = 2000) -> float:
    """Tokens per whitespace word of ``tok`` on (up to ``limit`` of) ``texts``; 1.3 when there are none."""
    sample = [t for t in texts[:limit] if t.split()]
    words = sum(len(t.split()) for t in sample)
    if not words:
        return 1.3
    return sum(len(ids) for ids in tok(sample, add_special_tokens=False)["input_ids"]) / words


def load_prompts(path: str | Path, labels: list) -> dict:
    """Prompts by label from YAML (label → list of strings), for exactly ``labels`` (every one must have some)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--prompts: file '{p}' not found; pass a YAML file mapping each label to prompts")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"--prompts: '{p}' is not valid YAML{where}; check indentation and quoting") from None
    except UnicodeDecodeError:
        raise UserError(f"--prompts: '{p}' is not UTF-8 text; save it as UTF-8") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"--prompts: '{p}' must map each label to a list of prompts, e.g. '1: [\"News:\"]'")
    prompts = {}
    for key, value in data.items():
        value = [value] if isinstance(value, str) else value
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise UserError(f"--prompts: '{p}', label {key!r}: give a non-empty list of prompt strings")
        prompts[label_key(key)] = [v.strip() for v in value]
    by_str = {str(k): v for k, v in prompts.items()}
    missing = [lab for lab in labels if str(lab) not in by_str]
    if missing:
        raise UserError(
            f"--prompts: '{p}' has no prompts for label {missing[0]!r} of --input (it has labels "
            f"{short_list(map(str, prompts))}); add a list of prompts under '{missing[0]}:'"
        )
    return {lab: by_str[str(lab)] for lab in labels}


# --- sampling and filtering --------------------------------------------------------------------------------------


def tidy(text: str) -> str:
    """Printable characters, collapsed whitespace, cut after the last complete sentence if that keeps half of it."""
    # A byte-level BPE cut at a token budget can end inside a multi-byte character, which decodes to U+FFFD.
    text = "".join(c if c.isprintable() and c != "\ufffd" else " " for c in text)
    text = " ".join(text.split())
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] >= len(text) / 2 else text


def generate_samples(
    model,
    tok,
    prompts: dict,
    per_class: int,
    lengths: LengthModel,
    ratio: float,
    opts: Sampling,
    device: torch.device,
    log: Log = None,
) -> list[dict]:
    """``per_class`` samples for every label: dicts with text (prompt removed), label and prompt.

    ``ratio`` (tokens per word) turns each drawn length in words into a budget of new tokens.
    """
    rng = np.random.default_rng(opts.seed)
    jobs = []
    for label, plist in prompts.items():
        rounds = math.ceil(per_class / len(plist))
        order = np.concatenate([rng.permutation(len(plist)) for _ in range(rounds)])
        words = lengths.draw(per_class, rng)
        jobs += [(label, plist[j], math.ceil(w * ratio)) for j, w in zip(order[:per_class], words)]
    # Similar budgets share a batch, so little compute goes to rows that already reached their length.
    jobs.sort(key=lambda job: job[2])
    config = model.config
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1024)
    torch.manual_seed(opts.seed)
    model.to(device).eval()
    tok.padding_side = "left"  # prompts end at the same position, where generation starts
    samples = []
    for start in range(0, len(jobs), opts.batch_size):
        batch = jobs[start : start + opts.batch_size]
        enc = tok([prompt for _, prompt, _ in batch], return_tensors="pt", padding=True).to(device)
        width = enc["input_ids"].shape[1]
        budget = min(max(n for _, _, n in batch), limit - width)
        if budget < 1:
            raise UserError(f"--prompts: a prompt fills the LM's {limit}-token context; shorten it")
        with torch.no_grad():
            ids = model.generate(
                **enc,
                do_sample=True,
                top_p=opts.top_p,
                temperature=opts.temperature,
                repetition_penalty=opts.repetition_penalty,
                max_new_tokens=budget,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        for (label, prompt, n), row in zip(batch, ids[:, width:]):
            text = tok.decode(row[:n], skip_special_tokens=True)  # each sample stops at its own length
            samples.append({"text": tidy(text), "label": label, "prompt": prompt})
        _say(log, f"generate: {len(samples):,}/{len(jobs):,} samples")
    return samples


def normalise(text: str) -> str:
    """Lower-case words only: the key under which two texts count as duplicates."""
    return " ".join(re.findall(r"\w+", text.lower()))


def drop_duplicates(samples: list[dict], known: list[str], min_words: int) -> tuple[list[dict], int, int]:
    """Samples with at least ``min_words`` words, first of their kind and new to ``known``; (kept, short, dups)."""
    seen = {normalise(t) for t in known}
    kept, short, dups = [], 0, 0
    for s in samples:
        if len(s["text"].split()) < min_words:
            short += 1
            continue
        key = normalise(s["text"])
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        kept.append(s)
    return kept, short, dups


def filter_by_confidence(samples: list[dict], run, min_confidence: float) -> tuple[list[dict], int]:
    """Keep the samples to which ``run`` gives their label at least ``min_confidence``; adds ``confidence``."""
    if not samples:
        return [], 0
    column = {str(lab): i for i, lab in enumerate(run.labels)}
    probs = run.predict_proba([s["text"] for s in samples])
    kept = []
    for s, p in zip(samples, probs):
        s["confidence"] = round(float(p[column[str(s["label"])]]), 4)
        if s["confidence"] >= min_confidence:
            kept.append(s)
    return kept, len(samples) - len(kept)


# --- the command -------------------------------------------------------------------------------------------------


def _load_filter_run(path: str, labels: list, device: str):
    from loraclf.inference import run as runs

    run = runs.load(path, device=device)
    known = {str(lab) for lab in run.labels}
    missing = [lab for lab in labels if str(lab) not in known]
    if missing:
        raise UserError(
            f"--filter-run: run '{path}' predicts labels {short_list(map(str, run.labels))}, not the label "
            f"{missing[0]!r} of --input; filter with a run trained on the same labels"
        )
    return run


def run_generate(args, texts: list[str], labels: list, target: list[str], log: Log = None):
    """Adapt on ``target``, prompt, sample and filter as the (checked) command-line ``args`` say.

    Returns:
        (new rows, a note for the summary line).
    """
    from loraclf.utils.devices import pick_device

    if log is None:  # --quiet: no library progress bars either
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    present = sorted(set(labels)) if all(isinstance(v, int) for v in labels) else sorted(set(labels), key=str)
    prompts = load_prompts(args.prompts or DEFAULT_PROMPTS, present)
    # The filter run is loaded first: a wrong run folder should fail before the long part, not after it.
    run = _load_filter_run(args.filter_run, present, args.device) if args.filter_run else None
    model, tok = load_lm(args.lm)
    device = pick_device(args.device)
    if args.lm_epochs > 0:
        lr = args.lm_lr or (5e-5 if args.lm_full else 2e-4)
        adaptation = Adaptation(args.lm_epochs, lr, args.lm_batch_size, args.lm_full, args.seed)
        model = adapt_lm(model, tok, target, adaptation, device, log)
    if args.lm_out:
        Path(args.lm_out).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.lm_out)
        tok.save_pretrained(args.lm_out)
        _say(log, f"adapt: saved the adapted LM to {args.lm_out}")
    lengths = fit_lengths([len(t.split()) for t in texts], args.min_words, args.max_words)
    ratio = tokens_per_word(tok, texts)
    sampling = Sampling(args.top_p, args.temperature, args.repetition_penalty, args.gen_batch_size, args.seed)
    samples = generate_samples(model, tok, prompts, args.per_class, lengths, ratio, sampling, device, log)
    kept, short, dups = drop_duplicates(samples, texts, max(1, args.min_words // 2))
    low = 0
    if run is not None:
        kept, low = filter_by_confidence(kept, run, args.min_confidence)
    rows = [{"text": s.pop("text"), "label": s.pop("label"), "source": "generate", **s} for s in kept]
    note = f"{len(samples):,} generated: {short:,} too short, {dups:,} duplicates" + (
        f", {low:,} below confidence {args.min_confidence}" if run is not None else ""
    )
    return rows, note
