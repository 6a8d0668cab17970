"""A data file's bytes as text: decompression, byte-order marks, ``data.encoding``, and what to say when it fails.

* **Compression** is told by the last suffix: ``.gz``, ``.bz2``, ``.xz`` (Python's own modules) and ``.zst``
  (the ``zstandard`` package, a dependency, which pandas uses too). Any kind of file may be compressed
  (``train.csv.gz``, ``test.parquet.zst``, ``data.pkl.xz``, ``sheet.xlsx.bz2``): the file is decompressed in memory
  and read as the suffix before the compression's says.
* **Encoding.** Without ``data.encoding`` a file is UTF-8, or UTF-16/UTF-32 when it starts with that encoding's
  byte-order mark: Excel's "Unicode Text" export is tab-separated UTF-16 LE with a BOM, and is read as it is. A
  UTF-8 BOM is dropped. With ``data.encoding`` (any codec Python knows: ``cp1252``, ``latin-1``, ``shift_jis``…)
  the file is decoded with that codec (a BOM of that codec dropped).
* **Not UTF-8.** The error names the first bad byte and its line and suggests ``data.encoding``: ``cp1252`` when
  bytes 0x80-0x9F occur (Windows-1252 puts curly quotes, dashes and the euro sign there, while in ISO-8859-1 they
  are control characters no text uses), ``latin-1`` otherwise.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
from pathlib import Path

from loraclf.utils.errors import UserError

COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def check_codec(encoding: str | None) -> str | None:
    """The codec's canonical name, or None when none is set.

    Raises:
        UserError: Python knows no codec of that name.
    """
    if encoding is None:
        return None
    try:
        return codecs.lookup(str(encoding)).name
    except LookupError:
        raise UserError(
            f"data.encoding: unknown encoding '{encoding}'; give a codec Python knows, e.g. cp1252, latin-1, "
            "utf-16 or shift_jis"
        ) from None


def format_of(path: Path) -> tuple[str, str | None]:
    """(the file's own suffix, the compression suffix or None): ``a.csv.gz`` → (``.csv``, ``.gz``)."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSED:
        return Path(path.stem).suffix.lower(), suffix
    return suffix, None


def _zstd_decompress(data: bytes) -> bytes:
    import zstandard  # an ImportError here becomes the one-line "pip install zstandard"

    # A stream reader: frames written without their size in the header (streaming writers) read too.
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        return reader.read()


def raw_bytes(path: Path, flag: str) -> bytes:
    """The file's bytes, decompressed when its name ends in a compression suffix.

    Raises:
        UserError: the compressed stream is damaged, or ``.zst`` without a Zstandard library.
    """
    data = path.read_bytes()
    _, compression = format_of(path)
    if compression is None:
        return data
    try:
        if compression == ".gz":
            return gzip.decompress(data)
        if compression == ".bz2":
            return bz2.decompress(data)
        if compression == ".xz":
            return lzma.decompress(data)
        return _zstd_decompress(data)
    except ImportError:
        raise UserError(
            f"{flag}: reading '{path}' needs the zstandard package: pip install zstandard (or decompress it: "
            f"zstd -d '{path}')"
        ) from None
    except Exception as exc:  # each library raises its own error type for a damaged stream
        raise UserError(
            f"{flag}: '{path}' is not a readable {compression} file ({type(exc).__name__}: {exc}); check that it "
            "was copied completely"
        ) from None


def suggest_codec(raw: bytes) -> str:
    """``cp1252`` when bytes 0x80-0x9F occur (see the module docstring), else ``latin-1``."""
    return "cp1252" if any(0x80 <= b <= 0x9F for b in raw) else "latin-1"


def decode(raw: bytes, path: Path | str, flag: str, encoding: str | None = None) -> str:
    """The text of a file's bytes (see the module docstring), without a byte-order mark.

    Raises:
        UserError: the bytes are not text in the encoding; names the byte, its line and the likely codec.
    """
    codec = check_codec(encoding)
    if codec is None:
        codec = next((name for bom, name in BOMS if raw.startswith(bom)), "utf-8")
    elif codec == "utf-8":
        codec = "utf-8-sig"
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        if codec in ("utf-8", "utf-8-sig"):
            likely = suggest_codec(raw)
            fix = f"set data.encoding={likely} (or the codec it was saved in), or re-save it as UTF-8"
            what = "UTF-8"
        else:
            fix = "set data.encoding to the codec it was saved in"
            what = f"valid {codec}"
        raise UserError(f"{flag}: '{path}' is not {what} (byte {exc.start}, line {line}); {fix}") from None
