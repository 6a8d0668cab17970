"""The ``augment`` command, registered on the main ``loraclf`` parser by :func:`add_command`.

``loraclf augment --method synonym|eda|noise|generate --input FILE --output FILE [options]`` writes the input rows
plus augmented rows, with a ``source`` provenance column; the methods are described in :mod:`loraclf.toolbox.augment`
(synonym, EDA), :mod:`loraclf.toolbox.noise` (noise imitating machine-written news) and
:mod:`loraclf.toolbox.generate` (adapted-LM generation).
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  loraclf augment --method synonym --input train.csv --output train+syn.csv --rate 0.1 --copies 1
  loraclf augment --method eda --input train.csv --output train+eda.csv --rate 0.1 --copies 4
  loraclf augment --method noise --input train.csv --output noise.csv --no-keep-original --strength 0.4
  loraclf train --train train.csv --train noise.csv --out runs/noise ...    # the noised rows as a second file
  loraclf augment --method generate --lm gpt2 --input train.csv --target ood_unlabeled.csv \\
      --per-class 500 --filter-run runs/minilm --output train+gen.csv

WordNet (synonym, eda) is read offline from the system database: apt-get install wordnet-base wordnet-sense-index
"""


def add_command(sub) -> None:
    """Register the ``augment`` subcommand on an argparse subparsers object (its parser class is kept)."""
    p = sub.add_parser(
        "augment",
        help="add synonym, EDA, noised or LM-generated rows to a labelled data file",
        description="Augment a labelled data file; the output keeps a `source` provenance column.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, help="synonym | eda | noise | generate")
    p.add_argument(
        "--input", required=True, metavar="FILE", help="labelled data file (csv, tsv, jsonl, parquet)"
    )
    p.add_argument("--output", required=True, metavar="FILE", help="file to write; format from the extension")
    p.add_argument(
        "--text-column",
        metavar="NAME",
        default="text",
        help="text column (else title + description are joined)",
    )
    p.add_argument("--label-column", metavar="NAME", default="label", help="label column")
    p.add_argument(
        "--seed", metavar="N", type=int, default=42, help="seed of every random choice (default 42)"
    )
    p.add_argument(
        "--keep-original",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the input rows before the new ones (default: yes)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    _word_flags(p)
    _generate_flags(p)


def _word_flags(p) -> None:
    """Options of the WordNet methods (synonym replacement, EDA)."""
    g = p.add_argument_group("synonym, eda and noise")
    g.add_argument(
        "--rate",
        metavar="R",
        type=float,
        default=0.1,
        help="synonym: share of eligible words replaced; eda: alpha, the strength of each operation (0.1)",
    )
    g.add_argument(
        "--copies",
        type=int,
        default=1,
        metavar="N",
        help="augmented copies per input row, also for noise (1)",
    )
    g.add_argument(
        "--strength",
        metavar="S",
        type=float,
        help="noise: 0 (unchanged) to 1 (every perturbation at its full rate); default 0.4, which matches "
        "the machine-written rows of kaggle_test.csv",
    )


def _generate_flags(p) -> None:
    """Options of LM generation: adapting the LM, sampling, and filtering the samples with a run."""
    g = p.add_argument_group("generate")
    g.add_argument(
        "--lm", metavar="MODEL", default="gpt2", help="causal LM: hub id or local folder (default gpt2)"
    )
    g.add_argument(
        "--target",
        metavar="FILE",
        help="unlabelled target-domain texts to adapt the LM on (default: --input)",
    )
    g.add_argument(
        "--lm-epochs", metavar="N", type=int, default=2, help="adaptation epochs; 0 uses the LM as it is (2)"
    )
    g.add_argument("--lm-full", action="store_true", help="fine-tune every LM weight instead of LoRA")
    g.add_argument(
        "--lm-lr",
        metavar="LR",
        type=float,
        help="adaptation learning rate (2e-4 with LoRA, 5e-5 with --lm-full)",
    )
    g.add_argument("--lm-batch-size", metavar="N", type=int, default=8, help="adaptation batch size (8)")
    g.add_argument("--lm-out", metavar="DIR", help="save the adapted LM into this new folder")
    g.add_argument(
        "--prompts", metavar="FILE", help="YAML: label → list of prompts (default: AG News prompts)"
    )
    g.add_argument(
        "--per-class", type=int, default=100, metavar="N", help="samples generated per class (100)"
    )
    g.add_argument(
        "--min-words",
        metavar="N",
        type=int,
        default=8,
        help="shortest drawn length; shorter than half of it is dropped (8)",
    )
    g.add_argument(
        "--max-words", metavar="N", type=int, default=128, help="longest drawn length in words (128)"
    )
    g.add_argument(
        "--repetition-penalty", metavar="P", type=float, default=1.3, help="above 1 discourages loops (1.3)"
    )
    g.add_argument("--top-p", metavar="P", type=float, default=0.95, help="nucleus sampling mass (0.95)")
    g.add_argument("--temperature", metavar="T", type=float, default=1.0, help="sampling temperature (1.0)")
    g.add_argument(
        "--gen-batch-size", metavar="N", type=int, default=16, help="prompts sampled together (16)"
    )
    g.add_argument(
        "--filter-run",
        metavar="RUN",
        help="loraclf run folder: keep samples it assigns to the prompt's class",
    )
    g.add_argument(
        "--min-confidence",
        metavar="P",
        type=float,
        default=0.7,
        help="probability --filter-run must give the class (0.7)",
    )
    g.add_argument("--device", metavar="DEVICE", default="auto", help="auto | cpu | cuda | cuda:N | mps")


def cmd_augment(args) -> int:
    from loraclf.toolbox.augment import run_augment

    return run_augment(args)


COMMANDS = {"augment": cmd_augment}
