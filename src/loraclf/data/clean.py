"""Text cleaning: pure functions, each switchable from the recipe (``data.clean.*``).

AG News keeps the scraper's quirks: HTML entities with their ampersand lost (``#39;``, ``quot;``), escaped markup
(``&lt;b&gt;``), backslashes where newlines were, agency tags such as ``(Reuters)``. The same cleaning runs at
training, evaluation and prediction time (it is part of the saved recipe), so a model never sees two spellings of
one text.
"""

from __future__ import annotations

import html
import re

from loraclf.config import CleanConfig

# Entities whose "&" the AG News scrape dropped: "#39;" and "quot;" are common, the rest occur.
_BARE_NUMERIC = re.compile(r"&?#(\d{1,6});")
_BARE_NAMED = re.compile(r"&?\b(quot|amp|lt|gt|apos|nbsp|ndash|mdash|lsquo|rsquo|ldquo|rdquo|hellip);")
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
# AG News keeps a backslash where the source had a line break ("first\launch"): the letter after it
# belongs to the next word, so only the backslashes go.
_ESCAPE = re.compile(r"\\+")
_SPACE = re.compile(r"\s+")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# "(Reuters)", "(AP)", "(SPACE.com)", "(Sports Network)": a short capitalised or dotted name in brackets.
_SOURCE_PAREN = re.compile(r"\s*\((?:[A-Z][\w.&'-]*|[a-z]+\.(?:com|net|org))(?:\s+[A-Z][\w.&'-]*){0,3}\)")
# "Reuters - ", "AFP - " at the start of a sentence.
_SOURCE_DASH = re.compile(
    r"\b(?:Reuters|AP|AFP|Canadian Press|CP|PRNewswire|Business Wire|SPACE\.com|Ziff Davis|TechWeb|CNET|"
    r"NewsFactor|washingtonpost\.com|Sports Network)\s+-{1,2}\s+"
)
_DIGITS = re.compile(r"\d+")
# Tokenised text ("Reuters ) - The dollar sagged , helping") as in Penn-style corpora and the shifted AG News set:
# spaces before closing punctuation and after opening brackets go; a BPE tokenizer would otherwise see tokens
# (" ,", " )") it never met in training text.
_SPACE_BEFORE = re.compile(r"[ \t]+([,.;:!?%)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{$])[ \t]+")


def _numeric_entity(m: re.Match) -> str:
    code = int(m.group(1))
    # Unpaired surrogates and out-of-range code points cannot be encoded; drop them rather than crash.
    return chr(code) if 0 < code < 0x110000 and not 0xD800 <= code <= 0xDFFF else " "


def decode_html(text: str) -> str:
    """Decode HTML entities, including AG News' bare forms, and drop markup tags."""
    text = html.unescape(text)
    text = _BARE_NUMERIC.sub(_numeric_entity, text)
    text = _BARE_NAMED.sub(lambda m: html.unescape(f"&{m.group(1)};"), text)
    return _TAG.sub(" ", text)


def clean_text(text: str, cfg: CleanConfig) -> str:
    """Apply the enabled cleaning steps in a fixed order; always returns a str."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if cfg.html:
        text = decode_html(text)
    if cfg.escapes:
        text = _ESCAPE.sub(" ", text)
    if cfg.punctuation:
        text = _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", text))
    if cfg.urls:
        text = _URL.sub(" ", text)
    if cfg.emails:
        text = _EMAIL.sub(" ", text)
    if cfg.source_tags:
        text = _SOURCE_DASH.sub("", _SOURCE_PAREN.sub("", text))
    if cfg.digits:
        text = _DIGITS.sub(" ", text)
    if cfg.lowercase:
        text = text.lower()
    if cfg.whitespace:
        text = _SPACE.sub(" ", text).strip()
    return text


def clean_texts(texts: list[str], cfg: CleanConfig) -> list[str]:
    return [clean_text(t, cfg) for t in texts]
