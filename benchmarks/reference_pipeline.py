"""The course reports' pipeline, as the baseline loraclf is measured against.

HF Trainer + peft LoRA (r=8, alpha 16, dropout 0.1 on query/value), every text padded to max_length 128, fp32,
train batch 16, Trainer's default evaluation batch (8). Written the way the reports' notebooks do it, on purpose:
it is the "before" of benchmarks/README.md, not a recommended way to train.

``--tuned`` is the best-configured Trainer for the same model and adapter: texts tokenised without padding and
padded per batch to a multiple of 8 (``DataCollatorWithPadding``), training batches grouped by length (Trainer's
``group_by_length`` sampling), bf16 where the CPU multiplies bf16 natively (``--bf16``, which
benchmarks/speed.py sets from loraclf's CPU check; fp32 otherwise: autocast while training, ``bf16_full_eval``'s
bf16 weights while predicting), and for prediction the adapter merged into the weights (peft's
``merge_and_unload``), rows sorted by length and scored 32 at a time. Its prediction time includes tokenising (the
sort needs the token counts), as loraclf's does; the reference's starts after tokenising. It is the "what a careful
user of Trainer gets" column of the tables, so that loraclf is measured against more than the reports' settings.

    python benchmarks/reference_pipeline.py train --model DIR --train F --out DIR --epochs 1 [--tuned [--bf16]]
    python benchmarks/reference_pipeline.py predict --model DIR --adapter DIR --input F --output F [--tuned [--bf16]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def texts_of(df: pd.DataFrame) -> list[str]:
    if "text" in df.columns:
        return df["text"].astype(str).tolist()
    return (df["title"].astype(str) + " " + df["description"].astype(str)).tolist()


def encode(tok, texts, labels=None, tuned: bool = False) -> Dataset:
    # The reports pad every text to 128 tokens; the tuned Trainer pads each batch in its collator instead.
    enc = tok(texts, truncation=True, max_length=128, **({} if tuned else {"padding": "max_length"}))
    data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if labels is not None:
        data["labels"] = labels
    return Dataset.from_dict(data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tuned_training_args(bf16: bool) -> dict:
    """Length-grouped sampling as this transformers version spells it (``train_sampling_strategy`` since 5.0,
    ``group_by_length`` before), and bf16 autocast when asked."""
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length", "bf16": bf16}
    return {"group_by_length": True, "bf16": bf16}


def train(args) -> dict:
    torch.manual_seed(args.seed)
    df = pd.read_csv(args.train)
    labels = sorted(df["label"].unique().tolist())
    y = [labels.index(v) for v in df["label"]]
    tok = AutoTokenizer.from_pretrained(args.model)
    ds = encode(tok, texts_of(df), y, args.tuned)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))
    config = LoraConfig(
        task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"]
    )
    model = get_peft_model(model, config)
    targs = TrainingArguments(
        output_dir=args.out,
        per_device_train_batch_size=16,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=0.06,  # transformers 5: a float below 1 is a ratio of the total steps
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        report_to=[],
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
        **(_tuned_training_args(args.bf16) if args.tuned else {}),
    )
    collator = DataCollatorWithPadding(tok, pad_to_multiple_of=8) if args.tuned else None
    start = time.perf_counter()
    Trainer(model=model, args=targs, train_dataset=ds, data_collator=collator).train()
    seconds = time.perf_counter() - start
    model.save_pretrained(args.out)
    with open(f"{args.out}/labels.json", "w") as fh:
        json.dump([int(v) if isinstance(v, (int, np.integer)) else v for v in labels], fh)
    return {
        "train_seconds": seconds,
        "train_samples_per_s": len(ds) * args.epochs / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def predict(args) -> dict:
    df = pd.read_csv(args.input)
    tok = AutoTokenizer.from_pretrained(args.model)
    with open(f"{args.adapter}/labels.json") as fh:
        labels = json.load(fh)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))
    model = PeftModel.from_pretrained(model, args.adapter)
    texts = texts_of(df)
    if not args.tuned:
        ds = encode(tok, texts)
        targs = TrainingArguments(output_dir=args.adapter + "/predict", report_to=[], use_cpu=True)
        start = time.perf_counter()
        logits = Trainer(model=model, args=targs).predict(ds).predictions
        seconds = time.perf_counter() - start
    else:
        model = model.merge_and_unload()
        start = time.perf_counter()
        # Tokenising is timed here, as in loraclf's figure: sorting by length needs the token counts first.
        ds = encode(tok, texts, tuned=True)
        order = np.argsort([len(x) for x in ds["input_ids"]], kind="stable")
        targs = TrainingArguments(
            output_dir=args.adapter + "/predict",
            report_to=[],
            use_cpu=True,
            per_device_eval_batch_size=32,
            bf16_full_eval=args.bf16,
        )
        collator = DataCollatorWithPadding(tok, pad_to_multiple_of=8)
        sorted_logits = Trainer(model=model, args=targs, data_collator=collator).predict(ds.select(order))
        logits = np.empty(sorted_logits.predictions.shape, dtype=np.float32)
        logits[order] = np.asarray(sorted_logits.predictions, dtype=np.float32)
        seconds = time.perf_counter() - start
    preds = [labels[i] for i in np.asarray(logits).argmax(1)]
    if args.logits:
        np.save(args.logits, np.asarray(logits, dtype=np.float32))
    ids = df["id"].tolist() if "id" in df.columns else list(range(len(df)))
    pd.DataFrame({"ID": ids, "Label": preds}).to_csv(args.output, index=False)
    return {
        "predict_seconds": seconds,
        "predict_samples_per_s": len(ds) / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["train", "predict"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train")
    ap.add_argument("--out")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--adapter")
    ap.add_argument("--input")
    ap.add_argument("--output")
    ap.add_argument(
        "--logits", help="predict: also save the logits, shape (rows, classes), to this .npy file"
    )
    ap.add_argument("--tuned", action="store_true", help="the best-configured Trainer (module docstring)")
    ap.add_argument("--bf16", action="store_true", help="with --tuned: bf16 (CPUs with native bf16)")
    args = ap.parse_args()
    if args.bf16 and not args.tuned:
        ap.error("--bf16 goes with --tuned (the reference pipeline is fp32, as the reports ran it)")
    result = train(args) if args.mode == "train" else predict(args)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
