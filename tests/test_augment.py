"""Data augmentation: offline WordNet, synonym replacement, EDA, LM generation, the files and errors of `augment`.

WordNet tests need the Debian packages wordnet-base and wordnet-sense-index (they fail in CI without them and skip
elsewhere). Generation runs on a 2-layer GPT-2 with a byte-level BPE tokenizer trained on the fixture texts: it
checks the mechanics (adaptation, saving, prompts, lengths, deduplication, filtering, the output file), not the
quality of the samples.
"""

from __future__ import annotations

import os
import random
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
from loraclf.toolbox import augment, generate, wordnet
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
        (["--method", "synonim"], "--method: 'synonim' is not one of synonym, eda, generate (did you mean"),
        (["--method", "eda", "--rate", "1.5"], "--rate must be a fraction in [0, 1]"),
        (["--method", "eda", "--copies", "0"], "--copies must be at least 1"),
        (["--method", "eda", "--input", "missing.csv"], "--input: file"),
        (["--method", "eda", "--label-column", "y"], "no label column 'y'"),
        (["--method", "eda", "--text-column", "body"], "no column 'body'"),
        (["--method", "eda", "--output", "nodir/out.csv"], "--output: folder"),
        (["--method", "eda", "--output", "out.xlsx"], "--output: 'out.xlsx' has an unknown format"),
        (["--method", "eda", "--output", "train.csv"], "is the --input file"),
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
