"""Reading labelled text files in every supported format, label maps, errors, splits and lengths."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraclf.config import CleanConfig, DataConfig
from loraclf.data.tables import choose_max_length, drop_empty, load_texts, stratified_indices
from loraclf.utils.errors import UserError

CFG = DataConfig()
RAW = DataConfig(clean=CleanConfig(html=False, escapes=False, whitespace=False))

TEXTS = ["stocks rose, sharply", 'he said "no"', "tennis final", "troops moved"]
LABELS = ["business", "business", "sports", "world"]


def frame() -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS, "label": LABELS})


def load(path, cfg=CFG, **kw):
    return load_texts(str(path), cfg, "--train", **kw)


def decoded(ts, label_map):
    return [label_map[i] for i in ts.labels]


# --- formats -------------------------------------------------------------------------------------------------------


def _write_csv(df, p):
    df.to_csv(p, index=False)


def _write_tsv(df, p):
    df.to_csv(p, sep="\t", index=False)


def _write_jsonl(df, p):
    df.to_json(p, orient="records", lines=True, force_ascii=False)


def _write_json_array(df, p):
    p.write_text(json.dumps(df.to_dict(orient="records")), encoding="utf-8")


def _write_parquet(df, p):
    df.to_parquet(p, index=False)


def _write_pickle(df, p):
    df.to_pickle(p)


def _write_hf_folder(df, p):
    import datasets

    datasets.Dataset.from_pandas(df, preserve_index=False).save_to_disk(str(p))


@pytest.mark.parametrize(
    ("suffix", "writer"),
    [
        (".csv", _write_csv),
        (".tsv", _write_tsv),
        (".jsonl", _write_jsonl),
        (".json", _write_json_array),
        (".parquet", _write_parquet),
        (".pkl", _write_pickle),
        ("", _write_hf_folder),
    ],
    ids=["csv", "tsv", "jsonl", "json-array", "parquet", "pickle", "hf-folder"],
)
def test_every_format_reads_the_same_rows(tmp_path, suffix, writer):
    p = tmp_path / f"data{suffix}"
    writer(frame(), p)
    ts, label_map = load(p)
    assert ts.texts == TEXTS
    assert label_map == ["business", "sports", "world"]
    assert decoded(ts, label_map) == LABELS
    assert ts.ids == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("name", "writer"), [("d.csv", _write_csv), ("d.parquet", _write_parquet), ("d.jsonl", _write_jsonl)]
)
def test_int_labels_keep_numeric_order(tmp_path, name, writer):
    p = tmp_path / name
    writer(pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [10, 2, 1, 2]}), p)
    ts, label_map = load(p)
    assert label_map == [1, 2, 10]  # numeric, not lexicographic
    assert ts.labels.tolist() == [2, 1, 0, 1]


def test_string_labels_sorted_alphabetically(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"text": list("abcd"), "label": ["world", "business", "tech", "business"]}).to_csv(
        p, index=False
    )
    ts, label_map = load(p)
    assert label_map == ["business", "tech", "world"]
    assert ts.labels.tolist() == [2, 0, 1, 0]


def test_label_3_and_string_3_are_one_class(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [
        {"text": "a", "label": 3},
        {"text": "b", "label": "3"},
        {"text": "c", "label": 1},
        {"text": "d", "label": 3.0},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    ts, label_map = load(p)
    assert label_map == [1, 3]
    assert ts.labels.tolist() == [1, 1, 0, 1]


def test_eval_file_labels_map_through_the_training_label_map(tmp_path):
    train = tmp_path / "train.csv"
    pd.DataFrame({"text": list("abc"), "label": [1, 2, 3]}).to_csv(train, index=False)
    ev = tmp_path / "eval.jsonl"
    ev.write_text('{"text": "x", "label": "3"}\n{"text": "y", "label": 1}\n', encoding="utf-8")
    _, label_map = load(train)
    ts, same = load_texts(str(ev), CFG, "--eval", label_map=label_map)
    assert same == label_map
    assert ts.labels.tolist() == [2, 0]


def test_eval_label_unknown_to_training_names_row_and_value(tmp_path):
    ev = tmp_path / "eval.csv"
    pd.DataFrame({"text": ["x", "y"], "label": [1, 7]}).to_csv(ev, index=False)
    with pytest.raises(UserError) as exc:
        load_texts(str(ev), CFG, "--eval", label_map=[1, 2])
    msg = str(exc.value)
    assert "eval.csv" in msg and "row 2" in msg and "7" in msg


def test_title_and_description_joined_with_one_space(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame(
        {
            "label": [1, 2, 1],
            "title": ["Fears for pension", "Title only", ""],
            "description": ["Unions say", "", "Desc only"],
        }
    ).to_csv(p, index=False)
    ts, _ = load(p)
    assert ts.texts == ["Fears for pension Unions say", "Title only", "Desc only"]


def test_text_column_wins_over_title_description(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame(
        {"label": [1, 2], "text": ["t1", "t2"], "title": ["x", "y"], "description": ["z", "w"]}
    ).to_csv(p, index=False)
    assert load(p)[0].texts == ["t1", "t2"]


def test_ids_from_id_column(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"id": [17, 5, 9], "text": ["a", "b", "c"]}).to_csv(p, index=False)
    ts, _ = load_texts(str(p), CFG, "--input", labelled=False)
    # A CSV's IDs are text and stay exactly as written (the submission echoes them).
    assert ts.ids == ["17", "5", "9"]
    assert ts.labels is None


def test_utf8_bom_reads_fine(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufefftext,label\ncafé,1\nbye,2\n".encode())
    ts, label_map = load(p)
    assert ts.texts == ["café", "bye"]
    assert label_map == [1, 2]


def test_cleaning_applies_on_read(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"text": ["it#39;s  &lt;b&gt;ok&lt;/b&gt;", "b"], "label": [1, 2]}).to_csv(p, index=False)
    assert load(p)[0].texts[0] == "it's ok"


def test_multiline_and_quoted_fields(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"line one\nline two, with comma",1\n"say ""hi""",2\n', encoding="utf-8")
    ts, _ = load(p, RAW)
    assert ts.texts == ["line one\nline two, with comma", 'say "hi"']


# --- errors --------------------------------------------------------------------------------------------------------


def _err(path, cfg=CFG, **kw) -> str:
    with pytest.raises(UserError) as exc:
        load(path, cfg, **kw)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "--train" in msg
    return msg


def test_missing_file(tmp_path):
    msg = _err(tmp_path / "nope.csv")
    assert "nope.csv" in msg and "not found" in msg


@pytest.mark.parametrize("content", [b"", b"\n \n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "empty.csv"
    p.write_bytes(content)
    msg = _err(p)
    assert "empty.csv" in msg and "empty" in msg


def test_header_only(tmp_path):
    p = tmp_path / "header.csv"
    p.write_text("text,label\n", encoding="utf-8")
    msg = _err(p)
    assert "header.csv" in msg and "no data rows" in msg


def test_missing_text_column_lists_columns_and_suggests(tmp_path):
    p = tmp_path / "cols.csv"
    p.write_text("txt,label,source\nhello,1,a\nbye,2,b\n", encoding="utf-8")
    msg = _err(p)
    assert "cols.csv" in msg
    assert "'text'" in msg
    assert 'did you mean "txt"' in msg
    assert "txt, label, source" in msg


def test_missing_label_column_lists_columns(tmp_path):
    p = tmp_path / "cols.csv"
    p.write_text("text,lable\nhello,1\nbye,2\n", encoding="utf-8")
    msg = _err(p)
    assert "cols.csv" in msg and 'did you mean "lable"' in msg and "text, lable" in msg


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("gap.csv", "text,label\nhello,1\nbye,\nok,2\n"),
        ("gap.jsonl", '{"text": "hello", "label": 1}\n{"text": "bye"}\n{"text": "ok", "label": 2}\n'),
    ],
)
def test_missing_label_value_names_the_row(tmp_path, name, content):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    msg = _err(p)
    assert name in msg and "row 2" in msg and "'label'" in msg


def test_single_class(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("text,label\nhello,sports\nbye,sports\n", encoding="utf-8")
    msg = _err(p)
    assert "one.csv" in msg and "single class" in msg and "sports" in msg


def test_non_utf8_bytes_name_the_line(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("text,label\nhello,1\ncafé,2\n".encode("latin-1"))
    msg = _err(p)
    assert "latin1.csv" in msg and "UTF-8" in msg and "line 3" in msg


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('text,label\n"hello,1\nbye,2\n', "line 2"),
        ("text,label\nhello,1\nbye,2,3\n", "line 3"),
    ],
    ids=["unclosed-quote", "extra-field"],
)
def test_malformed_csv(tmp_path, content, where):
    p = tmp_path / "bad.csv"
    p.write_text(content, encoding="utf-8")
    msg = _err(p)
    assert "bad.csv" in msg and "malformed" in msg and where in msg


def test_invalid_jsonl_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n', encoding="utf-8")
    msg = _err(p)
    assert "bad.jsonl" in msg and "line 2" in msg


def test_unknown_format(tmp_path):
    p = tmp_path / "data.ods"
    p.write_bytes(b"PK\x03\x04")
    msg = _err(p)
    assert "data.ods" in msg and ".csv" in msg and ".xlsx" in msg


def test_a_damaged_workbook_is_one_line(tmp_path):
    p = tmp_path / "data.xlsx"
    p.write_bytes(b"PK\x03\x04")
    assert "data.xlsx' is not a readable Excel workbook" in _err(p)


def test_folder_that_is_not_a_dataset(tmp_path):
    msg = _err(tmp_path)
    assert str(tmp_path) in msg


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    assert "bad.parquet" in _err(p)


# --- empty texts, splits, lengths ----------------------------------------------------------------------------------


def test_drop_empty_counts_rows(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "", "  ", "&lt;b&gt;&lt;/b&gt;", "b"], "label": [1, 2, 1, 2, 2]}).to_csv(
        p, index=False
    )
    ts, _ = load(p)
    kept, dropped = drop_empty(ts, "--train")
    assert dropped == 3
    assert kept.texts == ["a", "b"]
    assert kept.labels.tolist() == [0, 1]
    assert kept.ids == [0, 4]


def test_drop_empty_all_empty_is_an_error(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"text": ["", " "], "label": [1, 2]}).to_csv(p, index=False)
    ts, _ = load(p)
    with pytest.raises(UserError, match="empty"):
        drop_empty(ts, "--train")


def test_drop_empty_without_empties_keeps_everything(tmp_path):
    p = tmp_path / "d.csv"
    frame().to_csv(p, index=False)
    ts, _ = load(p)
    kept, dropped = drop_empty(ts, "--train")
    assert dropped == 0 and kept.texts == ts.texts


@pytest.mark.parametrize(("size", "n_held"), [(0.1, 100), (0.25, 250), (40, 40), (333, 333)])
def test_stratified_indices_keep_class_shares(size, n_held):
    labels = np.array([0] * 500 + [1] * 300 + [2] * 150 + [3] * 50)
    keep, held = stratified_indices(labels, size, seed=0)
    assert len(held) == n_held
    assert len(keep) + len(held) == len(labels)
    assert not set(keep) & set(held)
    counts = np.bincount(labels[held], minlength=4)
    expected = np.bincount(labels) * n_held / len(labels)
    assert np.all(np.abs(counts - expected) <= 1), (counts, expected)


def test_stratified_indices_deterministic_by_seed():
    labels = np.random.default_rng(1).integers(0, 4, 400)
    a = stratified_indices(labels, 0.2, seed=7)
    b = stratified_indices(labels, 0.2, seed=7)
    c = stratified_indices(labels, 0.2, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("size", [0, 1000, 2000])
def test_stratified_indices_rejects_impossible_sizes(size):
    with pytest.raises(UserError, match="val_size"):
        stratified_indices(np.array([0, 1] * 500), size, seed=0)


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 600), min_size=1, max_size=300),
    quantile=st.floats(0.5, 1.0),
    limit=st.sampled_from([128, 256, 512]),
)
def test_choose_max_length_covers_quantile_multiple_of_8(lengths, quantile, limit):
    arr = np.array(lengths)
    m = choose_max_length(arr, quantile, limit)
    assert m % 8 == 0
    assert 8 <= m <= limit
    need = np.quantile(arr, quantile)
    if m < limit:
        assert m >= need
        assert m - 8 < max(8, need)  # the smallest such multiple of 8


# --- round trip ----------------------------------------------------------------------------------------------------

LABEL_VALUES = ["sports", "a,b", 'say "hi"', "ünï", 3, 10]
CSV_TEXT = st.text(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from([",", '"', "\n", "\r", "\t", " ", "\ufeff"])),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(CSV_TEXT, st.sampled_from(LABEL_VALUES)), min_size=2, max_size=10).filter(
        lambda rows: len({r[1] for r in rows}) >= 2
    )
)
def test_csv_round_trip_of_arbitrary_text(tmp_path, rows):
    """Whatever pandas writes (commas, quotes, newlines, any unicode), loraclf reads back unchanged."""
    p = tmp_path / "round.csv"
    df = pd.DataFrame({"text": [r[0] for r in rows], "label": [r[1] for r in rows]})
    # CRLF rows, as spreadsheets write them: with pandas' default "\n" a field holding a lone "\r" is left
    # unquoted, which no CSV reader can read back.
    df.to_csv(p, index=False, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    ts, label_map = load(p, RAW)
    assert ts.texts == [r[0] for r in rows]
    # A column of numbers reads back as numbers; in a column with any text a number is a name, kept as written.
    numbers = all(isinstance(r[1], int) for r in rows)
    assert decoded(ts, label_map) == [r[1] if numbers else str(r[1]) for r in rows]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.one_of(CSV_TEXT, st.sampled_from(["", " ", "   ", "\t"])), min_size=1, max_size=12))
def test_one_column_files_keep_every_row(tmp_path, texts):
    """A prediction file of texts only: every row comes back, blank and whitespace-only ones included, in order."""
    p = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(p, index=False, lineterminator="\r\n")
    ts, _ = load_texts(str(p), RAW, "--input", labelled=False)
    assert ts.texts == texts
    assert ts.ids == list(range(len(texts)))
