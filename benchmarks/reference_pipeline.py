"""The course reports' pipeline, as the baseline loraclf is measured against.

HF Trainer + peft LoRA (r=8, alpha 16, dropout 0.1 on query/value), every text padded to max_length 128, fp32,
train batch 16, Trainer's default evaluation batch (8). Written the way the reports' notebooks do it, on purpose:
it is the "before" of benchmarks/README.md, not a recommended way to train.

    python benchmarks/reference_pipeline.py train --model DIR --train F --out DIR --epochs 1
    python benchmarks/reference_pipeline.py predict --model DIR --adapter DIR --input F --output F
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments


def texts_of(df: pd.DataFrame) -> list[str]:
    if "text" in df.columns:
        return df["text"].astype(str).tolist()
    return (df["title"].astype(str) + " " + df["description"].astype(str)).tolist()


def encode(tok, texts, labels=None) -> Dataset:
    enc = tok(texts, padding="max_length", truncation=True, max_length=128)
    data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if labels is not None:
        data["labels"] = labels
    return Dataset.from_dict(data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(args) -> dict:
    torch.manual_seed(args.seed)
    df = pd.read_csv(args.train)
    labels = sorted(df["label"].unique().tolist())
    y = [labels.index(v) for v in df["label"]]
    tok = AutoTokenizer.from_pretrained(args.model)
    ds = encode(tok, texts_of(df), y)
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
    )
    start = time.perf_counter()
    Trainer(model=model, args=targs, train_dataset=ds).train()
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
    ds = encode(tok, texts_of(df))
    targs = TrainingArguments(output_dir=args.adapter + "/predict", report_to=[], use_cpu=True)
    start = time.perf_counter()
    logits = Trainer(model=model, args=targs).predict(ds).predictions
    seconds = time.perf_counter() - start
    preds = [labels[i] for i in np.asarray(logits).argmax(1)]
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
    args = ap.parse_args()
    result = train(args) if args.mode == "train" else predict(args)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
