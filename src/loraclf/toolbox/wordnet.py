"""Offline WordNet synonyms from the system's WordNet 3.0 database.

NLTK reads WordNet from a folder of the Princeton database files, but fetching that folder normally means
``nltk.download``, which needs the network. Debian ships the same database in the packages ``wordnet-base`` and
``wordnet-sense-index`` (files in ``/usr/share/wordnet``), minus one small file NLTK insists on: ``lexnames``, the
table of the 45 lexicographer files (``00 adj.all 3`` … ``44 adj.ppl 3``). At first use loraclf assembles a private
folder, ``<cache>/wordnet``, of copies of the system files (about 35 MB; NLTK refuses to read through symlinks) plus
a generated ``lexnames``, and points NLTK's :class:`~nltk.corpus.reader.wordnet.WordNetCorpusReader` at it.
``WNSEARCHDIR`` (WordNet's own variable) selects another folder holding the same database files.

Synonyms of a word are the lemma names of the synsets that list the word itself as a lemma, with underscores turned
into spaces. Requiring the word to be a lemma of the synset (rather than letting WordNet map an inflected form to
its base) keeps replacements grammatical: "rallied" is not replaced by "rebound", and "stocks" not by "stock".
Without a tagger, the sense a text means is unknown; two frequency rules from the SemCor sense counts
(``cntlist.rev``) keep most replacements on it. Only senses SemCor counted take part ("car" gives "automobile", not
"gondola"), and only those of the word's most counted part of speech ("hand" gives "manus", not the verb "give").
Words without counted senses keep all of theirs.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path

from loraclf.utils.errors import UserError

SYSTEM_DIRS = (Path("/usr/share/wordnet"), Path("/usr/share/WordNet"), Path("/usr/local/share/wordnet"))
INSTALL_HINT = "run `sudo apt-get install wordnet-base wordnet-sense-index` (or `make wordnet`)"
# Every database file NLTK's reader opens, except lexnames, which is generated.
DATABASE_FILES = (
    "cntlist.rev",
    "index.sense",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("adj", "adv", "noun", "verb")),
    *(f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")),
)
# The 45 lexicographer files of WordNet 3.0, in file-number order (lexnames(5WN)).
LEXNAMES = """
    adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition
    noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object
    noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape
    noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition
    verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession
    verb.social verb.stative verb.weather adj.ppl
""".split()  # noqa: SIM905
# The syntactic category of a lexicographer file follows from its prefix.
CATEGORIES = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
POS_TAGS = ("n", "v", "a", "r")


def system_dir() -> Path:
    """The folder holding the WordNet database: ``$WNSEARCHDIR``, else the first system folder that has it."""
    env = os.environ.get("WNSEARCHDIR")
    candidates = [Path(env)] if env else list(SYSTEM_DIRS)
    for d in candidates:
        if all((d / f).is_file() for f in DATABASE_FILES):
            return d
    where = f"WNSEARCHDIR={env}" if env else str(SYSTEM_DIRS[0])
    missing = next(f for f in DATABASE_FILES if not (candidates[0] / f).is_file())
    raise UserError(f"WordNet database not found ({where} has no '{missing}'); {INSTALL_HINT}")


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line, 45 lines."""
    return "".join(f"{i:02d}\t{name}\t{CATEGORIES[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def build_dir(target: Path, source: Path) -> Path:
    """Assemble (once) a folder NLTK can read: copies of ``source``'s database files and a ``lexnames`` file.

    The folder is built beside ``target`` and renamed into place, so concurrent first uses never see half of it.
    """
    missing = [f for f in DATABASE_FILES if not (source / f).is_file()]
    if missing:
        raise UserError(f"WordNet database incomplete: '{source}' has no '{missing[0]}'; {INSTALL_HINT}")
    if _complete(target, source):
        return target
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name in DATABASE_FILES:
            # Copies, not links: NLTK's path sentinel refuses to open symlinks and multiply-linked files.
            shutil.copyfile(source / name, tmp / name)
        (tmp / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"cannot build the WordNet folder '{target}' ({exc.strerror or exc}); set LORACLF_CACHE to a "
            "writable folder"
        ) from None
    shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first; its folder is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(target: Path, source: Path) -> bool:
    """True when ``target`` holds every file at the size of ``source``'s (a system upgrade changes sizes)."""
    if not (target / "lexnames").is_file() or (target / "lexnames").read_text() != lexnames_text():
        return False
    return all(
        (target / n).is_file() and (target / n).stat().st_size == (source / n).stat().st_size
        for n in DATABASE_FILES
    )


@functools.cache
def reader():
    """NLTK's WordNet reader over the private folder (built at first call; cached for the process)."""
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from loraclf.utils.cache import cache_dir

    class _EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # NLTK maps synsets onto its downloaded "wordnet" corpus for multilingual lookups; there is none
            # offline, and English synonyms do not need the mapping.
            return None

    folder = build_dir(cache_dir() / "wordnet", system_dir())
    # NLTK (>= 3.9.3) opens corpus files only below the folders listed in nltk.data.path.
    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))
    with warnings.catch_warnings():
        # "The multilingual functions are not available": expected, only English is used.
        warnings.simplefilter("ignore", UserWarning)
        return _EnglishWordNet(str(folder), omw_reader=None)


@functools.cache
def sense_counts() -> dict[str, int]:
    """How often each sense (by sense key) is tagged in the SemCor corpus, from ``cntlist.rev``."""
    counts = {}
    with open(Path(reader().root.path) / "cntlist.rev", encoding="utf-8") as fh:
        for line in fh:
            key, _, count = line.split()
            counts[key] = int(count)
    return counts


def common_senses(lemmas: list) -> list:
    """The lemmas of SemCor-counted senses in the most counted part of speech; all lemmas when none is counted."""
    counts = sense_counts()
    by_pos: dict[str, list] = {}
    totals: dict[str, int] = {}
    for lemma in lemmas:
        n = counts.get(lemma.key(), 0)
        if n > 0:
            pos = "a" if lemma.synset().pos() == "s" else lemma.synset().pos()  # satellites are adjectives
            by_pos.setdefault(pos, []).append(lemma)
            totals[pos] = totals.get(pos, 0) + n
    if not totals:
        return lemmas
    return by_pos[max(POS_TAGS, key=lambda pos: totals.get(pos, 0))]  # ties go to the earlier tag: stable


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of ``word`` (any part of speech), in WordNet's order, without the word itself.

    Args:
        word: a single word; looked up in lower case.

    Returns:
        Lemma names (underscores replaced by spaces) of the common senses (:func:`common_senses`) listing
        ``word`` as a lemma; empty when WordNet does not know the word.
    """
    key = word.lower()
    if not key.isascii() or not key.replace("-", "").isalpha():
        return ()  # WordNet 3.0 is ASCII; anything else would only cost a lookup
    lemmas = [lemma for pos in POS_TAGS for lemma in reader().lemmas(key, pos)]
    out: dict[str, None] = {}  # an ordered set: WordNet's order makes choices reproducible
    for lemma in common_senses(lemmas):
        for name in lemma.synset().lemma_names():
            phrase = name.replace("_", " ")
            # Names and symbols ("Pu" for plutonium) would be odd in place of a common word: lower case only.
            if phrase != key and phrase.islower() and all(c.isalpha() or c in " -'" for c in phrase):
                out[phrase] = None
    return tuple(out)
