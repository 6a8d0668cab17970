"""The restricted unpickler: tables load, code hidden in a pickle never runs."""

from __future__ import annotations

import os
import pickle

import pandas as pd
import pytest

from loraclf.config import DataConfig
from loraclf.data.safe_pickle import load_pickle_table
from loraclf.data.tables import load_texts
from loraclf.utils.errors import UserError


def _dump(obj, path, protocol=pickle.DEFAULT_PROTOCOL):
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def test_pickled_dataframe_loads(tmp_path):
    df = pd.DataFrame({"text": ["stocks rose", "team won"], "label": ["business", "sports"]})
    p = _dump(df, tmp_path / "df.pkl")
    out = load_pickle_table(p, "--data")
    assert out["text"].tolist() == df["text"].tolist()
    assert out["label"].tolist() == df["label"].tolist()


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_dataframe_with_int_labels_every_protocol(tmp_path, protocol):
    df = pd.DataFrame({"text": ["a", "b", "c"], "label": [1, 2, 1]})
    p = _dump(df, tmp_path / "df.pkl", protocol)
    out = load_pickle_table(p, "--data")
    assert out["label"].tolist() == [1, 2, 1]


def test_dataframe_to_pickle_loads_through_load_texts(tmp_path):
    """``DataFrame.to_pickle`` is how most people pickle a table (it uses the highest protocol)."""
    p = tmp_path / "train.pkl"
    pd.DataFrame({"text": ["a", "b", "c"], "label": [3, 1, 3], "id": [7, 8, 9]}).to_pickle(p)
    ts, label_map = load_texts(str(p), DataConfig(), "--train")
    assert ts.texts == ["a", "b", "c"]
    assert label_map == [1, 3]
    assert ts.ids == [7, 8, 9]


def test_pickled_hf_dataset_loads(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["x", "y", "z"], "label": [0, 1, 0]})
    p = _dump(ds, tmp_path / "ds.pkl")
    out = load_pickle_table(p, "--data")
    assert out["text"].tolist() == ["x", "y", "z"]
    assert out["label"].tolist() == [0, 1, 0]


def test_pickled_unlabelled_hf_dataset_predicts_input(tmp_path):
    import datasets

    p = _dump(datasets.Dataset.from_dict({"text": ["x", "y"]}), tmp_path / "test_unlabelled.pkl")
    ts, _ = load_texts(str(p), DataConfig(), "--input", labelled=False)
    assert ts.texts == ["x", "y"]
    assert ts.ids == [0, 1]


def test_list_of_strings_is_a_text_column(tmp_path):
    p = _dump(["first text", "second text"], tmp_path / "texts.pkl")
    out = load_pickle_table(p, "--input")
    assert list(out.columns) == ["text"]
    assert out["text"].tolist() == ["first text", "second text"]


def test_dict_of_columns_and_list_of_records(tmp_path):
    a = load_pickle_table(_dump({"text": ["a", "b"], "label": [1, 2]}, tmp_path / "a.pkl"), "--data")
    b = load_pickle_table(
        _dump([{"text": "a", "label": 1}, {"text": "b", "label": 2}], tmp_path / "b.pkl"), "--data"
    )
    assert a.to_dict(orient="list") == b.to_dict(orient="list") == {"text": ["a", "b"], "label": [1, 2]}


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
@pytest.mark.parametrize("wrap", ["bare", "inside-list", "inside-dataframe-dict"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, wrap):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    obj = {"bare": evil, "inside-list": ["ok", evil], "inside-dataframe-dict": {"text": ["a", evil]}}[wrap]
    p = _dump(obj, tmp_path / "evil.pkl")
    # test_payload_is_live shows the same payload does run under plain pickle.load.
    with pytest.raises(UserError) as exc:
        load_texts(str(p), DataConfig(), "--input", labelled=False)
    assert not marker.exists()
    msg = str(exc.value)
    assert "evil.pkl" in msg and "\n" not in msg


def test_payload_is_live(tmp_path):
    """Control for the test above: the same pickle does run code under plain ``pickle.load``."""
    marker = tmp_path / "pwned"
    p = _dump(_EvalPayload(marker), tmp_path / "evil.pkl")
    with p.open("rb") as fh:
        pickle.load(fh)
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x04\x95"])
def test_garbage_is_a_user_error(tmp_path, content):
    p = tmp_path / "bad.pkl"
    p.write_bytes(content)
    with pytest.raises(UserError, match=r"bad\.pkl"):
        load_pickle_table(p, "--data")


def test_non_table_object_is_a_user_error(tmp_path):
    p = _dump(42, tmp_path / "num.pkl")
    with pytest.raises(UserError, match="not a table"):
        load_pickle_table(p, "--data")


# --- Arrow arrays are rebuilt from checked values, never by pyarrow's or datasets' reconstructors (issue 28) -------


def test_a_pickled_dataset_runs_no_pyarrow_or_datasets_reconstructor(tmp_path, monkeypatch):
    """The Kaggle-style pickle loads without ``pyarrow.lib._restore_array`` or a ``datasets`` ``__setstate__``:
    neither was written for hostile input (code review, section 19)."""
    import datasets
    import pyarrow.lib

    p = _dump(datasets.Dataset.from_dict({"text": ["x", "y", None], "label": [0, 1, 0]}), tmp_path / "t.pkl")
    called = []
    real = pyarrow.lib._restore_array
    monkeypatch.setattr(pyarrow.lib, "_restore_array", lambda *a: called.append("_restore_array") or real(*a))
    for cls in (datasets.Dataset, datasets.table.InMemoryTable):
        monkeypatch.setattr(
            cls, "__setstate__", lambda self, state, n=cls.__name__: called.append(n), raising=False
        )
    out = load_pickle_table(p, "--input")
    assert called == []
    assert out["text"].tolist()[:2] == ["x", "y"] and out["text"].isna().tolist() == [False, False, True]
    assert out["label"].tolist() == [0, 1, 0]


def test_every_column_kind_of_a_dataset_reads_as_datasets_reads_it(tmp_path):
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("large_string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "score": datasets.Value("float32"),
            "flag": datasets.Value("bool"),
            "ids": datasets.Sequence(datasets.Value("int32")),
            "raw": datasets.Value("binary"),
            "nothing": datasets.Value("null"),
        }
    )
    data = {
        "text": ["a", None, "ünï"], "label": [1, 0, 1], "score": [0.5, None, 2.0], "flag": [True, False, None],
        "ids": [[1, 2], [], None], "raw": [b"\x00\x01", b"", None], "nothing": [None, None, None],
    }  # fmt: skip
    ds = datasets.Dataset.from_dict(data, features=features).select([2, 0, 1])  # a row selection (_indices)
    out = load_pickle_table(_dump(ds, tmp_path / "all.pkl"), "--data")
    assert list(out.columns) == list(data)

    def plain(values):
        return [None if x is None or x is pd.NA or (isinstance(x, float) and x != x) else
                list(x) if hasattr(x, "tolist") and not isinstance(x, (str, bytes)) else x for x in values]  # fmt: skip

    expected = ds.to_pandas()
    for column in data:
        assert plain(out[column].tolist()) == plain(expected[column].tolist()), column
    assert plain(out["ids"].tolist()) == [None, [1, 2], []]  # rows 2, 0, 1


def _crafted_dataset(tmp_path, mutate):
    """A pickled Dataset whose string array's data tuple (buffers, lengths) ``mutate`` changed: a crafted file."""
    import io

    import datasets
    import pyarrow as pa

    class Crafting(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, pa.Array) and pa.types.is_string(obj.type):
                restore, (data,) = obj.__reduce__()
                return restore, (mutate(data),)
            return NotImplemented

    buf = io.BytesIO()
    Crafting(buf).dump(datasets.Dataset.from_dict({"text": ["abc", "de"], "label": [0, 1]}))
    p = tmp_path / "crafted.pkl"
    p.write_bytes(buf.getvalue())
    return p


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: (
            d[0],
            d[1],
            d[2],
            d[3],
            [d[4][0], d[4][1], d[4][2][:2]],
            d[5],
            d[6],
        ),  # data shorter than offsets
        lambda d: (d[0], d[1] + 1000, d[2], d[3], d[4], d[5], d[6]),  # length beyond the buffers
        lambda d: (d[0], d[1], d[2], 10**6, d[4], d[5], d[6]),  # offset beyond the buffers
    ],
    ids=["offsets-past-data", "length-past-buffers", "offset-past-buffers"],
)
def test_a_crafted_arrow_buffer_is_refused_in_one_line(tmp_path, mutate):
    p = _crafted_dataset(tmp_path, mutate)
    with pytest.raises(UserError) as exc:
        load_pickle_table(p, "--input")
    msg = str(exc.value)
    assert "crafted.pkl" in msg and "Arrow" in msg and "\n" not in msg


def test_a_pandas_frame_of_arrow_strings_loads(tmp_path):
    df = pd.DataFrame({"text": pd.array(["a", None, "c"], dtype="string[pyarrow]"), "label": [1, 2, 1]})
    out = load_pickle_table(_dump(df, tmp_path / "df.pkl"), "--data")
    assert out["text"].tolist()[::2] == ["a", "c"] and pd.isna(out["text"][1])
