"""Architecture rules that keep the package honest: imports follow the documented arrows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "stemsplit"


def _imports(path: Path) -> set[str]:
    """Every module name a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _sources() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 5, f"no sources found under {SRC}"
    return files


def test_no_module_under_src_imports_demucs() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(
            n for n in _imports(path) if n == "demucs" or n.startswith("demucs.")
        )
        for path in _sources()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_source_file_mentions_an_importlib_route_to_demucs() -> None:
    """``importlib.import_module('demucs…')`` or ``__import__`` would dodge the AST check above."""
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        assert 'import_module("demucs' not in text and '__import__("demucs' not in text, path


def test_model_package_imports_nothing_else_from_stemsplit() -> None:
    for path in sorted((SRC / "model").rglob("*.py")):
        inner = {
            n for n in _imports(path) if n.startswith("stemsplit") and not n.startswith("stemsplit.model")
        }
        assert inner == set(), f"{path.name} imports {inner}"


def test_importing_the_whole_package_does_not_import_demucs() -> None:
    code = (
        "import importlib, pkgutil, sys, stemsplit\n"
        "for info in pkgutil.walk_packages(stemsplit.__path__, 'stemsplit.'):\n"
        "    if info.name != 'stemsplit.__main__':\n"
        "        importlib.import_module(info.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'demucs' or m.startswith('demucs.'))\n"
        "print(len([m for m in sys.modules if m.startswith('stemsplit.')]), bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, bad = done.stdout.split(" ", 1)
    assert int(count) > 5
    assert bad.strip() == "[]"
