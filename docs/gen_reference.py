"""Generate the command-line and recipe-key reference pages from the code that builds the CLI.

Run by mkdocs-gen-files on every ``mkdocs build`` (``plugins: gen-files`` in mkdocs.yml), so the pages cannot drift:
``reference/cli.md`` walks the argparse parser that ``loraclf`` itself uses (``loraclf.cli.main.build_parser``),
``reference/recipe.md`` the recipe dataclasses (``loraclf.config.schema``) whose ``opt(...)`` help texts also feed
``loraclf train --help`` and the recipe flags. Run alone (``python docs/gen_reference.py OUT_DIR``) it writes the
two pages into OUT_DIR, which tests use to check them without building the site.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path


def _one_line(text: object) -> str:
    """One line, pipes escaped (they would end a table cell)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _cell(text: object) -> str:
    """A prose table cell: one line; ``<`` and ``>`` escaped so that ``prob_<label>`` is not read as HTML."""
    return _one_line(text).replace("<", "&lt;").replace(">", "&gt;")


def _code(text: object) -> str:
    """Inline code for a table cell; backticks inside become a longer fence."""
    text = _one_line(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _help(action: argparse.Action, prog: str) -> str:
    """An action's help with argparse's ``%(default)s``-style fields expanded, as ``--help`` shows it."""
    text = action.help or ""
    if "%" in text:
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = prog
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return text


def _value(action: argparse.Action) -> str:
    """What the flag takes: its choices, its metavar, or nothing for a switch."""
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return " \\| ".join(_code(c) for c in action.choices)
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    suffix = {"*": " …", "+": " …", "?": " (optional)"}.get(str(action.nargs), "")
    return _code(metavar) + suffix


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.required:
        return ""
    return _code(action.default)


def cli_page() -> str:
    """Markdown for every ``loraclf`` subcommand: usage line, description and a table of its arguments."""
    from loraclf.cli.main import build_parser

    parser = build_parser()
    out = [
        "# Command line",
        "",
        "Generated from the parser `loraclf` builds (`loraclf.cli.main.build_parser`) on every docs build; "
        "`loraclf COMMAND --help` prints the same. Flags are never abbreviated. Flags marked with a recipe key in "
        "parentheses are shortcuts for that key ([recipe keys](recipe.md)); any key can also be given as a trailing "
        "`key.sub=value` override.",
        "",
    ]
    for name, sub in parser.commands.items():
        out += [f"## `loraclf {name}`", "", "```text", sub.format_usage().strip(), "```", ""]
        if sub.description:
            out += [_cell(sub.description), ""]
        rows = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| argument | value | default | what it does |", "|---|---|---|---|"]
            for a in rows:
                label = ", ".join(_code(s) for s in a.option_strings) or _code(a.metavar or a.dest.upper())
                out.append(f"| {label} | {_value(a)} | {_default(a)} | {_cell(_help(a, sub.prog))} |")
            out.append("")
    return "\n".join(out) + "\n"


def _type_name(tp: typing.Any) -> str:
    """``int | None`` → ``int or null``; ``list[str]`` → ``list[str]``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _yaml(value: object) -> str:
    """A default as a recipe YAML writes it: null, true/false, text unquoted (empty text as "")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value.strip() else repr(value).replace("'", '"')
    return str(value)


def _recipe_rows(cls: type, prefix: str = "") -> list[tuple[str, list[tuple[str, ...]], str]]:
    """(section key, rows, section docstring) per recipe dataclass, nested sections after their parent."""
    from loraclf.config.schema import CHOICES

    hints = typing.get_type_hints(cls)
    own: list[tuple[str, ...]] = []
    nested: list[tuple[str, list[tuple[str, ...]], str]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested += _recipe_rows(tp, key + ".")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        kind = " \\| ".join(_code(c) for c in CHOICES[key]) if key in CHOICES else _code(_type_name(tp))
        flag = _code(f.metadata["flag"]) if f.metadata.get("flag") else ""
        own.append((_code(key), kind, _code(_yaml(default)), flag, _cell(f.metadata.get("help", ""))))
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    return [(prefix.rstrip(".") or "top level", own, doc), *nested] if own else nested


def recipe_page() -> str:
    """Markdown for every recipe key, one table per section, from ``loraclf.config.schema.Recipe``."""
    from loraclf.config.schema import Recipe

    out = [
        "# Recipe keys",
        "",
        "Generated from the recipe dataclasses (`loraclf.config.schema`) on every docs build; `loraclf train "
        "--help` lists the same keys. Set them in a recipe YAML (`--config`, nested by section), as trailing "
        "`key.sub=value` overrides, or through the flag named in the table. The defaults are the generic ones; "
        "without `--config`, the model's default recipe applies first.",
        "",
    ]
    for section, rows, doc in _recipe_rows(Recipe):
        out += [f"## `{section}`" if section != "top level" else "## Top-level keys", ""]
        if doc:
            out += [doc, ""]
        out += ["| key | type | default | flag | what it does |", "|---|---|---|---|---|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    return "\n".join(out) + "\n"


def methods_page() -> str:
    """Markdown table of every registered adaptation method, from the registry itself.

    The registry's own ``table_markdown()`` is used when it has one (the ``modeling/methods/`` package); otherwise
    the table is built here from each ``Method`` record's name, summary, source and merge flag.
    """
    from loraclf.modeling import methods

    out = [
        "# Adaptation methods (registry)",
        "",
        "Generated from the method registry (`loraclf.modeling.methods`) on every docs build, so every method "
        "`--method` accepts is listed. The [methods guide](../guides/methods.md) says when to pick which, with "
        "measurements.",
        "",
    ]
    table = getattr(methods, "table_markdown", None)
    if table is not None:
        return "\n".join(out) + "\n" + table().rstrip("\n") + "\n"
    yes = {True: "yes", False: "no"}
    out += [
        "| `--method` | what trains | source | folds into the weights | int8 graph and `export` |",
        "|---|---|---|---|---|",
    ]
    for m in methods.METHODS.values():
        cells = (f"`{m.name}`", _cell(m.summary), _cell(m.source), yes[m.merges], yes[m.plain])
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


PAGES = {
    "reference/cli.md": cli_page,
    "reference/recipe.md": recipe_page,
    "reference/methods.md": methods_page,
}


def _write_with_gen_files() -> None:
    import mkdocs_gen_files

    for path, page in PAGES.items():
        with mkdocs_gen_files.open(path, "w") as fh:
            fh.write(page())
        mkdocs_gen_files.set_edit_path(path, "gen_reference.py")


if __name__ == "__main__":  # python docs/gen_reference.py OUT_DIR
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/gen_reference.py OUT_DIR")
    for rel, page in PAGES.items():
        target = Path(sys.argv[1]) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page(), encoding="utf-8")
else:  # executed by mkdocs-gen-files (runpy.run_path: __name__ is "<run_path>")
    _write_with_gen_files()
