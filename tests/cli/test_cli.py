"""Every user mistake ends with exit status 2, exactly one line on stderr, no traceback and no run folder.

Each command runs in its own process with real stdout/stderr file descriptors, as ``python -m loraclf`` (see
``run_cli_forked`` in conftest: one interpreter pays the torch/transformers start-up once and forks a child per
command). ``test_real_interpreter`` runs one of them again in a fully fresh ``python -m loraclf`` process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli_env, run_cli_forked, write_text_csv


@dataclass
class Case:
    args: list[str]
    out: Path | None  # the --out folder a failed train must not leave behind
    expect: list[str]  # fragments the one-line message must contain
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


def _cases(tmp: Path, bert: Path) -> dict[str, Case]:
    train_csv = write_text_csv(tmp / "train.csv", 40)
    nocol = tmp / "nocol.csv"
    pd.DataFrame({"body": ["a", "b"], "label": [1, 2]}).to_csv(nocol, index=False)
    existing = tmp / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    not_a_run = tmp / "not-a-run"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("hello")
    common = ["--model", str(bert), "--quiet", "--epochs", "1"]

    def train(
        name: str, *extra: str, out: Path | None = None, model: list[str] | None = None, data=train_csv
    ):
        out = out or tmp / f"run-{name}"
        args = ["train", *(model or common), "--train", str(data), "--out", str(out), *extra]
        return args, out

    cases = {}

    def add(name, expect, *extra, **kw):
        args, out = train(name, *extra, **kw)
        cases[name] = Case(args, out, expect)

    add("missing-train-file", ["--train", "nope.csv", "not found"], data=tmp / "nope.csv")
    add("missing-column", ["nocol.csv", "'text'", "body, label"], data=nocol)
    add("unknown-model", ["--model", "no-such-model-xyz"], model=["--model", "no-such-model-xyz", "--quiet"])
    add("unknown-target", ["--targets", "'qury'", 'did you mean "query"'], "--targets", "qury")
    add("over-budget", ["--budget", "10"], "--budget", "10")
    add("negative-rank", ["--rank", "-1"], "--rank", "-1")
    add("unwritable-out-proc", ["--out", "/proc/loraclf-test"], out=Path("/proc/loraclf-test/run"))
    add("out-under-a-file", ["--out", "train.csv"], out=train_csv / "run")
    add("existing-out", ["--out", "existing", "already exists"], out=existing)
    add("unknown-override", ["train.lrr", 'did you mean "train.lr"'], "train.lrr=1e-3")
    cases["evaluate-not-a-run"] = Case(
        ["evaluate", str(not_a_run), "--data", str(train_csv)], None, ["not-a-run", "run.json"]
    )
    cases["predict-not-a-run"] = Case(
        ["predict", str(not_a_run), "--input", str(tmp / "input.csv"), "--output", str(tmp / "p.csv")],
        None,
        ["not-a-run"],
    )
    cases["plan-search-without-budget"] = Case(
        ["plan", "--model", "roberta-base", "--search"], None, ["--budget"]
    )
    return cases


@pytest.fixture(scope="module")
def failures(tmp_path_factory, tiny_bert_dir) -> dict[str, Case]:
    tmp = tmp_path_factory.mktemp("cli")
    cases = _cases(tmp, tiny_bert_dir)
    logs = tmp / "logs"
    logs.mkdir()
    results = run_cli_forked({name: case.args for name, case in cases.items()}, logs)
    for name, case in cases.items():
        case.returncode, case.stdout, case.stderr = (
            results[name].returncode,
            results[name].stdout,
            results[name].stderr,
        )
    return cases


NAMES = [
    "missing-train-file",
    "missing-column",
    "unknown-model",
    "unknown-target",
    "over-budget",
    "negative-rank",
    "unwritable-out-proc",
    "out-under-a-file",
    "existing-out",
    "unknown-override",
    "evaluate-not-a-run",
    "predict-not-a-run",
    "plan-search-without-budget",
]


@pytest.mark.parametrize("name", NAMES)
def test_user_error_is_one_line_exit_2(failures, name):
    case = failures[name]
    detail = f"{name}: rc={case.returncode}\nstdout:\n{case.stdout[-2000:]}\nstderr:\n{case.stderr[-4000:]}"
    assert "Traceback" not in case.stderr, detail
    assert case.returncode == 2, detail
    lines = case.stderr.strip().splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("loraclf: error: "), detail
    for fragment in case.expect:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"


TRAIN_NAMES = [
    n
    for n in NAMES
    if n not in ("existing-out", "evaluate-not-a-run", "predict-not-a-run", "plan-search-without-budget")
]


@pytest.mark.parametrize("name", TRAIN_NAMES)
def test_failed_train_leaves_no_run_folder(failures, name):
    case = failures[name]
    assert case.args[0] == "train" and case.out is not None
    assert case.returncode == 2
    assert not case.out.exists(), f"{name}: {case.out} was left behind"


def test_existing_out_folder_is_untouched(failures):
    case = failures["existing-out"]
    assert case.returncode == 2
    assert sorted(p.name for p in case.out.iterdir()) == ["keep.txt"]
    assert (case.out / "keep.txt").read_text() == "mine"


def test_over_budget_message_has_both_numbers(failures):
    msg = failures["over-budget"].stderr.replace(",", "")
    assert " 10" in msg
    counts = [int(n) for n in re.findall(r"\d+", msg)]
    assert any(n > 10 for n in counts), msg


def test_help_lists_recipe_keys():
    res = subprocess.run(
        [sys.executable, "-m", "loraclf", "train", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert res.returncode == 0
    for key in ("adapter.r=", "train.lr=", "data.clean.html="):
        assert key in res.stdout


def test_real_interpreter(failures):
    """A fresh ``python -m loraclf`` process gives the same exit status and message as the forked one."""
    names = ["missing-column"]
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "loraclf", *failures[name].args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for name in names
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-4000:]
        assert "Traceback" not in err
        assert err == failures[name].stderr


# --- no flag prefixes; mistakes answered before the heavy libraries load ----------------------------------------


def test_every_parser_refuses_flag_prefixes():
    from loraclf.cli.main import build_parser

    parser = build_parser()
    assert parser.allow_abbrev is False
    assert {"plan", "train", "evaluate", "predict", "report", "augment", "export"} <= set(parser.commands)
    assert all(p.allow_abbrev is False for p in parser.commands.values())


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train", "--epoch", "1"], ["--epoch", "did you mean --epochs?"]),  # a prefix, once taken silently
        (["train", "--epocs", "1"], ["--epocs", "did you mean --epochs?"]),
        (["train", "--max-train", "8"], ["--max-train", "did you mean --max-train-samples?"]),
        (["plan", "--ran", "4"], ["--ran", "did you mean --rank?"]),
    ],
)
def test_abbreviated_or_misspelt_flags_are_refused_with_the_full_flag(tmp_path, args, fragments):
    from conftest import run_cli

    out = tmp_path / "run"
    res = run_cli(*args, "--train", tmp_path / "x.csv", "--out", out)
    assert res.returncode == 2, res
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith("loraclf: error: "), line
    for f in fragments:
        assert f in line, (f, line)
    assert not out.exists()


def test_recipe_flags_derive_from_the_dataclass_metadata():
    from loraclf.cli.main import build_parser
    from loraclf.config import FLAG_KEYS

    assert FLAG_KEYS["rank"] == "adapter.r" and FLAG_KEYS["epochs"] == "train.epochs"
    assert FLAG_KEYS["layer_ranks"] == "adapter.layer_ranks" and FLAG_KEYS["budget"] == "budget"
    train = build_parser().commands["train"]
    helps = {a.dest: a for a in train._actions}
    assert helps["rank"].type is int and "(adapter.r)" in helps["rank"].help
    assert helps["epochs"].type is float and "(train.epochs)" in helps["epochs"].help
    assert "epochs" not in {a.dest for a in build_parser().commands["plan"]._actions}  # train-only flag


_IMPORTS_AFTER_ERRORS = r"""
import sys
from loraclf.cli.main import main
cases = [
    ["--help"],
    ["train", "--epoch", "1"],
    ["train", "--train", "missing.csv", "--out", "o"],
    ["train", "--train", "x.csv", "--out", "o", "train.epoch=1"],
    ["train", "--train", "x.csv", "--out", "o", "--rank", "0"],
    ["plan", "--rank", "0"],
    ["plan", "--budget", "-3"],
    ["evaluate", "no-such-run", "--data", "x.csv"],
    ["predict", "no-such-run", "--input", "x.csv", "--output", "p.csv"],
    ["train", "--resume", "no-such-run"],
    ["report", "no-such-run"],
]
for argv in cases:
    try:
        code = main(argv)
    except SystemExit as exc:  # --help
        code = exc.code
    assert code in (0, 2), (argv, code)
heavy = ("torch", "transformers", "peft", "pandas", "sklearn", "numpy", "safetensors")
print("HEAVY:" + ",".join(m for m in heavy if m in sys.modules))
"""


def test_argument_recipe_and_path_errors_import_no_heavy_library(tmp_path):
    (tmp_path / "x.csv").write_text("text,label\na,b\n")
    res = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER_ERRORS],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "usage: loraclf" in res.stdout  # --help printed
    heavy = res.stdout.strip().splitlines()[-1]
    assert heavy == "HEAVY:", f"imported while parsing and checking: {heavy}"
    assert res.stderr.count("loraclf: error: ") == 10, res.stderr


_MODEL_LIBRARIES_AFTER_DATA_ERRORS = r"""
import sys
from loraclf.cli.main import main
for argv in (["train", "--train", "empty.csv", "--out", "o"], ["train", "--train", "nolabel.csv", "--out", "o"]):
    assert main(argv) == 2, argv
print("LOADED:" + ",".join(m for m in ("torch", "transformers", "peft", "sklearn") if m in sys.modules))
"""


def test_data_file_errors_come_before_the_model_libraries(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    (tmp_path / "nolabel.csv").write_text("id,text\n1,hello\n")
    res = subprocess.run(
        [sys.executable, "-c", _MODEL_LIBRARIES_AFTER_DATA_ERRORS],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "has a header but no data rows" in res.stderr and "no label column 'label'" in res.stderr
    assert res.stdout.strip().splitlines()[-1] == "LOADED:", res.stdout


def test_readme_quick_start_says_how_the_commands_find_loraclf():
    from conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick and ".venv/bin/loraclf" in quick
    guide = (REPO / "docs" / "guides" / "train-evaluate-predict.md").read_text(encoding="utf-8")
    command_line = guide.split("## Command-line behaviour", 1)[1].split("\n## ", 1)[0]
    for documented in (
        "train.save_every_minutes",
        "RUN/evaluations/",
        "data.label_names",
        "`--epoch` is an error",
    ):
        assert documented in command_line, documented


def test_peft_s_rank_pattern_warning_is_not_silenced():
    """peft warns when rank_pattern keys match no module: exactly the silent failure adapters.py guards against,
    so the CLI must not filter it (code review, section 19)."""
    import warnings

    from loraclf.cli.main import _quiet_libraries

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        _quiet_libraries()
        warnings.warn("rank_pattern keys did not match any targeted module and were ignored", UserWarning, 2)
    assert any("rank_pattern" in str(w.message) for w in caught)


def test_data_guide_gives_every_input_form_a_command():
    from conftest import REPO

    data = (REPO / "docs" / "guides" / "data.md").read_text(encoding="utf-8")
    rows = [line for line in data.splitlines() if line.startswith("| ") and "`loraclf " in line]
    table = "\n".join(rows)
    for form in (".csv", ".tsv", "UTF-16", "data.encoding=", ".xlsx", ".jsonl", ".parquet", ".pkl", ".gz", ".zst",
                 "folder of text files per class", "folder of text files to predict",
                 "save_to_disk", "ag_news:test", "data.header=false"):  # fmt: skip
        assert form in table, form
