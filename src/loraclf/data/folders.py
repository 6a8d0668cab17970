"""A folder of text files per class as a data set: ``train/World/*.txt``, ``train/Sports/*.txt``.

This is the layout of IMDB's release (``aclImdb/train/pos``, ``…/neg``) and of scikit-learn's ``load_files``: each
sub-folder of the root is a class, named by the folder, and each file in it one text. The row's id is the file's
path relative to the root (``World/0042.txt``), so a prediction file names the files it scored. Files directly in
the root are texts without a label (a folder to predict), unless class folders exist beside them: then they are
left out, as ``load_files`` leaves them (IMDB keeps ``urls_pos.txt`` and the like there), and a note says how many.

Hidden files (``.DS_Store``) and hidden folders are skipped. Texts are decoded as data files are
(:mod:`loraclf.data.encodings`: UTF-8, a BOM's encoding, or ``data.encoding``); every file that does not decode is
collected, so one error line names them all (the first few, and how many) rather than one per attempt.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loraclf.config import DataConfig
from loraclf.data.encodings import check_codec, decode
from loraclf.utils.errors import UserError, say, short_list

HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def is_text_folder(path: Path) -> bool:
    """A folder of class folders holding files, or of files: not a saved Hugging Face dataset."""
    if any((path / n).exists() for n in HF_MARKERS):
        return False
    return any(p.is_file() and _visible(p) for p in path.iterdir()) or any(
        p.is_file() and _visible(p) for d in path.iterdir() if d.is_dir() and _visible(d) for p in d.iterdir()
    )


def _files(root: Path, flag: str) -> tuple[list[Path], list[str] | None]:
    """The text files and, with class folders, each one's class (the folder name); sorted by relative path."""
    classes = sorted(d for d in root.iterdir() if d.is_dir() and _visible(d))
    loose = sorted(p for p in root.iterdir() if p.is_file() and _visible(p))
    if not classes:
        return loose, None
    files, labels = [], []
    for folder in classes:
        inside = sorted(p for p in folder.iterdir() if p.is_file() and _visible(p))
        files += inside
        labels += [folder.name] * len(inside)
    if loose:
        say(
            f"loraclf: note: {flag}: left out {len(loose):,} file{'s' if len(loose) > 1 else ''} directly in "
            f"'{root}' (such as {loose[0].name}); texts of a class go in a folder named by the class"
        )
    if not files:
        raise UserError(
            f"{flag}: the class folders of '{root}' ({short_list(d.name for d in classes)}) hold no files; put "
            "each text in a file inside its class's folder"
        )
    return files, labels


def read_text_folder(root: Path, flag: str, cfg: DataConfig) -> pd.DataFrame:
    """The folder's texts as a frame with the recipe's text, label and id columns (see the module docstring).

    Raises:
        UserError: no files, unreadable files, or files that are not text in the encoding (all named in one
            line).
    """
    check_codec(cfg.encoding)  # an unknown codec is one message for the whole folder
    files, labels = _files(root, flag)
    texts, bad = [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{flag}: cannot read '{path}' ({exc.strerror}); check its permissions") from None
        if b"\0" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            bad.append(f"{rel} (binary)")  # NUL bytes: an image or an archive, not text (UTF-16 has a BOM)
            continue
        try:
            texts.append(decode(raw, path, flag, cfg.encoding))
        except UserError:
            bad.append(rel)
    if bad:
        codec = f"data.encoding={cfg.encoding}" if cfg.encoding else "UTF-8"
        raise UserError(
            f"{flag}: {len(bad):,} file{'s' if len(bad) > 1 else ''} of '{root}' {'are' if len(bad) > 1 else 'is'} "
            f"not text in {codec}: {short_list(bad, 5)}; re-save {'them' if len(bad) > 1 else 'it'} as UTF-8, "
            "move them out, or set data.encoding (e.g. cp1252)"
        )
    ids = [p.relative_to(root).as_posix() for p in files]
    frame = {cfg.id_column: ids, cfg.text_column: texts}
    if labels is not None:
        frame[cfg.label_column] = labels
    df = pd.DataFrame(frame, dtype=object)
    df.attrs["text_folder"] = labels is not None or "unlabelled"  # lets a missing label column say what to do
    return df
