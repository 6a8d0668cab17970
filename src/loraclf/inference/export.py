"""``loraclf export``: a finished run as a model folder that other tools load without loraclf.

``--format hf`` (the default) merges the LoRA update into the frozen weights (``W + (alpha/r)·B·A``, so the folder
holds ordinary weights and no adapter) and writes a Hugging Face folder with ``save_pretrained``:

* a run with the model's own head becomes a plain sequence-classification folder:
  ``AutoModelForSequenceClassification.from_pretrained(folder)`` and ``pipeline("text-classification", folder)``
  load it, with ``id2label`` naming the training file's labels;
* a run with loraclf's ``mlp``/``linear`` head over pooled token states (the CPU recipes) has no counterpart among
  the transformers classes: the backbone is a plain folder (``AutoModel``), and the head sits beside it as
  ``head.safetensors`` with ``head.json`` (pooling, layer shapes, labels), documented in the folder's README.md.

``--format onnx`` writes the int8 ONNX graph that ``predict`` runs on CPUs (``model.onnx``: inputs ``input_ids``
and ``attention_mask``, output ``logits``), with the tokenizer and ``labels.json``, for ONNX Runtime alone.

The folder is assembled under a temporary name and renamed into place: it is complete or absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from loraclf.utils.errors import UserError

FORMATS = ("hf", "onnx")


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
            "enc = tok(['some text'], return_tensors='np')\n"
            "logits = session.run(None, {'input_ids': enc['input_ids'].astype(np.int64),\n"
            "                            'attention_mask': enc['attention_mask'].astype(np.int64)})[0]\n```\n"
        )
    elif kind == "pooled":
        body = (
            "A Hugging Face backbone (adapters merged; load it with `AutoModel`) and loraclf's classification head "
            "in `head.safetensors`: pool the last hidden states as `head.json` says (mean over the attention mask, "
            "the first token, or the last real token), then apply `head.N.weight`/`head.N.bias` in order "
            "(Linear, ReLU, Linear for the mlp head; one Linear for the linear head). transformers reports a BERT "
            "pooler as missing when it loads the backbone: this head never uses it.\n"
        )
    else:
        body = (
            "A plain sequence-classification folder (adapters merged):\n\n"
            "```python\nfrom transformers import pipeline\nclf = pipeline('text-classification', model='.')\n"
            "clf('some text')\n```\n"
        )
    return f"# Exported from loraclf run `{run}`\n\nLabels (class index: label): {names}.\n\n{body}"


def export_run(run_path: str, out_path: str, fmt: str) -> Path:
    """Write ``run_path`` as a model folder at ``out_path`` in format ``fmt``; return the folder."""
    from safetensors.torch import save_file

    from loraclf.inference.run import build_trained_model
    from loraclf.modeling.backbones import PooledClassifier
    from loraclf.runfolder.schema import check_run, read_labels, read_recipe

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
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
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
            model.backbone.save_pretrained(str(tmp))
            save_file(
                {k: v.contiguous() for k, v in model.head.state_dict().items()}, str(tmp / "head.safetensors")
            )
            shapes = [list(m.weight.shape) for m in model.head if hasattr(m, "weight")]
            spec = {
                "head": recipe.model.head,
                "pooling": model.pooling,
                "linear_shapes": shapes,
                "labels": labels,
            }
            (tmp / "head.json").write_text(json.dumps(spec, indent=1))
        else:
            model.config.id2label = {i: str(lab) for i, lab in enumerate(labels)}
            model.config.label2id = {str(lab): i for i, lab in enumerate(labels)}
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "labels.json").write_text(json.dumps({"labels": labels}, indent=1))
        (tmp / "README.md").write_text(_readme(run, kind, labels))
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
