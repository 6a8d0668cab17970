"""Scoreable files from the hand-labelled rows of the competition's test file: all, real and machine-written rows.

benchmarks/data/kaggle_dev.csv holds the ids and read-off labels of 800 rows of ag_news/kaggle_test.csv (how they
were drawn and labelled: benchmarks/data/README.md); the texts stay in the shared data folder. This joins the two
and writes ``label,text`` files that ``loraclf evaluate RUN --data FILE`` scores:

    python benchmarks/kaggle_dev.py --out runs/kaggle-dev [--data ../shared/data] [--exclude-unsure]

writes ``all.csv`` (800 rows), ``real.csv`` (the ordinary AG News items) and ``machine.csv`` (the machine-written
ones). ``--exclude-unsure`` leaves out the rows whose topic was a best guess. Texts are copied as they are in
kaggle_test.csv; loraclf's cleaning applies when a run reads them, exactly as it does at prediction time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "benchmarks" / "data" / "kaggle_dev.csv"
SETS = {"all": None, "real": 0, "machine": 1}


def default_data() -> Path:
    """$LORACLF_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("LORACLF_DATA", ROOT.parent / "shared" / "data"))


def dev_sets(
    labels: pd.DataFrame, texts: pd.DataFrame, exclude_unsure: bool = False
) -> dict[str, pd.DataFrame]:
    """Join labels (id,label,machine,unsure) with texts (id,text) into ``label,text`` tables by set name.

    Args:
        labels: the hand labels, one row per id.
        texts: kaggle_test.csv (id,text).
        exclude_unsure: drop rows marked unsure.

    Returns:
        ``{"all": …, "real": …, "machine": …}``, each a DataFrame with columns label,text in the labels' order.

    Raises:
        SystemExit: a labelled id is not in ``texts``, or an id is labelled twice.
    """
    if labels["id"].duplicated().any():
        raise SystemExit(
            f"kaggle_dev: id {labels['id'][labels['id'].duplicated()].iloc[0]} is labelled twice"
        )
    missing = sorted(set(labels["id"]) - set(texts["id"]))
    if missing:
        raise SystemExit(
            f"kaggle_dev: {len(missing)} labelled ids (first {missing[0]}) are not in the texts file; "
            "pass the competition's kaggle_test.csv"
        )
    rows = labels[labels["unsure"] == 0] if exclude_unsure else labels
    joined = rows.merge(texts[["id", "text"]], on="id", how="left", validate="one_to_one")
    out = {}
    for name, machine in SETS.items():
        part = joined if machine is None else joined[joined["machine"] == machine]
        out[name] = part[["label", "text"]].reset_index(drop=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data(), help="shared data folder (has ag_news/)")
    ap.add_argument("--out", type=Path, required=True, help="folder to write all.csv, real.csv, machine.csv")
    ap.add_argument("--labels", type=Path, default=LABELS, help="hand labels (default benchmarks/data/…)")
    ap.add_argument("--exclude-unsure", action="store_true", help="leave out rows whose topic was a guess")
    args = ap.parse_args()
    source = args.data / "ag_news" / "kaggle_test.csv"
    if not source.is_file():
        raise SystemExit(f"kaggle_dev: {source} not found; pass --data DIR or set LORACLF_DATA")
    sets = dev_sets(pd.read_csv(args.labels), pd.read_csv(source), args.exclude_unsure)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, frame in sets.items():
        frame.to_csv(args.out / f"{name}.csv", index=False)
        mix = " ".join(f"{k}:{v}" for k, v in sorted(frame["label"].value_counts().items()))
        print(f"{name}.csv: {len(frame):,} rows (labels {mix})")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
