"""``loraclf export``: a finished run as a model folder that other tools load without loraclf.

``--format hf`` (the default) merges the LoRA update into the frozen weights (``W + (alpha/r)·B·A``, so the folder
holds ordinary weights and no adapter) and writes a Hugging Face folder with ``save_pretrained``:

* a run with the model's own head becomes a plain sequence-classification folder:
  ``AutoModelForSequenceClassification.from_pretrained(folder)`` and ``pipeline("text-classification", folder)``
  load it, with ``id2label`` naming the training file's labels;
* a run with loraclf's ``mlp``/``linear`` head over pooled token states (the CPU recipes) has no counterpart among
  the transformers classes, so the folder brings its own: ``modeling_loraclf.py`` (shipped in
  :mod:`loraclf.inference.hf_remote`, importing only torch and transformers) defines ``LoraclfConfig`` (the
  backbone's config plus the head spec) and ``LoraclfForSequenceClassification`` (backbone → pooling → head), and
  ``config.json``'s ``auto_map`` points ``AutoConfig`` and ``AutoModelForSequenceClassification`` at them. Then
  ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` and
  ``pipeline("text-classification", model=folder, trust_remote_code=True)`` load it, offline as well.

Either way ``id2label``/``label2id`` carry the training file's label names (as strings: ``"3"`` for label 3), and
the tokenizer is saved with the run's maximum length, truncation side and model inputs (ids and mask only, as
loraclf feeds them), so ``clf(texts, truncation=True)`` cuts texts where ``loraclf predict`` does. loraclf also
cleans texts before tokenising (``data.clean`` of the run's recipe); a pipeline sees the text as given.

``--format onnx`` writes the int8 ONNX graph that ``predict`` runs on CPUs (``model.onnx``: inputs ``input_ids``
and ``attention_mask``, output ``logits``), with the tokenizer and ``labels.json``, for ONNX Runtime alone.

A run's fitted temperature (``run.json`` ``calibration``, see :mod:`loraclf.inference.calibration`) is folded into
the head's last linear layer: its weight and bias are divided by T, so the exported logits are ``logits / T`` and
their softmax equals the calibrated probabilities ``loraclf predict`` writes (the argmax, hence every label, is the
same as without it). Pass ``--no-calibration`` to export the raw logits.

The folder is assembled under a temporary name and renamed into place: it is complete or absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from loraclf.utils.errors import UserError
from loraclf.utils.files import temp_sibling

FORMATS = ("hf", "onnx")
REMOTE_CODE = Path(__file__).parent / "hf_remote" / "modeling_loraclf.py"


def _check_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out: '{out}' already exists and is not an empty folder; choose a new folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--out: folder '{parent}' does not exist; create it first")
    return out


def _readme(run: Path, kind: str, labels: list) -> str:
    names = ", ".join(f"{i}: {lab}" for i, lab in enumerate(labels))
    if kind == "onnx":
        body = (
            "int8 ONNX graph of the classifier (encoder matrix products quantised, embeddings and head fp32).\n\n"
            "```python\nimport numpy as np, onnxruntime as ort\nfrom transformers import AutoTokenizer\n"
            "tok = AutoTokenizer.from_pretrained('.')\nsession = ort.InferenceSession('model.onnx')\n"
            "# truncation=True cuts at the run's length; longer rows would overrun the position table\n"
            "enc = tok(['some text'], truncation=True, padding=True, return_tensors='np')\n"
            "logits = session.run(None, {'input_ids': enc['input_ids'].astype(np.int64),\n"
            "                            'attention_mask': enc['attention_mask'].astype(np.int64)})[0]\n```\n"
        )
    elif kind == "pooled":
        body = (
            "A Hugging Face classifier (adapters merged) whose pooling and head are loraclf's own, defined in "
            "`modeling_loraclf.py` beside this file (torch and transformers only) and registered in config.json's "
            "`auto_map`, so transformers loads it when trusted to run that file:\n\n"
            "```python\nfrom transformers import pipeline\n"
            "clf = pipeline('text-classification', model='.', trust_remote_code=True)\n"
            "clf('some text', truncation=True)\n```\n"
        )
    else:
        body = (
            "A plain sequence-classification folder (adapters merged):\n\n"
            "```python\nfrom transformers import pipeline\nclf = pipeline('text-classification', model='.')\n"
            "clf('some text', truncation=True)\n```\n"
        )
    return f"# Exported from loraclf run `{run}`\n\nLabels (class index: label): {names}.\n\n{body}"


def export_run(run_path: str, out_path: str, fmt: str, calibration: bool = True) -> Path:
    """Write ``run_path`` as a model folder at ``out_path`` in format ``fmt``; return the folder.

    ``calibration`` folds the run's fitted temperature into the head (see the module docstring).

    Raises:
        UserError: an unknown format, a folder that is not a finished run, a non-empty ``out_path``, a run with
            virtual tokens (no plain transformers model), or a model that does not export to ONNX.
    """
    from loraclf.inference.calibration import temperature_of
    from loraclf.inference.run import build_trained_model
    from loraclf.modeling.backbones import PooledClassifier
    from loraclf.runfolder.schema import check_run, read_labels, read_recipe, read_run_info

    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' is not a format; use hf or onnx")
    run = check_run(run_path)
    out = _check_out(Path(out_path))
    recipe = read_recipe(run)
    labels = read_labels(run)
    from loraclf.modeling.backbones import load_tokenizer
    from loraclf.modeling.methods import get_method

    if not get_method(recipe.adapter.method).plain:
        raise UserError(
            f"export: a {recipe.adapter.method}-tuned run is a peft wrapper with virtual tokens, not a plain "
            "transformers model; predict with `loraclf predict` instead"
        )

    tokenizer = load_tokenizer(str(run / "tokenizer"), truncation_side=recipe.data.truncation_side)
    model = build_trained_model(run, recipe, len(labels), tokenizer.pad_token_id).eval()
    if calibration:
        fold_temperature(model, len(labels), temperature_of(read_run_info(run).calibration))
    tmp = temp_sibling(out, ".partial")  # a name of this export's own: two exports never share a folder
    tmp.mkdir()
    try:
        kind = fmt
        if fmt == "onnx":
            from loraclf.inference.onnx_int8 import export
            from loraclf.utils.devices import onnx_available as available

            if not available():
                raise UserError("--format onnx needs onnxruntime and onnx: pip install onnxruntime onnx")
            try:
                export(model, tmp / "model.onnx", tokenizer.pad_token_id)
            except (RuntimeError, ValueError) as exc:
                raise UserError(
                    f"--format onnx: this model does not export to ONNX ({exc}); use --format hf"
                ) from None
        elif isinstance(model, PooledClassifier):
            kind = "pooled"
            _save_pooled(model, recipe, labels, tmp)
        else:
            model.config.id2label, model.config.label2id = _label_maps(labels)
            model.save_pretrained(str(tmp))
        _save_tokenizer(run, recipe, read_run_info(run).max_length, tmp)
        (tmp / "labels.json").write_text(json.dumps({"labels": labels}, indent=1))
        (tmp / "README.md").write_text(_readme(run, kind, labels))
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def fold_temperature(model, num_labels: int, temperature: float) -> None:
    """Divide the weight and bias of ``model``'s last linear layer with ``num_labels`` outputs by ``temperature``.

    That layer is the head's output layer in every classifier loraclf builds (``head.*`` of a pooled classifier,
    ``classifier``/``classifier.out_proj``/``score`` of the transformers classes), so afterwards the model's logits
    are the old logits divided by T. A temperature of 1.0 leaves the model untouched.

    Raises:
        ValueError: no linear layer with ``num_labels`` outputs.
    """
    import torch
    from torch import nn

    if temperature == 1.0:
        return
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_labels:
            last = module
    if last is None:
        raise ValueError(f"no linear layer with {num_labels} outputs to fold the temperature into")
    with torch.no_grad():
        last.weight.div_(temperature)
        if last.bias is not None:
            last.bias.div_(temperature)


def _save_tokenizer(run: Path, recipe, max_length: int, folder: Path) -> None:
    """The run's tokenizer, set to feed an exported model exactly what loraclf feeds it.

    Three settings only take effect as arguments of ``from_pretrained`` (set as attributes, ``save_pretrained``
    drops them), hence the reload: ``model_max_length`` is the run's length, where ``truncation=True`` cuts;
    ``truncation_side`` the recipe's; ``model_input_names`` only ids and mask, because loraclf never passes
    ``token_type_ids``, which a GPT-2 backbone would add to its token embeddings.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        str(run / "tokenizer"),
        model_max_length=max_length,
        truncation_side=recipe.data.truncation_side,
        model_input_names=["input_ids", "attention_mask"],
    )
    if tok.pad_token is None:  # as loraclf pads causal LMs: with the end-of-text token
        tok.pad_token = tok.eos_token
    tok.save_pretrained(str(folder))


def _label_maps(labels: list) -> tuple[dict, dict]:
    """``id2label`` and ``label2id`` with the training file's label names (JSON keys are strings anyway)."""
    return {i: str(lab) for i, lab in enumerate(labels)}, {str(lab): i for i, lab in enumerate(labels)}


def _save_pooled(model, recipe, labels: list, folder: Path) -> None:
    """Save a :class:`PooledClassifier` as a ``LoraclfForSequenceClassification`` folder with its modeling file.

    The weights go through the shipped class itself (loaded strictly), so a name or shape that the modeling file
    would not accept fails here, at export, rather than in a user's pipeline.
    """
    from loraclf.inference.hf_remote.modeling_loraclf import LoraclfConfig, LoraclfForSequenceClassification

    id2label, label2id = _label_maps(labels)
    config = LoraclfConfig(
        backbone=model.backbone.config.to_dict(),
        head=recipe.model.head,
        pooling=model.pooling,
        head_dropout=recipe.model.head_dropout,
        id2label=id2label,
        label2id=label2id,
        problem_type="single_label_classification",
        architectures=["LoraclfForSequenceClassification"],
    )
    config.auto_map = {
        "AutoConfig": "modeling_loraclf.LoraclfConfig",
        "AutoModelForSequenceClassification": "modeling_loraclf.LoraclfForSequenceClassification",
    }
    exported = LoraclfForSequenceClassification(config).eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    exported.save_pretrained(str(folder))
    shutil.copyfile(REMOTE_CODE, folder / REMOTE_CODE.name)
