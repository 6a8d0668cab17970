"""The documentation: the site builds with warnings as errors, the references are generated from the code, the
getting-started commands marked runnable run (on a tiny model), and the README stays a short front page.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env, write_text_csv, write_title_desc_csv

DOCS = REPO / "docs"
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```(?:bash|sh)\n(.*?)```", re.S)
QUIET_MKDOCS = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


def need_mkdocs() -> None:
    """mkdocs comes with the `docs` extra (make setup installs it); in CI its absence fails instead of skipping."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocs_gen_files") is None:
        msg = "mkdocs is not installed (pip install -e '.[docs]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def reference_pages(tmp_path: Path) -> dict[str, str]:
    subprocess.run(
        [sys.executable, str(DOCS / "gen_reference.py"), str(tmp_path)],
        check=True,
        env=cli_env(),
        timeout=120,
    )
    return {
        p: (tmp_path / "reference" / f"{p}.md").read_text(encoding="utf-8")
        for p in ("cli", "recipe", "methods")
    }


def test_site_builds_with_warnings_as_errors(tmp_path):
    need_mkdocs()
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=cli_env(**QUIET_MKDOCS),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "WARNING" not in re.sub(r"(?s)-{20,}.*?-{20,}", "", res.stderr)  # mkdocs' own banner aside
    for page in ("reference/cli", "reference/recipe", "reference/api", "getting-started", "guides/methods"):
        assert (site / page / "index.html").is_file(), page
    cli = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    assert "prob_&lt;label&gt;" in cli  # help text with angle brackets shows them, not an HTML tag
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    assert "predict_proba" in api and "UserError" in api  # docstrings rendered, not only headings


def test_references_cover_every_command_flag_and_recipe_key(tmp_path):
    """The generated pages name every subcommand, every flag and every recipe key the code defines."""
    from loraclf.cli.main import build_parser
    from loraclf.config import describe

    pages = reference_pages(tmp_path)
    parser = build_parser()
    for name, sub in parser.commands.items():
        section = pages["cli"].split(f"## `loraclf {name}`", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in section, (name, flag)
    for key, _, help_text in describe():
        row = next(line for line in pages["recipe"].splitlines() if line.startswith(f"| `{key}` |"))
        expected = " ".join(help_text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        assert expected in row, key
    assert "| `train.scheduler` | `linear` \\| `cosine`" in pages["recipe"]  # choices shown as choices
    assert "| `adapter.r` | `int` | `8` | `--rank` |" in pages["recipe"]
    from loraclf.modeling.methods import METHODS

    for name in METHODS:  # every method --method accepts, from the registry
        assert f"`{name}`" in pages["methods"], name


def runnable_blocks(page: Path) -> list[str]:
    return RUNNABLE.findall(page.read_text(encoding="utf-8"))


def test_getting_started_runnable_commands_run_on_a_tiny_model(tmp_path, tiny_bert_dir):
    """Every block marked ``<!-- runnable -->`` in getting-started.md, run as written by bash, with ``loraclf``
    pointing at this checkout and the recipe's model replaced by a tiny BERT (the only substitution)."""
    blocks = runnable_blocks(DOCS / "getting-started.md")
    assert blocks, "getting-started.md has no block marked <!-- runnable -->"
    data = tmp_path / "data"
    (data / "ag_news").mkdir(parents=True)
    write_text_csv(data / "ag_news" / "train.csv", 80, seed=0)
    write_title_desc_csv(data / "ag_news" / "test.csv", 24, seed=3)
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipes").symlink_to(REPO / "recipes")
    # plan and train get the tiny model as a trailing override; every other command runs unchanged.
    tiny = " ".join(
        shlex.quote(a) for a in (f"model.name={tiny_bert_dir}", "train.threads=1", "model.head=linear")
    )
    wrapper = (
        "set -euo pipefail\n"
        f'loraclf() {{ case "$1" in plan|train) {shlex.quote(sys.executable)} -m loraclf "$@" {tiny};; '
        f'*) {shlex.quote(sys.executable)} -m loraclf "$@";; esac; }}\n'
    )
    for i, block in enumerate(blocks):
        res = subprocess.run(
            ["bash", "-c", wrapper + block],
            cwd=work,
            env=cli_env(LORACLF_DATA=str(data), LORACLF_QUIET="1"),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, f"block {i}:\n{block}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    header = (work / "runs" / "first" / "predictions.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("ID,Label,prob_"), header
    assert re.search(r"budget\s+1,000,000\s+fits", res.stdout), res.stdout[
        -2000:
    ]  # plan's verdict was printed


def test_readme_is_a_short_front_page_with_its_two_commands_first():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < 10_000
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands[:2] == ["make quickstart", "make test"], commands
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("quickstart", "test", "docs"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    # Every link into docs/ names a page that exists (the capabilities table's one link each).
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 8, links
    for link in links:
        assert (REPO / link).is_file(), link


def test_every_docs_page_is_in_the_navigation():
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    listed = set(pages(nav))
    written = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    generated = {"reference/cli.md", "reference/recipe.md", "reference/methods.md"}
    assert written | generated == listed, (written | generated) ^ listed


COMMAND_LINE = re.compile(
    r"^(?:\$ )?(?:[A-Z_]+=\S+\s+)*(?:\S*python -m |torchrun .*-m |accelerate launch .*-m )?loraclf\s+(.*)$"
)
OVERRIDE = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+)=")


def documented_commands() -> list[tuple[str, str]]:
    """(file, command line) for every ``loraclf …`` line in the shell blocks of the README, CONTRIBUTING and docs/."""
    found = []
    for page in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                match = COMMAND_LINE.match(line.strip())
                if match and not match.group(1).startswith("-"):
                    found.append((page.relative_to(REPO).as_posix(), match.group(1)))
    return found


def test_documented_commands_use_real_commands_flags_and_recipe_keys():
    """Hand-written examples cannot drift from the parser: every command, flag and key.sub=value key exists."""
    from loraclf.cli.main import build_parser
    from loraclf.config import describe

    parser = build_parser()
    keys = {k for k, _, _ in describe()}
    lines = documented_commands()
    assert len(lines) >= 40, len(lines)
    wrong = []
    for page, line in lines:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # an ellipsis or a quote left open inside prose-like examples
            tokens = line.split()
        command, args = tokens[0], tokens[1:]
        if command not in parser.commands:
            wrong.append((page, command))
            continue
        flags = {o for a in parser.commands[command]._actions for o in a.option_strings}
        for token in args:
            if token.startswith("--") and token.split("=")[0] not in flags:
                wrong.append((page, command, token))
            match = OVERRIDE.match(token)
            if match and not any(k == match.group(1) or k.startswith(match.group(1) + ".") for k in keys):
                wrong.append((page, command, token))
    assert not wrong, wrong
