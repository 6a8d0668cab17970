"""The quick start's data folder when this repository's neighbourhood has none: AG News from the Hugging Face hub.

``make quickstart`` reads ``ag_news/train.csv`` and ``ag_news/test.csv`` from ``$LORACLF_DATA``, else from
``../shared/data`` beside the repository. A fresh clone elsewhere has neither, so ``python -m
loraclf.data.hub_fetch`` resolves the folder in that order and, when both are missing, downloads the AG News
dataset (`fancyzhx/ag_news`, the hub's canonical copy of ``ag_news``: ``text`` and ``label`` columns, labels 0-3
for World, Sports, Business, Sci/Tech) into ``data/`` with the same layout. It prints the folder on stdout (the
script reads it); when the hub cannot be reached it exits 2 with one line naming both ways to give it data.

The training split is sampled (seeded, stratified by label) to the size of ``../shared/data``'s train.csv, so the
quick start's timings in the docs hold for either source; ``--train-rows 0`` keeps all 120,000 rows. The test split
is written whole (7,600 rows). There is no unlabelled file: the quick start skips its ``predict`` step then.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from loraclf.utils.errors import UserError

DATASET = "fancyzhx/ag_news"
# The row count of ../shared/data/ag_news/train.csv, which the quick start's measured timings used.
TRAIN_ROWS = 25_471
SHARED = Path("../shared/data")

Rows = list[tuple[str, int]]


def _probe_hub(timeout: float = 5.0) -> None:
    """Raise ConnectionError unless the hub's host (``HF_ENDPOINT``) accepts a TCP connection within ``timeout`` s.

    Without this, an unreachable hub costs `datasets`' retries (about 25 s of warnings) before the one-line error.
    """
    import socket
    from urllib.parse import urlsplit

    from datasets import config  # the hub settings `datasets` itself will use (HF_ENDPOINT, offline mode)

    if config.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set")
    url = urlsplit(config.HF_ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"{url.hostname}:{port}: {exc}") from exc


def _load_splits() -> dict[str, Rows]:
    """(text, label) rows of the hub dataset's train and test splits, through the `datasets` library.

    Raises:
        Exception: whatever `datasets` raises when the hub is unreachable or offline mode is on (connection
            errors, ``OfflineModeIsEnabled``, a missing cache entry); :func:`fetch` turns it into one line.
    """
    _probe_hub()
    from datasets import load_dataset

    print(f"{SHARED} is missing: downloading AG News ({DATASET}) from the Hugging Face hub", file=sys.stderr)
    splits = load_dataset(DATASET)
    return {name: list(zip(splits[name]["text"], splits[name]["label"])) for name in ("train", "test")}


def sample_stratified(rows: Rows, n: int, seed: int = 0) -> Rows:
    """``n`` rows drawn without replacement, each label keeping its share (rounded), in the input's order.

    ``n <= 0`` or ``n >= len(rows)`` returns every row. Deterministic for a given ``seed``.
    """
    import random

    if n <= 0 or n >= len(rows):
        return list(rows)
    by_label: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(rows):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        keep += rng.sample(idx, min(len(idx), round(n * len(idx) / len(rows))))
    return [rows[i] for i in sorted(keep)]


def _write_csv(path: Path, rows: Iterable[tuple[str, int]]) -> None:
    """``text,label`` CSV (RFC 4180 quoting), written to a temporary name and renamed, so a stop leaves none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    tmp.replace(path)


def fetch(
    out: Path, train_rows: int = TRAIN_ROWS, seed: int = 0, load: Callable[[], dict[str, Rows]] | None = None
) -> Path:
    """Write ``out/ag_news/train.csv`` and ``test.csv`` (``text,label``) from the hub; returns ``out``.

    Args:
        out: the data folder to create (``ag_news/`` goes inside).
        train_rows: rows of the training split to keep (stratified sample); 0 keeps all.
        seed: the sample's seed.
        load: returns ``{"train": rows, "test": rows}``; the hub through `datasets` by default (tests pass a fake).

    Raises:
        UserError: the hub could not be reached (or gave no data); the message says how to give data instead.
    """
    try:
        splits = (load or _load_splits)()
    except Exception as exc:  # any failure to download means the same thing to the user: no data from the hub
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UserError(
            f"no data for the quick start: {SHARED} is missing and the Hugging Face hub could not be reached "
            f"({type(exc).__name__}: {reason}); set LORACLF_DATA=/path/to/data (a folder holding ag_news/train.csv "
            "and ag_news/test.csv) or connect to the hub and run again"
        ) from exc
    folder = out / "ag_news"
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "train.csv", sample_stratified(splits["train"], train_rows, seed))
    _write_csv(folder / "test.csv", splits["test"])
    return out


def resolve(
    local: Path, train_rows: int = TRAIN_ROWS, load: Callable[[], dict[str, Rows]] | None = None
) -> Path:
    """The quick start's data folder: ``$LORACLF_DATA``, else ``../shared/data``, else ``local`` (fetched once).

    A ``local`` folder that already holds both files is reused without going to the hub.

    Raises:
        UserError: ``$LORACLF_DATA`` names a folder without ``ag_news/train.csv``, or the hub is unreachable.
    """
    named = os.environ.get("LORACLF_DATA")
    if named:
        if not (Path(named) / "ag_news" / "train.csv").is_file():
            raise UserError(
                f"LORACLF_DATA={named} holds no ag_news/train.csv; point it at a folder with ag_news/train.csv "
                "and ag_news/test.csv, or unset it to use ../shared/data or the Hugging Face hub"
            )
        return Path(named)
    if SHARED.is_dir():
        return SHARED
    if all((local / "ag_news" / f).is_file() for f in ("train.csv", "test.csv")):
        return local
    return fetch(local, train_rows, load=load)


def main(argv: list[str] | None = None) -> int:
    """``python -m loraclf.data.hub_fetch [DIR]``: print the quick start's data folder; exit 2 with one line."""
    parser = argparse.ArgumentParser(
        prog="python -m loraclf.data.hub_fetch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dir", nargs="?", default="data", help="where to download AG News (default: data)")
    parser.add_argument(
        "--train-rows", type=int, default=TRAIN_ROWS, help="training rows kept (stratified); 0 = all 120,000"
    )
    args = parser.parse_args(argv)
    try:
        print(resolve(Path(args.dir), args.train_rows))
    except UserError as exc:
        print(f"quickstart: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
