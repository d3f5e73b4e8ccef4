"""Architecture rules that keep the package honest: imports follow the arrows of ARCHITECTURE.md.

``cli → {distributed →} pipeline → {weights, inference, audio} → model`` and ``cli → player → audio``, with ``weights → inference`` only for the
:class:`~stemsplit.inference.ModelBag` it returns; ``errors``, ``settings``, ``_paths`` and ``_version`` are
leaves anyone may use. Static rules read every import of every file (function-level ones included); the
runtime rules import a module in a fresh interpreter and look at ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stemsplit"

LEAVES = {"errors", "settings", "_paths", "_version"}
# Which parts of the package each part may import (besides itself and the leaves).
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "audio": set(),
    "inference": set(),
    "weights": {"model", "inference"},
    "pipeline": {"weights", "inference", "audio"},
    "separator": {"pipeline", "weights", "inference", "audio"},
    "distributed": {"pipeline", "weights", "inference", "audio"},
    "player": {"audio"},
    "cli": {"distributed", "pipeline", "weights", "inference", "audio", "model", "player"},
    "__init__": {"model", "weights", "pipeline", "separator"},
    "__main__": {"cli"},
    **{leaf: set() for leaf in LEAVES},
}


def _imports(path: Path) -> set[str]:
    """Every module name a file imports, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            if node.module == "stemsplit":  # ``from stemsplit import settings``
                names.update(f"stemsplit.{alias.name}" for alias in node.names)
    return names


def _sources() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 5, f"no sources found under {SRC}"
    return files


def _part(module: str) -> str:
    """``stemsplit.weights.cache`` → ``weights``; ``stemsplit.errors`` → ``errors``."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _part_of_file(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem


def test_every_part_of_the_package_is_in_the_table() -> None:
    parts = {_part_of_file(path) for path in _sources()}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED and ARCHITECTURE.md"


def test_imports_follow_the_arrows() -> None:
    wrong = {}
    for path in _sources():
        part = _part_of_file(path)
        used = {_part(n) for n in _imports(path) if n == "stemsplit" or n.startswith("stemsplit.")}
        bad = used - ALLOWED[part] - LEAVES - {part, "__init__"}
        if part in LEAVES:
            bad = used - {part, "__init__"} - ({"_version"} if part != "_version" else set())
        if bad:
            wrong[str(path.relative_to(SRC))] = sorted(bad)
    assert wrong == {}


def test_model_package_imports_nothing_else_from_stemsplit() -> None:
    for path in sorted((SRC / "model").rglob("*.py")):
        inner = {
            n for n in _imports(path) if n.startswith("stemsplit") and not n.startswith("stemsplit.model")
        }
        assert inner == set(), f"{path.name} imports {inner}"


def test_only_the_cli_imports_typer_or_rich() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(n for n in _imports(path) if n.split(".")[0] in ("typer", "rich"))
        for path in _sources()
        if _part_of_file(path) != "cli"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_runtimes_are_imported_only_through_their_importers() -> None:
    """``openvino`` and ``onnxruntime`` are imported in one place each in ``src/``: the function that imports
    them without their telemetry (``cpu_backend.import_openvino``, ``import_onnxruntime``)."""
    where: dict[str, list[str]] = {}
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owner = {
            child: node.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for child in ast.walk(node)
        }  # innermost function last: ast.walk visits outer functions first
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("openvino", "onnxruntime"):
                    where.setdefault(name, []).append(f"{path.name}:{owner.get(node, '<module>')}")
    assert where == {
        "openvino": ["cpu_backend.py:import_openvino"],
        "onnxruntime": ["cpu_backend.py:import_onnxruntime"],
    }


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


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}\nprint(' '.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("module", "banned"),
    [
        ("stemsplit.cli", "torch"),
        ("stemsplit", "torch"),
        ("stemsplit.weights.download", "torch"),
        ("stemsplit.weights.registry", "torch"),
        ("stemsplit.pipeline", "typer"),
        ("stemsplit.pipeline", "rich"),
        ("stemsplit.separator", "rich"),
        ("stemsplit.cli", "ray"),
        ("stemsplit.player", "torch"),
        ("stemsplit.player", "typer"),
        ("stemsplit.pipeline", "ray"),
        ("stemsplit.distributed", "ray"),
    ],
)
def test_importing_a_module_does_not_import(module: str, banned: str) -> None:
    loaded = _modules_after_import(module)
    assert module in loaded
    assert not {m for m in loaded if m == banned or m.startswith(banned + ".")}


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


RESOLVERS = {"resolve_device", "resolve_devices", "choose_precision", "resolve_dtype", "resolve_cpu_backend",
             "compile_choice"}  # fmt: skip
# Where those may be called: their own modules, the one place a batch's compute is resolved, and doctor, which
# reports what the CPU would do besides the device a run picks.
RESOLVING = {
    "inference/devices.py",
    "inference/cpu_backend.py",
    "inference/compute.py",
    "cli/doctor/checks.py",
}


def _called(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_how_a_batch_computes_is_resolved_in_one_place() -> None:
    """Device, precision, CPU backend and compile decision are resolved by ``inference/compute.py`` (once per
    batch); runners, the pipeline, the library and Ray workers read the resulting ``Compute``."""
    offenders = {
        f"{path.relative_to(SRC)}: {sorted(_called(path) & RESOLVERS)}"
        for path in _sources()
        if path.relative_to(SRC).as_posix() not in RESOLVING and _called(path) & RESOLVERS
    }
    assert not offenders
