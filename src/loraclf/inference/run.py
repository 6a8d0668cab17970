"""Loading a finished run for evaluation and prediction: ``loraclf.load("runs/x").predict(["some text"])``.

The run folder (see :mod:`loraclf.runfolder.schema`) holds the recipe, label map, tokenizer and trained weights;
loading rebuilds the backbone with its pretrained weights, adds the adapters, loads the trained weights and merges
them, or (int8, the CPU default) opens the run's cached quantised ONNX graph instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loraclf.config import Recipe
from loraclf.runfolder.schema import RunInfo, check_run, read_labels, read_recipe, read_run_info
from loraclf.utils.errors import UserError, say


@dataclass
class Run:
    """A finished run, ready to predict. Create with :func:`load`.

    ``precision`` is how predictions are computed: ``int8`` runs the run's quantised ONNX graph (``engine``) with
    ONNX Runtime; ``bf16``/``fp16``/``fp32`` run the merged PyTorch model. The PyTorch model is built on first use,
    so the int8 path never loads it, except for Monte Carlo dropout, which needs dropout layers to switch on.
    ``temperature`` is the run's fitted temperature (``run.json`` ``calibration``; 1.0 when loaded without
    calibration or trained before it existed): every engine returns ``softmax(logits / temperature)``.
    """

    path: Path
    recipe: Recipe
    labels: list
    info: RunInfo
    tokenizer: object
    device: torch.device
    precision: str
    engine: object | None = None
    _model: torch.nn.Module | None = None
    temperature: float = 1.0

    @property
    def max_length(self) -> int:
        return self.info.max_length

    @property
    def trainable(self) -> int:
        return self.info.trainable

    @property
    def torch_precision(self) -> str:
        """The precision of the PyTorch model (int8 runs fall back to it for Monte Carlo dropout)."""
        from loraclf.utils.devices import pick_precision

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
        from loraclf.data.batching import tokenize
        from loraclf.data.clean import clean_texts

        cleaned = clean_texts(list(texts), self.recipe.data.clean)
        return tokenize(self.tokenizer, cleaned, self.max_length, progress=progress)

    def predict_proba(
        self,
        texts: list[str],
        batch_size: int | None = None,
        mc_dropout: int = 0,
        progress: bool = False,
        desc: str = "predict",
        prior_correction: bool = False,
        match_priors: bool | dict | None = None,
    ) -> np.ndarray:
        """Class probabilities, one row per text, columns in the order of ``self.labels``.

        ``texts`` is a list of strings; a single string is taken as one text. ``prior_correction`` re-weights the
        probabilities to the class priors EM estimates from these texts (label shift; see
        :mod:`loraclf.inference.label_shift`), so it needs a whole file of texts, not one. ``match_priors``
        re-weights each class so that the mean probability over these texts equals a known class mix: True for
        the training file's (or ``"train"``), ``"uniform"`` for equal shares, or ``{label: share}`` (prior
        matching, same module); also for a whole file (under 200 rows it warns on stderr).

        Raises:
            UserError: both corrections asked for, a mix that does not name every class with a positive share,
                or (training mix) a run that records no training class counts.
        """
        if isinstance(texts, str):
            texts = [texts]
        matching = match_priors is not None and match_priors is not False
        if prior_correction and matching:
            raise UserError("prior_correction and match_priors contradict each other; choose one")
        mix = _mix_of(match_priors, self.labels) if matching else None  # checked before scoring
        probs = self.probs_of_ids(
            self.encode(texts, progress=progress), batch_size, mc_dropout, progress, desc
        )
        if prior_correction:
            return correct_priors([self], probs)[1]
        if matching:
            if len(probs) < MATCH_MIN_ROWS:
                say(f"match_priors: only {len(probs):,} rows, whose mean says little about the class mix")
            return match_run_priors([self], probs, mix)[2]
        return probs

    def probs_of_ids(
        self,
        ids: list[np.ndarray],
        batch_size: int | None = None,
        mc_dropout: int = 0,
        progress: bool = False,
        desc: str = "predict",
    ) -> np.ndarray:
        """Class probabilities of already tokenised rows (see :meth:`encode`)."""
        from loraclf.inference.predict import forward_probs

        pad_id = self.tokenizer.pad_token_id
        if self.engine is not None and not mc_dropout:
            return self.engine.probs(
                ids,
                pad_id,
                len(self.labels),
                batch_size,
                progress=progress,
                desc=desc,
                temperature=self.temperature,
            )
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
            temperature=self.temperature,
        )

    def predict(self, texts: list[str], **kwargs) -> list:
        """Labels in the training file's label space."""
        probs = self.predict_proba(texts, **kwargs)
        return [self.labels[i] for i in probs.argmax(1)]


def build_trained_model(
    run: Path, recipe: Recipe, num_labels: int, pad_token_id: int | None = None, merge: bool = True
) -> torch.nn.Module:
    """Rebuild the backbone with its pretrained weights, add the adapters, load the trained weights, merge."""
    from loraclf.modeling.backbones import build_model
    from loraclf.modeling.methods import apply_adapters, get_method
    from loraclf.modeling.methods import merge as merge_method
    from loraclf.runfolder.checkpoint import load_weights

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
    if merge and get_method(recipe.adapter.method).merges:
        model = merge_method(model)
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


def _causal(info: RunInfo, recipe: Recipe) -> bool:
    """Whether the run's backbone is a causal LM (recorded in run.json; older runs: read from its config)."""
    causal = info.model.get("causal")
    if causal is None:
        from loraclf.modeling.backbones import is_causal_lm, load_config

        causal = is_causal_lm(load_config(recipe.model.name, model_cfg=recipe.model, prefer_shipped=True))
    return bool(causal)


def load(
    path: str | Path,
    device: str = "auto",
    precision: str = "auto",
    finished: bool = True,
    calibration: bool = True,
) -> Run:
    """Load a finished run folder for prediction: ``loraclf.load("runs/x").predict(["some text"])``.

    ``precision``: ``auto`` (int8 through ONNX Runtime on a CPU, else the device's fastest float type), ``int8``,
    ``bf16``, ``fp16`` or ``fp32``. ``calibration``: apply the run's fitted temperature to its probabilities (labels
    are the same either way); False gives the raw softmax.
    """
    from loraclf.inference.calibration import temperature_of
    from loraclf.modeling.backbones import load_tokenizer
    from loraclf.modeling.methods import get_method
    from loraclf.utils.devices import pick_device, pick_inference_precision, pick_precision

    run = check_run(path, finished=finished)
    recipe = read_recipe(run)
    labels = read_labels(run)
    info = read_run_info(run)
    dev = pick_device(device)
    prec = pick_inference_precision(precision, dev)
    if prec == "int8" and precision == "auto" and _causal(info, recipe):
        # GPT-2-style models carry a few huge activation channels that one int8 scale per tensor cannot hold
        # (a tiny GPT-2 moved class probabilities by 0.3); they predict with PyTorch unless int8 is asked for.
        prec = pick_precision("auto", dev)
    if prec == "int8" and not get_method(recipe.adapter.method).plain:
        # Prompt/prefix tuning keep their virtual tokens as inputs of a peft wrapper; the ONNX graph has none.
        if precision == "int8":
            raise UserError(
                f"--precision int8: a {recipe.adapter.method}-tuned run cannot run as an int8 ONNX graph "
                "(its virtual tokens are not weights to merge); use --precision auto or fp32"
            )
        prec = pick_precision("auto", dev)
        say(
            f"predict: {recipe.adapter.method} tuning runs unmerged, with PyTorch in {prec} (no int8 ONNX graph)"
        )
    tokenizer = load_tokenizer(str(run / "tokenizer"), truncation_side=recipe.data.truncation_side)
    loaded = Run(run, recipe, labels, info, tokenizer, dev, prec)
    loaded.temperature = temperature_of(info.calibration) if calibration else 1.0
    if prec == "int8":
        from loraclf.inference.onnx_int8 import int8_classifier

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


def load_many(
    paths: list[str], device: str = "auto", precision: str = "auto", calibration: bool = True
) -> list[Run]:
    """Load the members of an ensemble; they must share one label set (same classes, same order)."""
    runs = [load(p, device=device, precision=precision, calibration=calibration) for p in paths]
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

    from loraclf.config import CleanConfig

    off = CleanConfig(**{name: False for name in CleanConfig.__dataclass_fields__})
    return replace(run.recipe.data, clean=off)


def ensemble_proba(runs: list[Run], texts: list[str], progress: bool = False, **kwargs) -> np.ndarray:
    """Average the members' class probabilities (soft voting): a cheap, reliable gain when members differ."""
    return sum(r.predict_proba(texts, progress=progress, **kwargs) for r in runs) / len(runs)


def correct_priors(runs: list, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-weight probabilities of a file to its class priors estimated by EM (``--prior-correction``).

    The training priors are the members' mean training class shares (``run.json`` ``data.train_label_counts``).

    Returns:
        ``(priors, corrected)``: the estimated priors, shape (classes,), and the corrected probabilities.

    Raises:
        UserError: a run does not record its training class counts, or a class had no training row.
    """
    from loraclf.inference.label_shift import em_priors

    mix = _training_mix(runs, "--prior-correction", "retrain the run, or predict without --prior-correction")
    return em_priors(probs, mix)


def _training_mix(runs: list, flag: str, fix: str) -> np.ndarray:
    """The members' mean training class shares (``run.json`` ``data.train_label_counts``).

    Raises:
        UserError: a run records no count for some class; names ``flag`` and says ``fix``.
    """
    from loraclf.inference.label_shift import train_priors_of

    shares = [train_priors_of(r.info.data, len(r.labels)) for r in runs]
    missing = next((r for r, s in zip(runs, shares) if s is None), None)
    if missing is not None:
        raise UserError(
            f"{flag}: '{missing.path}/run.json' records no training count for every class "
            f"(data.train_label_counts); {fix}"
        )
    return np.mean(shares, axis=0)


# Below this many rows prior matching warns: their mean posterior is a poor reading of the file's class mix.
MATCH_MIN_ROWS = 200


def _mix_of(match_priors, labels: list) -> np.ndarray | None:
    """The mix ``predict_proba(match_priors=...)`` asks for, in the order of ``labels``: None for the training
    mix (True or "train"), equal shares ("uniform"), or a ``{label: share}`` mapping (labels compared as text, so
    1 and "1" agree).

    Raises:
        UserError: anything else, or a mapping that leaves a class out, names one twice or gives a share that is
            not a positive number.
    """
    from loraclf.inference.label_shift import parse_mix

    if match_priors is True or (isinstance(match_priors, str) and match_priors == "train"):
        return None
    if isinstance(match_priors, str) and match_priors == "uniform":
        return parse_mix("uniform", labels, "match_priors")
    if not isinstance(match_priors, dict):
        raise UserError("match_priors: give True, 'train', 'uniform' or {label: share}")
    index = {str(lab): i for i, lab in enumerate(labels)}
    shares = np.full(len(labels), np.nan)
    for label, share in match_priors.items():
        if str(label) not in index:
            raise UserError(f"match_priors: '{label}' is not a label of the run ({', '.join(index)})")
        if not np.isnan(shares[index[str(label)]]):
            raise UserError(f"match_priors: label '{label}' is given twice")
        try:
            value = float(share)
        except (TypeError, ValueError):
            value = float("nan")
        if not (value > 0 and np.isfinite(value)):
            raise UserError(f"match_priors: the share of '{label}' must be a positive number, got {share!r}")
        shares[index[str(label)]] = value
    missing = [str(lab) for lab, v in zip(labels, shares) if np.isnan(v)]
    if missing:
        raise UserError(f"match_priors: no share for {', '.join(missing)}; give every class")
    return shares / shares.sum()


def match_run_priors(
    runs: list, probs: np.ndarray, mix: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-weight probabilities of a file so their mean is a known class mix (``--match-priors``).

    Args:
        runs: The ensemble's members (their training class shares are the default mix).
        probs: The file's probabilities, shape (rows, classes).
        mix: Class shares in the runs' label order, shape (classes,); None = the members' mean training shares.

    Returns:
        ``(mix, offsets, matched)``: the mix used, the per-class logit offsets, and the re-weighted probabilities.

    Raises:
        UserError: ``mix`` is None and a run does not record its training class counts.
    """
    from loraclf.inference.label_shift import match_priors

    if mix is None:
        mix = _training_mix(runs, "--match-priors", "give the mix as LABEL=SHARE,... or retrain the run")
    offsets, matched = match_priors(probs, mix)
    return mix / mix.sum(), offsets, matched
