"""Text cleaning: AG News quirks, each switch, and properties over arbitrary text."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loraclf.config import CleanConfig
from loraclf.data.clean import clean_text, clean_texts, decode_html

DEFAULT = CleanConfig()
OFF = CleanConfig(html=False, escapes=False, whitespace=False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("it#39;s", "it's"),
        ("Messier#39;s lawyer", "Messier's lawyer"),
        ("quot;I am an expert,quot; he said", '"I am an expert," he said'),
        ("&lt;b&gt;Bold&lt;/b&gt;", "Bold"),
        ("a &lt;b&gt;bold&lt;/b&gt; move", "a bold move"),
        ("the  #36;10 million prize", "the $10 million prize"),
        ("AT&amp;T", "AT&T"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("caf&eacute;", "café"),
    ],
)
def test_html_entities_and_markup(raw, expected):
    assert clean_text(raw, DEFAULT) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # AG News keeps a backslash where the source had a line break: it separates two words.
        (r"a contest for\privately funded flight", "a contest for privately funded flight"),
        (r"announced the first\launch date", "announced the first launch date"),
        (r"A second\team of rocketeers", "A second team of rocketeers"),
        (r"in\the city", "in the city"),
        (r"killed\nine people", "killed nine people"),
        (r"a\rebel group", "a rebel group"),
        (r"Fined \$1.35 Million", "Fined $1.35 Million"),
        ("two\\\\ backslashes", "two backslashes"),
    ],
)
def test_backslashes_become_spaces_and_keep_words(raw, expected):
    assert clean_text(raw, DEFAULT) == expected


def test_source_tags_removed_only_when_switched_on():
    raw = "LONDON (Reuters) - Stocks fell sharply on Monday."
    on = clean_text(raw, CleanConfig(source_tags=True))
    assert "Reuters" not in on
    assert on.startswith("LONDON")
    assert on.endswith("Stocks fell sharply on Monday.")
    assert clean_text(raw, DEFAULT) == raw  # off by default: kept verbatim


@pytest.mark.parametrize(
    "raw", ["AFP - Troops moved in.", "Reuters - Troops moved in.", "(AP) Troops moved in."]
)
def test_agency_prefixes_removed_when_switched_on(raw):
    out = clean_text(raw, CleanConfig(source_tags=True))
    assert out == "Troops moved in."
    assert clean_text(raw, DEFAULT) == raw


def test_urls_switch():
    raw = "see https://example.com/a?b=1 and www.example.org now"
    assert clean_text(raw, CleanConfig(urls=True)) == "see and now"
    assert clean_text(raw, DEFAULT) == raw


def test_emails_switch():
    raw = "write to jane.doe+news@example.co.uk today"
    assert clean_text(raw, CleanConfig(emails=True)) == "write to today"
    assert clean_text(raw, DEFAULT) == raw


def test_digits_switch():
    raw = "Stocks rose 3.5 percent in 2004"
    assert clean_text(raw, CleanConfig(digits=True)) == "Stocks rose . percent in"
    assert clean_text(raw, DEFAULT) == raw


def test_lowercase_switch():
    assert clean_text("Big NEWS", CleanConfig(lowercase=True)) == "big news"
    assert clean_text("Big NEWS", DEFAULT) == "Big NEWS"


def test_whitespace_switch():
    raw = "  a\tb \r\n c   d  "
    assert clean_text(raw, DEFAULT) == "a b c d"
    assert clean_text(raw, CleanConfig(whitespace=False)) == raw


def test_html_switch_off_keeps_entities():
    raw = "it#39;s &lt;b&gt;"
    assert clean_text(raw, CleanConfig(html=False)) == raw


def test_non_strings_become_strings():
    assert clean_text(None, DEFAULT) == ""
    assert clean_text(12, DEFAULT) == "12"


@pytest.mark.parametrize("raw", ["#0;", "#55296;", "#999999;", "&#1114112;", "&#xD800;"])
def test_impossible_code_points_do_not_crash(raw):
    out = decode_html(raw)
    assert isinstance(out, str)
    out.encode("utf-8")  # no lone surrogates


# --- properties ----------------------------------------------------------------------------------------------------

# Text rich in the characters the cleaner acts on, mixed with arbitrary unicode.
QUIRKY = st.lists(
    st.one_of(
        st.text(max_size=6),
        st.sampled_from(
            ["#", ";", "&", "\\", "<", ">", "/", "(", ")", " ", "\t", "\n", "\r", "\xa0", "\u2028"]
        ),
        st.sampled_from(
            ["#39;", "quot;", "&lt;", "&gt;", "&amp;", "#36;", "&#", "(Reuters)", "AFP - ", "http://x.y"]
        ),
    ),
    max_size=20,
).map("".join)
CONFIGS = st.builds(CleanConfig, **{f.name: st.booleans() for f in dataclasses.fields(CleanConfig)})


@settings(max_examples=300, deadline=None)
@given(text=QUIRKY, cfg=CONFIGS)
def test_never_raises_and_returns_encodable_str(text, cfg):
    out = clean_text(text, cfg)
    assert isinstance(out, str)
    out.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(text=QUIRKY, cfg=CONFIGS)
def test_whitespace_is_normalised_when_on(text, cfg):
    out = clean_text(text, dataclasses.replace(cfg, whitespace=True))
    assert out == out.strip()
    assert "  " not in out
    assert all(c == " " for c in out if c.isspace()), repr(out)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_whitespace_only_equals_split_join(text):
    cfg = CleanConfig(html=False, escapes=False, whitespace=True)
    assert clean_text(text, cfg) == " ".join(text.split())


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_everything_off_is_identity(text):
    assert clean_text(text, OFF) == text


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(QUIRKY, max_size=8), cfg=CONFIGS)
def test_deterministic_and_batch_equals_single(texts, cfg):
    once = clean_texts(texts, cfg)
    assert once == clean_texts(list(texts), cfg)
    assert once == [clean_text(t, cfg) for t in texts]


def test_punctuation_spacing_undone_before_source_tags():
    raw = "SINGAPORE ( Reuters ) - The dollar sagged , helping shares lower , after 5 % .\tThen ?"
    on = CleanConfig(punctuation=True)
    assert (
        clean_text(raw, on)
        == "SINGAPORE (Reuters) - The dollar sagged, helping shares lower, after 5%. Then?"
    )
    # Joined first, the bracketed tag is the one the source-tag step knows.
    tags = CleanConfig(punctuation=True, source_tags=True)
    assert clean_text(raw, tags).startswith("SINGAPORE - The dollar sagged,")
    assert clean_text(raw, DEFAULT) == " ".join(raw.split())  # off by default: saved runs keep their tokens


@settings(max_examples=300, deadline=None)
@given(text=QUIRKY)
def test_punctuation_only_removes_spaces_and_leaves_none_before_closers(text):
    out = clean_text(text, dataclasses.replace(OFF, punctuation=True))
    assert "".join(out.split()) == "".join(text.split())
    assert not re.search(r"[ \t][,.;:!?%)\]}]", out)
