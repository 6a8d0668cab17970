"""Data augmentation: offline WordNet, synonym replacement, EDA, noise, LM generation, the files and errors of `augment`.

WordNet tests need the Debian packages wordnet-base and wordnet-sense-index (they fail in CI without them and skip
elsewhere); noise tests need nothing but the standard library. Generation runs on a 2-layer GPT-2 with a byte-level BPE tokenizer trained on the fixture texts: it
checks the mechanics (adaptation, saving, prompts, lengths, deduplication, filtering, the output file), not the
quality of the samples.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CLASS_WORDS, LABELS, run_cli, write_text_csv, write_title_desc_csv
from loraclf.data.readers import read_table
from loraclf.toolbox import augment, generate, noise, wordnet
from loraclf.toolbox.augment import (
    augment_rows,
    eda_augment,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_augment,
    synonym_replacement,
)
from loraclf.utils.errors import UserError

SENTENCE = "The quick brown fox jumps over the lazy dog near the big car park."


def run_augment_cli(*args) -> tuple[int, str, str]:
    """`loraclf augment ARGS` through the real entry point (its parsing and one-line error handling)."""
    res = run_cli("augment", *args)
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="module")
def wordnet_ready(tmp_path_factory):
    """The system WordNet, read through a private folder in a temporary cache (set for this module only)."""
    try:
        wordnet.system_dir()
    except UserError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORACLF_CACHE", str(tmp_path_factory.mktemp("cache")))
        wordnet.reader.cache_clear()
        wordnet.synonyms.cache_clear()
        wordnet.reader()
        yield
    wordnet.reader.cache_clear()
    wordnet.synonyms.cache_clear()


def stub_lookup(word: str) -> tuple[str, ...]:
    return ("automobile", "motor car") if word.lower() in ("car", "cars") else ("swift",)


# --- WordNet ------------------------------------------------------------------------------------------------------


def test_lexnames_has_the_45_lexicographer_files():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_wordnet_synonyms_of_car(wordnet_ready):
    syns = wordnet.synonyms("car")
    assert "automobile" in syns and "motorcar" in syns
    assert "car" not in syns
    assert "railway car" in syns  # multi-word lemmas come with spaces, not underscores
    assert wordnet.synonyms("Car") == syns
    assert "gondola" not in syns  # a sense SemCor never counted
    assert "give" not in wordnet.synonyms("hand") and "mitt" in wordnet.synonyms("hand")  # nouns dominate
    assert "Pu" not in wordnet.synonyms("plutonium")  # no symbols or names for common words
    assert wordnet.synonyms("qzxv") == () and wordnet.synonyms("café") == ()


def test_wordnet_private_folder_is_built_from_the_system_files(wordnet_ready):
    from loraclf.modeling.backbones import cache_dir

    folder = cache_dir() / "wordnet"
    assert (folder / "lexnames").read_text() == wordnet.lexnames_text()
    for name in wordnet.DATABASE_FILES:
        assert (folder / name).stat().st_size == (wordnet.system_dir() / name).stat().st_size


def test_missing_wordnet_is_a_user_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="apt-get install wordnet-base wordnet-sense-index"):
        wordnet.build_dir(tmp_path / "wn", empty)
    monkeypatch.setenv("WNSEARCHDIR", str(empty))
    with pytest.raises(UserError, match="WNSEARCHDIR"):
        wordnet.system_dir()
    for name in wordnet.DATABASE_FILES:
        (empty / name).write_text("")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="LORACLF_CACHE"):  # the cache is not a writable folder
        wordnet.build_dir(tmp_path / "file" / "wn", empty)
    assert (wordnet.build_dir(tmp_path / "wn", empty) / "lexnames").read_text() == wordnet.lexnames_text()


def test_augment_without_wordnet_fails_with_one_line(tmp_path, monkeypatch, tiny_csv):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("WNSEARCHDIR", str(empty))
    monkeypatch.setenv("LORACLF_CACHE", str(tmp_path / "cache"))
    wordnet.reader.cache_clear()
    wordnet.synonyms.cache_clear()
    try:
        code, _, err = run_augment_cli(
            "--method", "synonym", "--input", tiny_csv, "--output", tmp_path / "o.csv"
        )
    finally:
        wordnet.reader.cache_clear()
        wordnet.synonyms.cache_clear()
    assert code == 2 and "apt-get install wordnet-base" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()


# --- synonym replacement ------------------------------------------------------------------------------------------


def test_synonym_same_seed_same_output_other_seed_differs(wordnet_ready):
    texts = [SENTENCE, "Officials expect strong growth in car sales and higher prices this quarter."] * 3
    first, _ = augment_rows(texts, "synonym", copies=2, rate=0.3, seed=7)
    again, _ = augment_rows(texts, "synonym", copies=2, rate=0.3, seed=7)
    other, _ = augment_rows(texts, "synonym", copies=2, rate=0.3, seed=8)
    assert first == again
    assert first != other
    assert all(t != texts[p] for p, t in first)


def test_synonym_rows_do_not_depend_on_other_rows(wordnet_ready):
    a, _ = augment_rows([SENTENCE, "Big car makers report record profit."], "synonym", 1, 0.3, seed=3)
    b, _ = augment_rows(
        [SENTENCE, "Completely different second text about football."], "synonym", 1, 0.3, seed=3
    )
    assert a[0] == b[0]


def test_rate_zero_leaves_text_unchanged(wordnet_ready):
    rng = random.Random(0)
    assert synonym_augment(SENTENCE, 0.0, rng) == SENTENCE
    assert eda_augment(SENTENCE, 0.0, rng) == SENTENCE
    pairs, dropped = augment_rows([SENTENCE, "car"], "synonym", copies=3, rate=0.0, seed=0)
    assert pairs == [] and dropped == 6


def test_synonym_rate_sets_the_number_of_replacements():
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    text = " ".join(words)
    changed = lambda out: sum(a != b for a, b in zip(text.split(), out.split()))  # noqa: E731
    assert changed(synonym_augment(text, 0.3, random.Random(1), stub_lookup)) == 3
    assert changed(synonym_augment(text, 0.01, random.Random(1), stub_lookup)) == 1  # at least one word
    assert changed(synonym_augment(text, 1.0, random.Random(1), stub_lookup)) == 10


def test_synonym_keeps_capitals_and_spares_names_acronyms_and_stopwords():
    def aug(text):
        return synonym_augment(text, 1.0, random.Random(0), stub_lookup)

    assert aug("Cars are everywhere.").split()[0] in ("Automobile", "Motor")
    assert aug("He met Bush there") == "He swift Bush there"  # a capital mid-sentence marks a name
    assert aug("He met Bush. Cars go").split()[3] in (
        "Automobile",
        "Motor",
    )  # a capital after a full stop does not
    assert aug("NASA and IBM at it") == "NASA and IBM at it"  # acronyms, stopwords, short words
    assert aug("(cars),") in ("(automobile),", "(motor car),")  # punctuation around a word stays


def test_synonym_file_keeps_labels_and_provenance(wordnet_ready, tmp_path, tiny_csv):
    out = tmp_path / "aug.csv"
    code, stdout, err = run_augment_cli(
        "--method", "synonym", "--input", tiny_csv, "--output", out, "--copies", "2", "--rate", "0.5"
    )
    assert code == 0, err
    src = pd.read_csv(tiny_csv)
    df = pd.read_csv(out)
    assert list(df.columns[:4]) == ["text", "label", "source", "parent"]
    originals, added = df[df.source == "original"], df[df.source == "synonym"]
    assert originals.text.tolist() == src.text.tolist() and originals.parent.isna().all()
    assert len(added) > len(src)  # two copies of most rows; unchanged copies are dropped
    for _, row in added.iterrows():
        assert row.label == src.label[int(row.parent)]
        assert row.text != src.text[int(row.parent)]
    assert f"{len(src)} rows in, {len(added)} rows added, {len(df)} rows out" in stdout


# --- EDA -----------------------------------------------------------------------------------------------------------


def test_eda_swap_keeps_the_multiset_of_words():
    tokens = SENTENCE.split()
    for seed in range(20):
        out = random_swap(tokens, 3, random.Random(seed))
        assert sorted(out) == sorted(tokens)
    assert any(random_swap(tokens, 1, random.Random(s)) != tokens for s in range(5))
    assert random_swap(["one"], 3, random.Random(0)) == ["one"]


def test_eda_deletion_never_returns_empty_text():
    tokens = SENTENCE.split()
    for seed in range(50):
        out = random_deletion(tokens, 1.0, random.Random(seed))
        assert len(out) == 1 and out[0] in tokens
        out = random_deletion(tokens, 0.3, random.Random(seed))
        assert 1 <= len(out) <= len(tokens) and all(t in tokens for t in out)
    assert random_deletion(["alone"], 1.0, random.Random(0)) == ["alone"]


def test_eda_insertion_adds_synonyms_and_replacement_swaps_words():
    tokens = ["the", "fast", "car", "stopped"]
    out = random_insertion(tokens, 2, random.Random(0), stub_lookup)
    assert len(out) == len(tokens) + 2
    assert Counter(out) - Counter(tokens) <= Counter({"automobile": 2, "motor car": 2, "swift": 2})
    out = synonym_replacement(tokens, 1, random.Random(0), stub_lookup)
    assert len(out) == len(tokens) and sum(a != b for a, b in zip(out, tokens)) == 1
    assert random_insertion(["the", "a"], 2, random.Random(0), stub_lookup) == [
        "the",
        "a",
    ]  # nothing eligible


def test_eda_operations_each_change_the_text(wordnet_ready):
    for op in augment.EDA_OPERATIONS:
        outs = {eda_augment(SENTENCE, 0.2, random.Random(s), operation=op) for s in range(5)}
        assert outs - {SENTENCE}, op


def test_eda_file_is_deterministic(wordnet_ready, tmp_path, tiny_csv):
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        code, _, err = run_augment_cli(
            "--method",
            "eda",
            "--input",
            tiny_csv,
            "--output",
            tmp_path / name,
            "--copies",
            "3",
            "--seed",
            "5",
        )
        assert code == 0, err
        outs.append((tmp_path / name).read_text())
    assert outs[0] == outs[1]
    df = read_table(str(tmp_path / "a.jsonl"))
    assert set(df.source) == {"original", "eda"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(min_size=1, max_size=80),
        st.lists(
            st.sampled_from(
                ["car", "Cars", "the", "U.S.", "said,", "(Reuters)", "big!", "éclair", "\t", "-", "IBM"]
            ),
            min_size=1,
            max_size=12,
        ).map(" ".join),
    ),
    seed=st.integers(0, 2**16),
    rate=st.floats(0, 1),
)
def test_synonym_and_eda_never_fail_and_never_empty(wordnet_ready, text, seed, rate):
    for fn in (synonym_augment, eda_augment):
        out = fn(text, rate, random.Random(seed))
        assert isinstance(out, str)
        if text.strip():
            assert out.strip()
        else:
            assert out == text


# --- noise imitating machine-written news ---------------------------------------------------------------------------

NEWS = (
    "Oil Prices Set a New Record SINGAPORE (Reuters) - Oil prices rose to $50.25 on Monday, said Kenneth Bigley "
    "of Medtronic. Kenneth Bigley expects \"more\" gains in 2004 - and IBM's traders agree. It's a record."
)
COMMON = noise.common_words(
    ["oil prices set a new record", "prices rose and traders agree", "it is a record"]
)


def test_noise_same_seed_same_output_other_seed_differs():
    texts = [NEWS, SENTENCE, "Shares of Intel fell 3% on Tuesday after the chip maker cut its forecast."] * 2
    first, _ = augment_rows(texts, "noise", copies=2, rate=0.6, seed=7)
    again, _ = augment_rows(texts, "noise", copies=2, rate=0.6, seed=7)
    other, _ = augment_rows(texts, "noise", copies=2, rate=0.6, seed=8)
    assert first == again and first != other
    assert all(t != texts[p] for p, t in first)


def test_noise_strength_zero_is_identity():
    for text in (NEWS, SENTENCE, "  two\tspaces  here ", "", "x"):
        assert noise.noise_augment(text, 0.0, random.Random(1), COMMON) == text
    rng = random.Random(0)
    for fn in (noise.drop_words, noise.swap_adjacent, noise.repeat_words, noise.typos, noise.substitute_dates,
               noise.strip_sources, noise.run_on, noise.curly_typography, noise.truncate):  # fmt: skip
        assert fn(NEWS, 0.0, rng) == NEWS, fn.__name__
    assert noise.substitute_entities(NEWS, 0.0, rng, COMMON) == NEWS
    pairs, dropped = augment_rows([NEWS, SENTENCE], "noise", copies=3, rate=0.0, seed=0)
    assert pairs == [] and dropped == 6


def test_noise_strength_scales_how_much_changes():
    words = NEWS.split()

    def changed(strength):  # mean share of the words not kept, over 40 seeds
        outs = [noise.noise_augment(NEWS, strength, random.Random(s), COMMON).split() for s in range(40)]
        return np.mean([1 - sum((Counter(o) & Counter(words)).values()) / len(words) for o in outs])

    assert 0 < changed(0.1) < changed(0.4) < changed(1.0)


def test_noise_drop_swap_repeat_do_what_they_say():
    tokens = SENTENCE.split()
    for seed in range(20):
        kept = noise.drop_words(SENTENCE, 0.4, random.Random(seed)).split()
        it = iter(tokens)
        assert 1 <= len(kept) <= len(tokens) and all(t in it for t in kept)  # an ordered subsequence
        assert len(noise.drop_words(SENTENCE, 1.0, random.Random(seed)).split()) == 1
        swapped = noise.swap_adjacent(SENTENCE, 0.5, random.Random(seed)).split()
        assert sorted(swapped) == sorted(tokens)
        assert all(abs(swapped.index(t) - i) <= 1 for i, t in enumerate(tokens) if tokens.count(t) == 1)
        doubled = noise.repeat_words(SENTENCE, 0.3, random.Random(seed)).split()
        assert [t for i, t in enumerate(doubled) if i == 0 or doubled[i - 1] != t] == tokens
    assert noise.swap_adjacent("a b c d", 1.0, random.Random(0)) == "b a d c"
    assert noise.repeat_words("new deal", 1.0, random.Random(0)) == "new new deal deal"


def test_noise_entities_are_invented_consistently_and_words_are_kept():
    out = noise.substitute_entities(NEWS, 1.0, random.Random(3), COMMON)
    assert "Bigley" not in out and "Medtronic" not in out and "IBM" not in out
    first = out.split("said ")[1].split(" of ")[0]
    assert (
        out.count(first) == 2 and first.count(" ") == 1
    )  # both "Kenneth Bigley"s → one invented two-word name
    assert out.startswith("Oil Prices Set a New Record")  # capitalised common words are not names
    assert (
        "SINGAPORE" in out and "(Reuters)" in out
    )  # upper-case words over five letters and agency names stay
    acronym = re.search(r"and (\w+)'s traders", out).group(1)
    assert acronym.isupper() and len(acronym) == 3 and acronym != "IBM"
    name = noise.invented_name(random.Random(0))
    assert name[0].isupper() and name[1:].islower() and name.lower() not in COMMON


def test_noise_dates_are_anachronistic_and_numbers_keep_their_format():
    for seed in range(30):
        out = noise.substitute_dates(NEWS, 1.0, random.Random(seed))
        year = int(re.search(r"gains in (\d{4})", out).group(1))
        assert 2008 <= year <= 2099
        assert re.search(r"rose to \$[1-9]\d\.\d\d on ", out), out  # new digits, the same format
        when = out.split("on ", 1)[1].split(", said")[0]
        assert re.fullmatch(r"Q[1-4] \d{4}|[A-Z][a-z]+ \d{1,2}, \d{4}|[A-Z][a-z]+ \d{4}", when), when
    assert noise.substitute_dates("no digits here", 1.0, random.Random(0)) == "no digits here"
    assert re.fullmatch(r"won [1-9]-[1-9]", noise.substitute_dates("won 8-3", 1.0, random.Random(0)))


def test_noise_sources_run_on_typography_truncate_and_typos():
    stripped = noise.strip_sources(NEWS, 1.0, random.Random(0))
    assert stripped.startswith("Oil Prices Set a New Record Oil prices rose")
    assert noise.strip_sources("Bush Visits Ohio (AP) AP - President Bush", 1.0, random.Random(0)) == (
        "Bush Visits Ohio President Bush"
    )
    text = "It rose. The firm said so. Mr. Smith left. Prices fell."
    joined = [noise.run_on(text, 1.0, random.Random(seed)) for seed in range(20)]
    assert all(". " not in j.replace("Mr. ", "") and "Mr. Smith" in j and j.endswith("fell.") for j in joined)
    assert any("the firm" in j for j in joined)  # a common word loses its capital after a connector …
    assert all("Prices fell" in j or "prices fell" not in j for j in joined)  # … other capitals are kept
    curly = noise.curly_typography('He said "yes" - it\'s done -- now.', 1.0, random.Random(0))
    assert curly == "He said “yes” – it’s done – now."
    words = NEWS.split()
    for seed in range(20):
        cut = noise.truncate(NEWS, 1.0, random.Random(seed)).split()
        assert 0.4 * len(words) - 1 <= len(cut) <= 0.95 * len(words)
        assert cut[:-1] == words[: len(cut) - 1] and not cut[-1].endswith((".", ",", "!", "?"))
    assert noise.truncate("too short to cut here", 1.0, random.Random(0)) == "too short to cut here"
    for seed in range(10):
        out = noise.typos("make peace in big banks", 1.0, random.Random(seed)).split()
        assert [w for w in out if w in ("in", "big")] == ["in", "big"]  # words under four letters stay
        assert not {"make", "peace", "banks"} & set(out)  # every longer word is misspelt
    spelt = {noise.typos("banker", 1.0, random.Random(seed)) for seed in range(200)}
    assert "b a nker" in spelt  # spaced out
    assert any(len(w) == 5 for w in spelt)  # a letter dropped
    assert any(len(w) == 6 and sorted(w) == sorted("banker") and w != "banker" for w in spelt)  # two swapped
    assert any(len(w) == 7 and " " not in w for w in spelt)  # a letter doubled or a vowel inserted


def test_noise_rejects_bad_strength_and_operations():
    with pytest.raises(ValueError, match="strength"):
        noise.noise_augment(NEWS, 1.5, random.Random(0))
    with pytest.raises(ValueError, match="unknown noise operation 'shuffle'"):
        noise.noise_augment(NEWS, 0.5, random.Random(0), operations=["shuffle"])
    assert noise.noise_augment(NEWS, 1.0, random.Random(0), COMMON, ["typography"]) == (
        noise.curly_typography(NEWS, noise.FULL_RATES["typography"], random.Random(0))
    )


NOISE_TOKENS = [
    "Bush",
    "said,",
    "(Reuters)",
    "AP -",
    "2004",
    "$1.5",
    "Monday.",
    "IBM's",
    '"quoted"',
    "--",
    "The",
    "é",
    "x.",
]


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(
        st.text(min_size=0, max_size=80),
        st.lists(
            st.sampled_from(NOISE_TOKENS),
            min_size=1,
            max_size=14,
        ).map(" ".join),
    ),
    seed=st.integers(0, 2**16),
    strength=st.floats(0, 1),
)
def test_noise_never_fails_and_never_empties_a_text(text, seed, strength):
    out = noise.noise_augment(text, strength, random.Random(seed))
    assert isinstance(out, str)
    assert out.strip() if text.strip() else out == text


def test_noise_file_keeps_labels_and_is_deterministic(tmp_path, tiny_csv):
    outs = []
    for name in ("a.csv", "b.csv"):
        code, stdout, err = run_augment_cli(
            "--method", "noise", "--input", tiny_csv, "--output", tmp_path / name, "--copies", "2",
            "--strength", "0.7", "--seed", "3", "--no-keep-original",
        )  # fmt: skip
        assert code == 0, err
        outs.append((tmp_path / name).read_text())
    assert outs[0] == outs[1]
    src, df = pd.read_csv(tiny_csv), pd.read_csv(tmp_path / "a.csv")
    assert set(df.source) == {"noise"} and len(df) > len(src)
    assert (df.label.to_numpy() == src.label.to_numpy()[df.parent.astype(int)]).all()
    assert (df.text.to_numpy() != src.text.to_numpy()[df.parent.astype(int)]).all()
    code, stdout, err = run_augment_cli(
        "--method", "noise", "--input", tiny_csv, "--output", tmp_path / "z.csv", "--strength", "0"
    )
    assert code == 0 and f"{len(src)} rows in, 0 rows added" in stdout, err


def test_real_ag_news_noise_200_rows(data_dir, tmp_path):
    rows = pd.read_csv(data_dir / "ag_news" / "train.csv", nrows=200)
    src = tmp_path / "ag200.csv"
    rows.to_csv(src, index=False)
    out = tmp_path / "ag200-noise.csv"
    code, _, err = run_augment_cli("--method", "noise", "--input", src, "--output", out, "--no-keep-original")
    assert code == 0, err
    added = pd.read_csv(out)
    assert len(added) >= 190  # at the default strength nearly every text changes
    assert (added.label.to_numpy() == rows.label.to_numpy()[added.parent.astype(int)]).all()
    joined = " ".join(added.text)
    assert "#39;" not in joined and "quot;" not in joined
    tags = lambda texts: sum("(Reuters)" in t or "(AP)" in t for t in texts)  # noqa: E731
    assert tags(added.text) < 0.8 * tags(rows.text)  # agency tags are stripped at the default strength


# --- files and errors ----------------------------------------------------------------------------------------------


def test_title_description_input_and_parquet_output(wordnet_ready, tmp_path):
    src = write_title_desc_csv(tmp_path / "td.csv", 12)
    out = tmp_path / "aug.parquet"
    code, _, err = run_augment_cli("--method", "eda", "--input", src, "--output", out, "--no-keep-original")
    assert code == 0, err
    df = pd.read_parquet(out)
    assert "text" in df.columns and "title" not in df.columns
    assert set(df.source) == {"eda"} and df.parent.notna().all()


def test_chained_augmentation_keeps_provenance(wordnet_ready, tmp_path, tiny_csv):
    first, second = tmp_path / "one.csv", tmp_path / "two.csv"
    assert run_augment_cli("--method", "synonym", "--input", tiny_csv, "--output", first)[0] == 0
    assert run_augment_cli("--method", "eda", "--input", first, "--output", second)[0] == 0
    a, b = pd.read_csv(first), pd.read_csv(second)
    assert b.source[: len(a)].tolist() == a.source.tolist()
    assert b.parent[: len(a)].equals(a.parent)
    eda = b[b.source == "eda"]
    assert (b.text[eda.parent.astype(int)].str.len() > 0).all()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--method", "synonim"],
            "--method: 'synonim' is not one of synonym, eda, noise, generate (did you mean",
        ),
        (["--method", "eda", "--rate", "1.5"], "--rate must be a fraction in [0, 1]"),
        (["--method", "eda", "--copies", "0"], "--copies must be at least 1"),
        (["--method", "eda", "--input", "missing.csv"], "--input: file"),
        (["--method", "eda", "--label-column", "y"], "no label column 'y'"),
        (["--method", "eda", "--text-column", "body"], "no column 'body'"),
        (["--method", "eda", "--output", "nodir/out.csv"], "--output: folder"),
        (["--method", "eda", "--output", "out.xlsx"], "--output: 'out.xlsx' has an unknown format"),
        (["--method", "eda", "--output", "train.csv"], "is the --input file"),
        (["--method", "noise", "--strength", "1.5"], "--strength must be in [0, 1]"),
        (["--method", "noise", "--strength", "-0.1"], "--strength must be in [0, 1]"),
        (["--method", "eda", "--strength", "0.4"], "--strength applies to --method noise only"),
        (["--method", "noise", "--copies", "0"], "--copies must be at least 1"),
        (["--method", "noise", "--output", "train.csv"], "is the --input file"),
        (["--method", "noise", "--text-column", "body"], "no column 'body'"),
        (["--method", "generate", "--per-class", "0"], "--per-class must be at least 1"),
        (["--method", "generate", "--min-words", "9", "--max-words", "3"], "--min-words/--max-words"),
        (["--method", "generate", "--prompts", "nope.yaml"], "--prompts: file"),
        (["--method", "generate", "--target", "nope.csv"], "--target: file"),
        (["--method", "generate", "--top-p", "0"], "--top-p must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    write_text_csv(tmp_path / "train.csv", 8)
    defaults = {"--input": "train.csv", "--output": "out.csv"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    code, _, err = run_augment_cli(*args)
    assert code == 2
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1
    assert not Path("out.csv").exists()


def test_prompts_without_a_class_of_the_data_is_a_user_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({lab: [f"{lab} news:"] for lab in LABELS if lab != "world"}))
    with pytest.raises(UserError, match=r"--prompts: .* no prompts for label 'world'"):
        generate.load_prompts(path, LABELS)
    path.write_text("business: []\n")
    with pytest.raises(UserError, match="non-empty list"):
        generate.load_prompts(path, ["business"])
    path.write_text("business: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        generate.load_prompts(path, ["business"])


def test_shipped_ag_news_prompts():
    prompts = generate.load_prompts(generate.DEFAULT_PROMPTS, [1, 2, 3, 4])
    assert list(prompts) == [1, 2, 3, 4]
    for plist in prompts.values():
        assert len(plist) >= 15 and len(set(plist)) == len(plist)
    assert generate.load_prompts(generate.DEFAULT_PROMPTS, ["3"]) == {
        "3": prompts[3]
    }  # "3" and 3 are one label


def test_real_ag_news_synonym_200_rows(wordnet_ready, data_dir, tmp_path):
    rows = pd.read_csv(data_dir / "ag_news" / "train.csv", nrows=200)
    src = tmp_path / "ag200.csv"
    rows.to_csv(src, index=False)
    out = tmp_path / "ag200-syn.csv"
    code, _, err = run_augment_cli("--method", "synonym", "--input", src, "--output", out)
    assert code == 0, err
    df = pd.read_csv(out)
    added = df[df.source == "synonym"]
    assert len(added) >= 190  # nearly every news text has a replaceable word
    assert (added.label.to_numpy() == rows.label.to_numpy()[added.parent.astype(int)]).all()
    joined = " ".join(added.text)
    assert "quot;" not in joined and "#39;" not in joined  # cleaned first: scraper remnants are not words


# --- generation ----------------------------------------------------------------------------------------------------


def test_length_model_is_skewed_and_clipped():
    rng = np.random.default_rng(0)
    counts = np.rint(30 + rng.gamma(2.0, 6.0, size=2000))  # right-skewed like news lengths
    model = generate.fit_lengths(counts, 8, 60)
    assert model.a > 0
    draws = model.draw(5000, np.random.default_rng(1))
    assert draws.min() >= 8 and draws.max() <= 60
    assert abs(np.median(draws) - np.median(counts)) < 3
    flat = generate.fit_lengths([20, 20, 20], 8, 128)
    assert (flat.draw(10, np.random.default_rng(0)) == 20).all()


def test_tidy_and_duplicates():
    assert generate.tidy("  A first full sentence here.  And half of a") == "A first full sentence here."
    assert (
        generate.tidy("short. and a much longer unfinished tail")
        == "short. and a much longer unfinished tail"
    )
    assert generate.tidy("bad \ufffd bytes\x01 here") == "bad bytes here"
    samples = [
        {"text": t, "label": 1, "prompt": "p"} for t in ("Hello, World!", "hello world", "tiny", "Known text")
    ]
    kept, short, dups = generate.drop_duplicates(samples, ["known TEXT."], min_words=2)
    assert [s["text"] for s in kept] == ["Hello, World!"] and short == 1 and dups == 2


def test_lora_targets_by_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    assert generate.lora_targets(
        GPT2LMHeadModel(
            GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, bos_token_id=0, eos_token_id=0)
        )
    ) == ["c_attn"]

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.v_proj = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    class Llama(torch.nn.Module):
        config = type("C", (), {"model_type": "llama"})()

        def __init__(self):
            super().__init__()
            self.attn = Attn()

    assert generate.lora_targets(Llama()) == ["q_proj", "v_proj"]
    Llama.config.model_type = "other"
    model = Llama()
    del model.attn.q_proj
    assert generate.lora_targets(model) == "all-linear"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 LM and a byte-level BPE tokenizer trained on the fixture texts, saved like a hub folder."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-gpt2-lm")
    texts = pd.read_csv(write_text_csv(d / "texts.csv", 200, seed=3)).text.tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    eos = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=eos, eos_token=eos, pad_token=eos)
    config = GPT2Config(
        vocab_size=len(tok),
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def write_prompts(path: Path) -> Path:
    path.write_text(yaml.safe_dump({lab: [f"{w} {lab}:" for w in CLASS_WORDS[lab][:3]] for lab in LABELS}))
    return path


GEN_ARGS = ("--method", "generate", "--per-class", "4", "--max-words", "24", "--min-words", "6", "--quiet")


def test_generate_end_to_end_on_a_tiny_gpt2(tiny_lm, tmp_path, tiny_csv):
    prompts = write_prompts(tmp_path / "prompts.yaml")
    out, lm_out, target = tmp_path / "gen.csv", tmp_path / "adapted", tmp_path / "target.csv"
    pd.read_csv(write_text_csv(target, 30, seed=9))[["text"]].to_csv(target, index=False)  # unlabelled
    code, stdout, err = run_augment_cli(
        *GEN_ARGS, "--lm", tiny_lm, "--input", tiny_csv, "--output", out, "--prompts", prompts,
        "--target", target, "--lm-epochs", "1", "--lm-out", lm_out,
    )  # fmt: skip
    assert code == 0, err
    df = pd.read_csv(out)
    assert {"text", "label", "source", "parent", "prompt"} <= set(df.columns)
    gen = df[df.source == "generate"]
    assert len(gen) >= 1
    assert (df.source == "original").sum() == 80
    assert gen.label.value_counts().max() <= 4
    allowed = yaml.safe_load(prompts.read_text())
    assert set(gen.label) <= set(allowed)
    assert all(p in allowed[lab] for lab, p in zip(gen.label, gen.prompt))
    keys = [generate.normalise(t) for t in df.text]
    assert len(set(keys)) == len(keys)
    assert gen.text.str.split().str.len().min() >= 3
    assert gen.parent.isna().all()
    assert "16 generated" in stdout
    # The adapted LM is saved as a plain model folder that --lm accepts.
    assert (lm_out / "config.json").is_file() and (lm_out / "tokenizer.json").is_file()
    model, _ = generate.load_lm(str(lm_out))
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_generate_is_deterministic_and_filters_by_confidence(tiny_lm, tmp_path, tiny_csv, monkeypatch):
    prompts = write_prompts(tmp_path / "prompts.yaml")
    common = (*GEN_ARGS, "--lm", tiny_lm, "--input", tiny_csv, "--prompts", prompts, "--lm-epochs", "0")
    outs = []
    for name in ("a.csv", "b.csv"):
        code, _, err = run_augment_cli(*common, "--output", tmp_path / name, "--no-keep-original")
        assert code == 0, err
        outs.append((tmp_path / name).read_text())
    assert outs[0] == outs[1]

    class StubRun:
        labels = LABELS

        def predict_proba(self, texts):
            rng = np.random.default_rng(len(texts))
            return rng.dirichlet(np.ones(len(self.labels)) * 0.3, size=len(texts))

    from loraclf.inference import run as runs

    monkeypatch.setattr(runs, "load", lambda path, device: StubRun())
    code, stdout, err = run_augment_cli(
        *common,
        "--output",
        tmp_path / "f.csv",
        "--no-keep-original",
        "--filter-run",
        "RUN",
        "--min-confidence",
        "0.5",
    )
    assert code == 0, err
    filtered = pd.read_csv(tmp_path / "f.csv")
    unfiltered = pd.read_csv(tmp_path / "a.csv")
    assert (filtered.confidence >= 0.5).all()
    assert set(filtered.text) <= set(unfiltered.text)
    assert f"{len(unfiltered) - len(filtered)} below confidence 0.5" in stdout

    StubRun.labels = ["business", "sports"]
    code, _, err = run_augment_cli(*common, "--output", tmp_path / "g.csv", "--filter-run", "RUN")
    assert code == 2 and "--filter-run" in err and "'tech'" in err


def test_generate_lm_errors(tmp_path, tiny_csv):
    (tmp_path / "empty").mkdir()
    code, _, err = run_augment_cli(
        "--method", "generate", "--lm", tmp_path / "empty", "--input", tiny_csv, "--output", tmp_path / "o.csv",
        "--prompts", write_prompts(tmp_path / "p.yaml"),
    )  # fmt: skip
    assert code == 2 and "--lm: folder" in err and "config.json" in err
