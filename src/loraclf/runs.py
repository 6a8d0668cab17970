"""The run folder: what a run writes, and how a finished run is loaded for evaluation and prediction.

A run folder is self-describing; ``evaluate``, ``predict`` and ``report`` need nothing else::

    run.json             format version, model reference, data summary, token lengths, plan, environment, timings
    recipe.yaml          the resolved recipe (every default filled in)
    labels.json          the label map: class index → the training file's label value
    model.safetensors    trainable weights of the best evaluation (LoRA adapters + head, or more)
    tokenizer/           the tokenizer files
    metrics.jsonl        training history: one JSON object per logging step and per evaluation
    metrics.json         final metrics of the best weights on the evaluation rows
    confusion_matrix.csv rows = true class, columns = predicted class

The folder also holds ``checkpoints/`` while training (removed when the run completes) and a ``.lock`` while a
process writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import FORMAT_VERSION, Recipe, from_dict
from .errors import UserError

RUN_FILES = (
    "run.json",
    "recipe.yaml",
    "labels.json",
    "model.safetensors",
    "tokenizer",
    "metrics.jsonl",
    "metrics.json",
    "confusion_matrix.csv",
)


class MetricsLogger:
    """Appends one JSON object per line to metrics.jsonl; reports read that file, never training internals.

    With ``tensorboard`` set, the same scalars also go to TensorBoard event files (``<run>/tensorboard``).
    """

    def __init__(self, path: Path, keep_until_step: int | None = None, tensorboard: bool = False):
        self.path = path
        if keep_until_step is not None and path.exists():
            # On resume, forget what was logged after the checkpoint: it will be logged again, identically.
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["step"] <= keep_until_step]
            path.write_text("".join(k + "\n" for k in kept))
        self.fh = path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"), purge_step=keep_until_step)

    def log(self, record: dict) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.writer is not None:
            for key, value in record.items():
                if (
                    key not in ("step", "split")
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self.writer.add_scalar(f"{record.get('split', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.writer is not None:
            self.writer.close()


def hash_run_content(h, run: Path) -> None:
    """Feed a hash with what a finished run's predictions depend on: its weights, recipe and label map."""
    for name in ("model.safetensors", "recipe.yaml", "labels.json"):
        h.update((run / name).read_bytes())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def check_run(path: str | Path, flag: str = "RUN", finished: bool = True) -> Path:
    """The run folder, checked: its files are there, its format is known, and (``finished``) it completed."""
    run = Path(path)
    if not run.is_dir():
        raise UserError(
            f"{flag}: run folder '{run}' not found; pass the --out folder of a `loraclf train` run"
        )
    missing = [
        f for f in ("run.json", "recipe.yaml", "labels.json", "model.safetensors") if not (run / f).exists()
    ]
    if missing:
        state = (
            "unfinished (resume it with `loraclf train --resume`)"
            if (run / "checkpoints").is_dir()
            else "incomplete"
        )
        raise UserError(
            f"{flag}: '{run}' is not a finished run folder: {', '.join(missing)} missing; the run is {state}"
        )
    info = read_json(run / "run.json")
    if finished and info.get("status", "complete") != "complete":
        # Weights of an interrupted run are its best so far, not its result: resuming finishes it properly.
        raise UserError(
            f"{flag}: run '{run}' is unfinished (status {info.get('status')}); finish it with "
            f"`loraclf train --resume {run}`"
        )
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"{flag}: '{run}' was written by a newer loraclf (format {info['format_version']}); upgrade"
        )
    return run


def load_recipe_of(run: Path) -> Recipe:
    import yaml

    return from_dict(
        Recipe, yaml.safe_load((run / "recipe.yaml").read_text()) or {}, source=str(run / "recipe.yaml")
    )


@dataclass
class Run:
    """A finished run, ready to predict. Create with :func:`load`.

    ``precision`` is how predictions are computed: ``int8`` runs the run's quantised ONNX graph (``engine``) with
    ONNX Runtime; ``bf16``/``fp16``/``fp32`` run the merged PyTorch model. The PyTorch model is built on first use,
    so the int8 path never loads it, except for Monte Carlo dropout, which needs dropout layers to switch on.
    """

    path: Path
    recipe: Recipe
    labels: list
    info: dict
    tokenizer: object
    device: torch.device
    precision: str
    engine: object | None = None
    _model: torch.nn.Module | None = None

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])

    @property
    def trainable(self) -> int:
        return int(self.info["plan"]["trainable"])

    @property
    def torch_precision(self) -> str:
        """The precision of the PyTorch model (int8 runs fall back to it for Monte Carlo dropout)."""
        from .hardware import pick_precision

        return pick_precision("auto", self.device) if self.precision == "int8" else self.precision

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            pad = self.tokenizer.pad_token_id
            self._model = torch_model(
                self.path, self.recipe, len(self.labels), pad, self.device, self.torch_precision
            )
        return self._model

    def encode(self, texts: list[str], progress: bool = False) -> list[np.ndarray]:
        from .batching import tokenize
        from .clean import clean_texts

        cleaned = clean_texts(list(texts), self.recipe.data.clean)
        return tokenize(self.tokenizer, cleaned, self.max_length, progress=progress)

    def predict_proba(
        self,
        texts: list[str],
        batch_size: int | None = None,
        mc_dropout: int = 0,
        progress: bool = False,
        desc: str = "predict",
    ) -> np.ndarray:
        """Class probabilities, one row per text, columns in the order of ``self.labels``.

        ``texts`` is a list of strings; a single string is taken as one text.
        """
        if isinstance(texts, str):
            texts = [texts]
        return self.probs_of_ids(
            self.encode(texts, progress=progress), batch_size, mc_dropout, progress, desc
        )

    def probs_of_ids(
        self,
        ids: list[np.ndarray],
        batch_size: int | None = None,
        mc_dropout: int = 0,
        progress: bool = False,
        desc: str = "predict",
    ) -> np.ndarray:
        """Class probabilities of already tokenised rows (see :meth:`encode`)."""
        from .predict import forward_probs

        pad_id = self.tokenizer.pad_token_id
        if self.engine is not None and not mc_dropout:
            return self.engine.probs(ids, pad_id, len(self.labels), batch_size, progress=progress, desc=desc)
        return forward_probs(
            self.model,
            ids,
            pad_id,
            self.device,
            self.torch_precision,
            batch_size or self.recipe.train.eval_batch_size,
            mc_dropout=mc_dropout,
            seed=self.recipe.train.seed,
            progress=progress,
            desc=desc,
        )

    def predict(self, texts: list[str], **kwargs) -> list:
        """Labels in the training file's label space."""
        probs = self.predict_proba(texts, **kwargs)
        return [self.labels[i] for i in probs.argmax(1)]


def build_trained_model(
    run: Path, recipe: Recipe, num_labels: int, pad_token_id: int | None = None, merge: bool = True
) -> torch.nn.Module:
    """Rebuild the backbone with its pretrained weights, add the adapters, load the trained weights, merge."""
    from .adapters import apply_adapters
    from .checkpoint import load_weights
    from .models import build_model

    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe.model.name, num_labels, recipe.model, pad_token_id=pad_token_id)
    model = apply_adapters(model, recipe.adapter)
    weights = load_weights(run / "model.safetensors")
    params = dict(model.named_parameters())
    unknown = [k for k in weights if k not in params]
    if unknown:
        raise UserError(
            f"RUN: '{run}/model.safetensors' does not fit its recipe ({unknown[0]}); the folder is damaged"
        )
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v)
    if merge and recipe.adapter.method == "lora":
        model = model.merge_and_unload()
    return model


def torch_model(
    run: Path, recipe: Recipe, num_labels: int, pad_token_id: int, device, precision: str
) -> torch.nn.Module:
    """The merged PyTorch classifier on ``device``, in bf16 when predicting in bf16."""
    model = build_trained_model(run, recipe, num_labels, pad_token_id).to(device).eval()
    if precision == "bf16":
        # Inference only: bf16 weights halve memory traffic and skip autocast's per-call weight casts.
        model.to(torch.bfloat16)
    return model


def _causal(info: dict, recipe: Recipe) -> bool:
    """Whether the run's backbone is a causal LM (recorded in run.json; older runs: read from its config)."""
    causal = info.get("model", {}).get("causal")
    if causal is None:
        from .models import is_causal_lm, load_config

        causal = is_causal_lm(load_config(recipe.model.name, model_cfg=recipe.model, prefer_shipped=True))
    return bool(causal)


def load(path: str | Path, device: str = "auto", precision: str = "auto", finished: bool = True) -> Run:
    """Load a finished run folder for prediction: ``loraclf.load("runs/x").predict(["some text"])``.

    ``precision``: ``auto`` (int8 through ONNX Runtime on a CPU, else the device's fastest float type), ``int8``,
    ``bf16``, ``fp16`` or ``fp32``.
    """
    from .hardware import pick_device, pick_inference_precision, pick_precision
    from .models import load_tokenizer

    run = check_run(path, finished=finished)
    recipe = load_recipe_of(run)
    labels = read_json(run / "labels.json")["labels"]
    info = read_json(run / "run.json")
    dev = pick_device(device)
    prec = pick_inference_precision(precision, dev)
    if prec == "int8" and precision == "auto" and _causal(info, recipe):
        # GPT-2-style models carry a few huge activation channels that one int8 scale per tensor cannot hold
        # (a tiny GPT-2 moved class probabilities by 0.3); they predict with PyTorch unless int8 is asked for.
        prec = pick_precision("auto", dev)
    tokenizer = load_tokenizer(str(run / "tokenizer"), truncation_side=recipe.data.truncation_side)
    loaded = Run(run, recipe, labels, info, tokenizer, dev, prec)
    if prec == "int8":
        from .onnx_int8 import int8_classifier

        threads = recipe.train.threads or torch.get_num_threads()
        loaded.engine = int8_classifier(
            run,
            lambda: build_trained_model(run, recipe, len(labels), tokenizer.pad_token_id),
            tokenizer.pad_token_id,
            threads,
        )
        if loaded.engine is None:  # the export failed (and said why): the PyTorch model predicts instead
            loaded.precision = loaded.torch_precision
    return loaded


def load_many(paths: list[str], device: str = "auto", precision: str = "auto") -> list[Run]:
    """Load the members of an ensemble; they must share one label set (same classes, same order)."""
    runs = [load(p, device=device, precision=precision) for p in paths]
    for r in runs[1:]:
        if r.labels != runs[0].labels:
            raise UserError(
                f"RUN: '{r.path}' has labels {r.labels}, '{runs[0].path}' has {runs[0].labels}; "
                "an ensemble needs runs trained on the same label set"
            )
    return runs


def ensemble_budget(runs: list[Run]) -> str | None:
    """The line every ensemble prints: k members spend k budgets, and the total is never hidden."""
    if len(runs) < 2:
        return None
    total = sum(r.trainable for r in runs)
    return (
        f"ensemble of {len(runs)} runs: {' + '.join(f'{r.trainable:,}' for r in runs)} = {total:,} "
        "trainable parameters in total (each member spends one budget)"
    )


def raw_data_config(run: Run):
    """The run's data settings with cleaning off: each ensemble member then cleans the raw texts its own way."""
    from dataclasses import replace

    from .config import CleanConfig

    off = CleanConfig(**{name: False for name in CleanConfig.__dataclass_fields__})
    return replace(run.recipe.data, clean=off)


def ensemble_proba(runs: list[Run], texts: list[str], progress: bool = False, **kwargs) -> np.ndarray:
    """Average the members' class probabilities (soft voting): a cheap, reliable gain when members differ."""
    return sum(r.predict_proba(texts, progress=progress, **kwargs) for r in runs) / len(runs)
