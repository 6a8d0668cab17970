"""The package's shape: declared dependencies match what the code imports, and the layers point one way.

The layer order itself is the import-linter contract in pyproject.toml (``lint-imports`` runs in ``make test``);
here the same contract is checked from pytest too, so a test run alone cannot miss a broken layer or a cycle.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "loraclf"
# Import name → distribution name, where they differ.
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def third_party_imports() -> dict[str, list[str]]:
    """Top-level names of every absolute import in the package (function-local ones included) → files."""
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "loraclf" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(path.relative_to(SRC).as_posix())
    return found


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {re.split(r"[<>=!~\[ ;]", s, maxsplit=1)[0].lower() for s in specs}


def test_every_imported_library_is_declared():
    deps = declared()
    missing = {
        name: files
        for name, files in third_party_imports().items()
        if DISTRIBUTION.get(name, name).lower().replace("_", "-") not in deps
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_layer_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed (pip install -e '.[dev]')")
    res = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "0 broken" in res.stdout


def test_tests_mirror_the_subpackages():
    """Each subpackage's tests are in ``tests/<subpackage>/``; no test file is left at the top of ``tests/``; test
    file names are unique (pytest imports them by name); a coverage database is never committed."""
    tests = REPO / "tests"
    subpackages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    missing = sorted(s for s in subpackages if not list((tests / s).glob("test_*.py")))
    assert not missing, f"subpackages without a tests/<name>/ folder of tests: {missing}"
    assert not list(tests.glob("test_*.py")), "test files belong in a subfolder of tests/"
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    tracked = subprocess.run(["git", "ls-files", ".coverage"], cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode != 0 or not tracked.stdout.strip()
