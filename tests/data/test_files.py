"""Files as users have them (issue 14): no header row, other delimiters, JSON line separators, label spellings.

Each kind is tested as a whole: the original AG News release (no header, every field quoted), CSVs separated by
``,`` ``;`` tab or ``|`` under any suffix, JSON Lines and CSV files whose strings hold every character that
``str.splitlines`` would split on, and evaluation labels that differ from training labels in case or spacing;
through ``load_texts`` and through the command line (one line on stderr, exit status 2).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import sys

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LABELS, make_rows, run_cli_forked
from loraclf.config import CleanConfig, DataConfig, Recipe, apply_overrides, validate
from loraclf.data.batching import hash_texts
from loraclf.data.tables import load_texts
from loraclf.utils.errors import UserError

AG = ["label", "title", "description"]
DEFAULT = DataConfig()


def headerless() -> DataConfig:
    """The original AG News layout (built per test, so each test stands or falls alone)."""
    return DataConfig(header=False, columns=AG)


RAW = DataConfig(clean=CleanConfig(html=False, escapes=False, whitespace=False))
# Every character str.splitlines splits on besides \n: the Unicode line and paragraph separators (Zl, Zp), NEL,
# vertical tab, form feed, the file/group/record separators, and a lone carriage return.
SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r", "\n"]


def original_ag_news(path, n: int = 12, seed: int = 0):
    """Rows as the original AG News release has them: no header, every field quoted, labels 1-4."""
    rows = make_rows(n, seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        for label, title, desc in rows:
            w.writerow([LABELS.index(label) + 1, f"{title} (Reuters)", f"Reuters - {desc} says the report"])
    return path, rows


def error(path, cfg=DEFAULT, flag="--train", **kw) -> str:
    with pytest.raises(UserError) as exc:
        load_texts(str(path), cfg, flag, **kw)
    msg = str(exc.value)
    assert "\n" not in msg and flag in msg and path.name in msg
    return msg


# --- 1. headerless files ----------------------------------------------------------------------------------------


def test_original_ag_news_reads_with_header_false_and_columns(tmp_path):
    path, rows = original_ag_news(tmp_path / "train.csv")
    ts, label_map = load_texts(str(path), headerless(), "--train")
    assert label_map == [1, 2, 3, 4] and len(ts) == len(rows)  # the first row is data, not names
    assert ts.texts[0] == f"{rows[0][1]} (Reuters) Reuters - {rows[0][2]} says the report"
    assert [label_map[i] for i in ts.labels] == [LABELS.index(r[0]) + 1 for r in rows]


def test_a_headerless_file_read_with_a_header_gets_the_exact_fix(tmp_path):
    path, _ = original_ag_news(tmp_path / "train.csv")
    msg = error(path)
    assert "line 1 looks like data" in msg
    assert msg.endswith("read it with data.header=false data.columns=label,title,description")


@pytest.mark.parametrize(
    ("first", "labelled", "label_map", "fix"),
    [
        (["world", "troops moved across the border today"], True, ["sports", "world"], "label,text"),
        (["17", "stocks rose sharply after the bank merger news"], False, None, "id,text"),
        (["Markets rallied on Monday after the central bank held rates steady"], False, None, "text"),
        (
            ["r7", "2", "Stocks rally on merger", "stocks rose as the merger closed"],
            True,
            None,
            "col1,label,title,description",
        ),
    ],
    ids=["class-name-label", "unlabelled-with-id", "one-text-column", "extra-column"],
)
def test_the_suggested_columns_follow_the_cells(tmp_path, first, labelled, label_map, fix):
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([first, first])
    msg = error(path, flag="--input", labelled=labelled, label_map=label_map)
    assert f"data.header=false data.columns={fix}" in msg


def test_a_header_read_as_data_is_named_with_the_fix(tmp_path):
    path = tmp_path / "test.csv"
    pd.DataFrame([{"label": r[0], "title": r[1], "description": r[2]} for r in make_rows(8)]).to_csv(
        path, index=False
    )
    msg = error(path, headerless(), "--eval", label_map=LABELS)
    assert "row 1" in msg and "looks like a header row" in msg and "data.header=true" in msg


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.header=false"], "data.header=false needs data.columns"),
        (["data.columns=label,text"], "add data.header=false"),
        (["data.header=false", "data.columns=label,text,label"], "data.columns repeats label"),
        (["data.delimiter=ab"], "data.delimiter must be one separator character"),
    ],
)
def test_file_keys_are_validated(overrides, key):
    with pytest.raises(UserError, match=key):
        validate(apply_overrides(Recipe(), overrides))


# --- 2. delimiters -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt"])
@pytest.mark.parametrize("sep", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
def test_the_delimiter_is_detected_from_the_header_whatever_the_suffix(tmp_path, sep, suffix):
    rows = make_rows(8)
    path = tmp_path / f"data{suffix}"
    df = pd.DataFrame({"label": [r[0] for r in rows], "text": [f"{r[1]}, {r[2]}; ok | done" for r in rows]})
    df.to_csv(path, sep=sep, index=False)
    ts, label_map = load_texts(str(path), RAW, "--train")
    assert ts.texts == df["text"].tolist() and label_map == LABELS


def test_data_delimiter_wins_over_detection(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("label;text\nworld;troops moved, then left\nsports;goal\n", encoding="utf-8")
    for spelling in (";", "semicolon"):
        cfg = validate(apply_overrides(Recipe(), [f"data.delimiter={spelling}"])).data
        assert load_texts(str(path), cfg, "--train")[0].texts == ["troops moved, then left", "goal"]
    piped = validate(apply_overrides(Recipe(), ["data.delimiter=|"])).data
    assert piped.delimiter == "|"
    assert "columns are label;text" in error(path, piped)  # read with '|' as told: one column


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("label;text\nworld;a\nsports;b;c\n", "line 3 has 3 fields separated by ';', but the header has 2"),
        (
            "label;text\nworld;a\nsports;b\ntech\n",
            "line 4 has 1 field separated by ';', but the header has 2",
        ),
        ('label;text\nworld;"a\nb"\nsports;b;\n', "line 4 has 3 fields"),  # line of the file, not row number
    ],
    ids=["extra", "missing", "after-a-two-line-record"],
)
def test_a_row_with_another_field_count_is_named_by_its_line(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    assert fragment in error(path)


def test_a_headerless_row_with_another_field_count_names_the_columns(tmp_path):
    path = tmp_path / "nohead.csv"
    path.write_text('"1","a title","a text"\n"2","only a title"\n', encoding="utf-8")
    msg = error(path, headerless())
    assert "line 2 has 2 fields" in msg and "data.columns names 3 (label, title, description)" in msg


# --- 3. JSON Lines and line separators -----------------------------------------------------------------------------

TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(SEPARATORS), st.characters(blacklist_categories=("Cs",))), max_size=40
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=6), newline=st.sampled_from(["\n", "\r\n"]))
def test_any_json_lines_file_round_trips(tmp_path, texts, newline):
    path = tmp_path / "data.jsonl"
    records = [json.dumps({"id": f"r{i}", "text": t}, ensure_ascii=False) for i, t in enumerate(texts)]
    path.write_bytes((newline.join(records) + newline).encode("utf-8"))
    ts, _ = load_texts(str(path), RAW, "--input", labelled=False)
    assert ts.texts == texts and ts.ids == [f"r{i}" for i in range(len(texts))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(TEXT, min_size=1, max_size=6),
    sep=st.sampled_from([",", ";", "\t", "|"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
)
def test_any_csv_file_round_trips(tmp_path, texts, sep, quoting):
    path = tmp_path / "data.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=sep, quoting=quoting)
        w.writerows([["id", "text"], *([f"r{i}", t] for i, t in enumerate(texts))])
    ts, _ = load_texts(str(path), RAW, "--input", labelled=False)
    assert ts.texts == texts and ts.ids == [f"r{i}" for i in range(len(texts))]


def test_the_issue_record_with_u2028_reads(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text('{"text": "first\u2028second", "label": 1}\n{"text": "x\u2029y", "label": 2}\n', "utf-8")
    ts, label_map = load_texts(str(path), RAW, "--train")
    assert ts.texts == ["first\u2028second", "x\u2029y"] and label_map == [1, 2]


@pytest.mark.parametrize("sep", [*SEPARATORS, "\r\n"])
def test_text_hashes_do_not_split_on_line_separators(sep):
    def digest(texts):
        h = hashlib.sha256()
        hash_texts(h, texts)
        return h.hexdigest()

    assert digest([f"a{sep}b"]) != digest(["a", "b"]) != digest([f"a{sep}", "b"])


# --- 4. labels -----------------------------------------------------------------------------------------------------


def test_a_label_differing_only_in_case_is_an_error_naming_the_training_label(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("label,text\nWorld,troops\nworld,treaty\n", encoding="utf-8")
    msg = error(path, flag="--eval", label_map=["Sports", "World"])
    assert (
        "row 2 has label 'world'" in msg
        and "differs only in case or spacing from the training label 'World'" in msg
    )


def test_string_labels_are_compared_without_surrounding_whitespace(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": " World "}\n{"text": "b", "label": "Sports\\t"}\n', "utf-8")
    _, label_map = load_texts(str(train), DataConfig(), "--train")
    assert label_map == ["Sports", "World"]
    ev = tmp_path / "eval.csv"
    ev.write_text('label,text\n"World ",c\n Sports,d\n', encoding="utf-8")
    ts, _ = load_texts(str(ev), DataConfig(), "--eval", label_map=label_map)
    assert ts.labels.tolist() == [1, 0]


SPELLINGS = [("01", "02"), ("007", "012"), ("+1", "-1"), ("1_000", "2_000"), ("1e3", "2e3"), ("1", "A1")]


@pytest.mark.parametrize("spelled", SPELLINGS, ids=[",".join(s) for s in SPELLINGS])
def test_labels_keep_the_training_files_spelling(tmp_path, spelled):
    """Finding 8: "01" came back as 1, "1_000" and "1e3" as 1000. In a text column they stay as written."""
    path = tmp_path / "train.csv"
    path.write_text(
        "label,text\n" + "".join(f"{lab},text {i}\n" for i, lab in enumerate(spelled * 2)), "utf-8"
    )
    ts, label_map = load_texts(str(path), DEFAULT, "--train")
    assert label_map == sorted(spelled) and all(isinstance(x, str) for x in label_map)
    assert [label_map[i] for i in ts.labels] == list(spelled * 2)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("plain.csv", "label,text\n1,a\n1.0,b\n2,c\n2.00,d\n"),
        (
            "numbers.jsonl",
            '{"label": 1, "text": "a"}\n{"label": 1.0, "text": "b"}\n{"label": 2, "text": "c"}\n',
        ),
    ],
)
def test_one_number_in_a_column_of_numbers_is_one_class(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    ts, label_map = load_texts(str(path), DEFAULT, "--train")
    assert label_map == [1, 2] and ts.labels.tolist()[:3] == [0, 0, 1]


def test_a_text_column_holding_1_and_01_trains_two_classes_and_the_summary_says_so(tmp_path, capsys):
    from loraclf.data.splits import read_rows

    path = tmp_path / "train.csv"
    rows = [("01", "troops"), ("1", "treaty"), ("x", "goal")] * 4
    path.write_text("label,text\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")
    got = read_rows(DataConfig(val_size=3), 0, str(path), None)
    assert got.label_map == ["01", "1", "x"]
    assert got.notes["labels_spelling_one_number"] == [["01", "1"]]
    err = capsys.readouterr().err
    assert "labels '01' and '1' spell one number differently" in err and "separate classes" in err


def test_a_runs_numeric_labels_still_meet_any_spelling_of_their_numbers(tmp_path):
    """A run from before labels kept their spelling has labels.json [1, 2] for a file that wrote 01, 02."""
    path = tmp_path / "eval.csv"
    path.write_text("label,text\n01,a\n02,b\n2,c\n", encoding="utf-8")
    ts, _ = load_texts(str(path), DEFAULT, "--eval", label_map=[1, 2])
    assert ts.labels.tolist() == [0, 1, 1]


def test_another_spelling_of_a_spelled_label_is_an_error_naming_it(tmp_path):
    path = tmp_path / "eval.csv"
    path.write_text("label,text\n1,a\n2,b\n", encoding="utf-8")
    msg = error(path, flag="--eval", label_map=["01", "02"])
    assert "row 1 has label 1" in msg and "the number of the training label '01' spelled differently" in msg


# --- 5. encodings, Excel, compression, folders of texts, repeated columns (issue 28) ------------------------------

ROWS = [("world", "café – “quoted” troops"), ("sports", "goal, then ½ time"), ("world", "naïve treaty")]


def tab_text(rows=ROWS, newline="\r\n") -> str:
    return "label\ttext" + newline + "".join(f"{a}\t{b}{newline}" for a, b in rows)


@pytest.mark.parametrize(
    ("bom", "codec"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le"),  # Excel's "Unicode Text"
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF8, "utf-8"),
    ],
    ids=["utf-16-le", "utf-16-be", "utf-32-le", "utf-8-sig"],
)
def test_a_file_with_a_byte_order_mark_reads_as_it_is(tmp_path, bom, codec):
    path = tmp_path / "export.txt"
    path.write_bytes(bom + tab_text().encode(codec))
    ts, label_map = load_texts(str(path), RAW, "--train")
    assert ts.texts == [b for _, b in ROWS] and label_map == ["sports", "world"]


@pytest.mark.parametrize("codec", ["cp1252", "latin-1", "shift_jis"])
@pytest.mark.parametrize("name", ["data.csv", "data.jsonl"])
def test_data_encoding_reads_any_codec(tmp_path, codec, name):
    rows = (
        [("world", "café troops"), ("sports", "goal ½ time")]
        if codec != "shift_jis"
        else [("w", "東京"), ("s", "大阪")]
    )
    if codec == "cp1252":
        rows[0] = ("world", "café – “quoted”")
    path = tmp_path / name
    if name.endswith(".csv"):
        content = "label,text\n" + "".join(f"{a},{b}\n" for a, b in rows)
    else:
        content = "".join(json.dumps({"label": a, "text": b}, ensure_ascii=False) + "\n" for a, b in rows)
    path.write_bytes(content.encode(codec))
    cfg = validate(apply_overrides(Recipe(), [f"data.encoding={codec}"])).data
    assert load_texts(str(path), cfg, "--train")[0].texts == [b for _, b in rows]


@pytest.mark.parametrize(
    ("text", "codec", "likely"),
    [("café – “quoted”", "cp1252", "cp1252"), ("café naïve", "latin-1", "latin-1")],
    ids=["curly-quotes-cp1252", "accents-latin-1"],
)
def test_not_utf8_names_data_encoding_and_the_likely_codec(tmp_path, text, codec, likely):
    path = tmp_path / "export.csv"
    path.write_bytes(f"label,text\nworld,troops\nworld,{text}\n".encode(codec))
    msg = error(path)
    assert "is not UTF-8 (byte" in msg and "line 3" in msg and f"set data.encoding={likely}" in msg


def test_an_unknown_codec_is_one_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("label,text\nworld,a\nsports,b\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"data\.encoding: unknown encoding 'klingon'"):
        load_texts(str(path), DataConfig(encoding="klingon"), "--train")


def test_excels_sep_line_is_honoured_and_skipped(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b"\xef\xbb\xbfsep=;\r\nlabel;text\r\nworld;troops, then treaty\r\nsports;goal\r\n")
    ts, label_map = load_texts(str(path), RAW, "--train")
    assert ts.texts == ["troops, then treaty", "goal"] and label_map == ["sports", "world"]
    path.write_bytes(b"sep=;\nlabel;text\nworld;a\nsports;b;c\n")
    assert "line 4 has 3 fields separated by ';'" in error(path)  # lines of the file, the sep line counted


def write_kind(df: pd.DataFrame, kind: str, path) -> None:
    """``df`` as a file of ``kind`` at ``path`` (uncompressed)."""
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif kind == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif kind == "json":
        path.write_text(json.dumps(df.to_dict(orient="records")), encoding="utf-8")
    elif kind == "parquet":
        df.to_parquet(path, index=False)
    elif kind == "pkl":
        df.to_pickle(path)
    elif kind == "xlsx":
        df.to_excel(path, index=False)


def compress(data: bytes, how: str) -> bytes:
    import bz2
    import gzip
    import lzma

    import zstandard

    return {
        "gz": gzip.compress,
        "bz2": bz2.compress,
        "xz": lzma.compress,
        "zst": lambda b: zstandard.ZstdCompressor().compress(b),
    }[how](data)


KINDS = ["csv", "tsv", "jsonl", "json", "parquet", "pkl", "xlsx"]


@pytest.mark.parametrize("how", ["gz", "bz2", "xz", "zst"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_file_reads_compressed(tmp_path, kind, how):
    df = pd.DataFrame({"label": ["world", "sports", "world"], "text": ["troops", "goal", "treaty"]})
    plain = tmp_path / f"data.{kind}"
    write_kind(df, kind, plain)
    path = tmp_path / f"data.{kind}.{how}"
    path.write_bytes(compress(plain.read_bytes(), how))
    ts, label_map = load_texts(str(path), DEFAULT, "--train")
    assert ts.texts == ["troops", "goal", "treaty"] and label_map == ["sports", "world"]


def test_zstd_without_a_zstandard_library_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "data.csv.zst"
    path.write_bytes(compress(b"label,text\nworld,a\nsports,b\n", "zst"))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # an import of it now fails
    assert "needs the zstandard package: pip install zstandard" in error(path)


def test_a_damaged_compressed_file_is_one_line(tmp_path):
    path = tmp_path / "data.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00broken")
    assert "is not a readable .gz file" in error(path)


def test_an_excel_workbook_keeps_its_cells_types(tmp_path):
    path = tmp_path / "sheet.xlsx"
    pd.DataFrame(
        {"id": ["007", "008", "009"], "label": [1, 2, 1.0], "text": ["troops", "goal", "treaty"]}
    ).to_excel(path, index=False)
    ts, label_map = load_texts(str(path), DEFAULT, "--train")
    assert label_map == [1, 2] and ts.labels.tolist() == [
        0,
        1,
        0,
    ]  # a column of numbers: 1 and 1.0 are one class
    assert ts.ids == ["007", "008", "009"] and ts.texts == ["troops", "goal", "treaty"]


def test_an_excel_workbook_without_openpyxl_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "sheet.xlsx"
    pd.DataFrame({"label": ["a", "b"], "text": ["x", "y"]}).to_excel(path, index=False)
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    assert "needs openpyxl: pip install loraclf[excel]" in error(path)


def write_folder(root, files: dict[str, bytes]):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_a_folder_of_texts_per_class_is_a_labelled_set(tmp_path, capsys):
    root = write_folder(
        tmp_path / "train",
        {
            "World/001.txt": b"troops moved",
            "World/002.txt": "treaty signed – “today”".encode(),
            "Sports/a.txt": b"\xef\xbb\xbfgoal scored",
            "Sports/.DS_Store": b"\x00\x01",
            "urls_pos.txt": b"http://example.com",  # IMDB keeps such files beside the class folders
        },
    )
    ts, label_map = load_texts(str(root), RAW, "--train")
    assert label_map == ["Sports", "World"]
    assert ts.ids == ["Sports/a.txt", "World/001.txt", "World/002.txt"]
    assert ts.texts == ["goal scored", "troops moved", "treaty signed – “today”"]
    assert [label_map[i] for i in ts.labels] == ["Sports", "World", "World"]
    assert "left out 1 file directly in" in capsys.readouterr().err


def test_a_folder_of_texts_predicts_with_relative_paths_as_ids(tmp_path):
    root = write_folder(tmp_path / "unlabelled", {"b.txt": b"goal", "a.txt": b"troops"})
    ts, _ = load_texts(str(root), RAW, "--input", labelled=False)
    assert ts.ids == ["a.txt", "b.txt"] and ts.texts == ["troops", "goal"]
    assert "holds texts but no class folders" in error(root)


def test_files_of_a_folder_that_are_not_utf8_are_named_in_one_line(tmp_path):
    root = write_folder(
        tmp_path / "train",
        {
            "World/ok.txt": b"troops",
            "World/bad.txt": "café".encode("cp1252"),
            "Sports/bad2.txt": "“goal”".encode("cp1252"),
            "Sports/img.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00",
        },
    )
    msg = error(root)
    assert "3 files of" in msg and "Sports/bad2.txt" in msg and "Sports/img.txt (binary)" in msg
    assert "World/bad.txt" in msg and "World/ok.txt" not in msg and "data.encoding" in msg
    (root / "Sports" / "img.txt").unlink()
    ts, _ = load_texts(str(root), DataConfig(encoding="cp1252"), "--train")
    assert sorted(ts.texts) == ["café", "troops", "“goal”"]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        (
            "dup.csv",
            "text,text,label\na,b,world\nc,d,sports\n",
            "line 1 names column 'text' twice (columns 1 and 2)",
        ),
        ("dup.tsv", "label\ttext\tlabel\nworld\ta\tx\n", "names column 'label' twice (columns 1 and 3)"),
        ("dup.jsonl", '{"text": "a", "label": "world", "text": "b"}\n', "line 1 has the key 'text' twice"),
    ],
)
def test_a_column_named_twice_is_an_error_naming_it(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert fragment in error(path)


@pytest.mark.parametrize("kind", ["parquet", "xlsx"])
def test_a_column_named_twice_in_a_typed_file_is_an_error_naming_it(tmp_path, kind):
    path = tmp_path / f"dup.{kind}"
    df = pd.DataFrame([["a", "b", "world"], ["c", "d", "sports"]], columns=["text", "text", "label"])
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table([pa.array(df.iloc[:, i].tolist()) for i in range(3)], names=list(df.columns)), path
        )
    else:
        df.to_excel(path, index=False)
    assert "'text'" in error(path) and "twice" in error(path)


# --- through the command line --------------------------------------------------------------------------------------

TINY = [
    "--quiet",
    "train.batch_size=8",
    "train.lr=2e-2",
    "model.head=linear",
    "train.threads=1",
    "--epochs",
    "1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir):
    """Two tiny runs: one trained on the original (headerless) layout, one on a file with a header."""
    d = tmp_path_factory.mktemp("files")
    bare, _ = original_ag_news(d / "bare.csv", 48)
    headed = d / "headed.csv"
    pd.read_csv(bare, header=None, names=AG).to_csv(headed, index=False)
    semi = d / "semi.csv"
    pd.read_csv(bare, header=None, names=AG).to_csv(semi, index=False, sep=";")
    padded = d / "padded.csv"  # category codes written with a leading zero (finding 8)
    frame = pd.read_csv(bare, header=None, names=AG)
    frame.assign(label=[f"{x:02d}" for x in frame["label"]]).to_csv(padded, index=False)
    common = ["--model", tiny_bert_dir, *TINY]
    jobs = {
        "bare": [
            "train",
            "--train",
            bare,
            "--out",
            d / "bare-run",
            *common,
            "data.header=false",
            "data.columns=" + ",".join(AG),
        ],
        "headed": ["train", "--train", semi, "--out", d / "headed-run", *common],
        "padded": ["train", "--train", padded, "--out", d / "padded-run", *common],
    }
    results = run_cli_forked({**jobs, "unfixed": ["train", "--train", bare, "--out", d / "x", *common]}, d)
    for name in jobs:
        assert results[name].returncode == 0, (name, results[name])
    return {
        "d": d,
        "bare": bare,
        "headed": headed,
        "semi": semi,
        "padded": padded,
        "unfixed": results["unfixed"],
    }


def one_line(res, *fragments) -> str:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def test_cli_train_on_a_headerless_file_says_the_fix(runs):
    one_line(runs["unfixed"], "bare.csv", "data.header=false data.columns=label,title,description")
    assert not (runs["d"] / "x").exists()


def test_cli_evaluate_and_predict_read_either_layout_with_file_overrides(runs):
    d, fix = runs["d"], ["data.header=false", "data.columns=label,title,description"]
    jobs = {
        # the headerless run reads headerless files as trained, and headed ones when told
        "bare-bare": ["evaluate", d / "bare-run", "--data", runs["bare"], "--json"],
        "bare-headed": ["evaluate", d / "bare-run", "--data", runs["headed"], "--json", "data.header=true"],
        "bare-headed-unset": ["evaluate", d / "bare-run", "--data", runs["headed"]],
        # the run trained on a ';' file with a header reads a headerless ',' file when told
        "headed-bare": ["evaluate", d / "headed-run", *fix, "--data", runs["bare"], "--json"],
        "headed-bare-unset": ["evaluate", d / "headed-run", "--data", runs["bare"]],
        "predict": ["predict", d / "headed-run", "--input", runs["bare"], "--output", d / "p.csv", *fix],
        "not-a-file-key": ["evaluate", d / "headed-run", "--data", runs["bare"], "train.lr=1"],
    }
    res = run_cli_forked(jobs, d)
    for name in ("bare-bare", "bare-headed", "headed-bare"):
        assert res[name].returncode == 0, (name, res[name])
        assert json.loads(res[name].stdout)["n"] == 48
    one_line(res["bare-headed-unset"], "headed.csv", "row 1", "data.header=true")
    one_line(res["headed-bare-unset"], "bare.csv", "data.header=false data.columns=label,title,description")
    assert res["predict"].returncode == 0, res["predict"]
    pred = pd.read_csv(d / "p.csv")
    assert len(pred) == 48 and set(pred["Label"]) <= {1, 2, 3, 4}
    one_line(res["not-a-file-key"], "'train.lr=1' cannot change a finished run", "data.header")


def test_a_headerless_run_still_reads_json_lines_by_their_keys(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"label": "world", "text": "label"}\n{"label": "sports", "text": "goal"}\n', "utf-8")
    ts, _ = load_texts(
        str(path), DataConfig(header=False, columns=["label", "text"]), "--eval", label_map=LABELS
    )
    assert ts.texts == ["label", "goal"]  # data.header concerns CSV/TSV only


def test_cli_labels_json_evaluate_and_predict_show_the_files_spelling(runs):
    """Finding 8 end to end: a run trained on labels 01..04 keeps them in labels.json, evaluate and predict."""
    d, run = runs["d"], runs["d"] / "padded-run"
    codes = ["01", "02", "03", "04"]
    assert json.loads((run / "labels.json").read_text())["labels"] == codes
    res = run_cli_forked(
        {
            "table": ["evaluate", run, "--data", runs["padded"]],
            "json": ["evaluate", run, "--data", runs["padded"], "--json"],
            "predict": ["predict", run, "--input", runs["padded"], "--output", d / "padded-pred.csv"],
        },
        d,
    )
    for name in res:
        assert res[name].returncode == 0, (name, res[name])
    table_rows = [line.split()[0] for line in res["table"].stdout.splitlines() if line[:2] in codes]
    assert table_rows[:4] == codes  # the per-class table names the classes as the file does
    assert list(json.loads(res["json"].stdout)["per_class"]) == codes
    with (d / "padded-pred.csv").open(encoding="utf-8") as fh:
        labels = {row["Label"] for row in csv.DictReader(fh)}
    assert labels and labels <= set(codes)
