"""Check that a Python environment has every module ``benchmarks/gpu_check.sh`` uses (``gpu_wheels.sh`` runs it).

Run it with the GPU image's Python (3.12) where the carried wheels are installed. Modules that do not need
torch are imported for real. Modules that do (stemsplit, demucs, julius, the test and benchmark helpers)
are imported for real when torch is there (the GPU machine); where it is not (a throwaway venv on a
machine without the GPU image), their module-level imports are followed statically (every file the run
loads, through the package's own imports) and each outside module they name must be importable (``torch``
itself excepted: the image has it). Prints what it checked; exits 1 naming whatever is missing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_FREE = (
    "soundfile", "soxr", "av", "platformdirs", "mutagen", "lameenc", "sphn", "numpy", "yaml", "typer", "rich",
    "requests", "safetensors", "pytest", "hypothesis", "einops", "tqdm",
)  # fmt: skip
"""Outside modules the run imports that do not need torch (the wheels' and the image's)."""
NEEDS_TORCH = (
    "stemsplit.cli.app", "demucs.separate", "demucs.htdemucs", "demucs.hdemucs",
    "demucs.apply", "julius", "checkpoints", "engine_models", "separation_helpers", "conftest", "test_cuda",
    "bench_engine", "bench_folder", "_busy_probe",
)  # fmt: skip
"""What gpu_check.sh runs or imports that needs torch: the commands, the reference, tests and benchmarks."""
TRACED = ("stemsplit", "demucs", "julius", "audio_fixtures", *NEEDS_TORCH[6:])
"""Top-level names whose files are followed (the rest must be importable as they are)."""
IMAGE = ("torch",)
"""What the GPU image brings that a check without it cannot import."""


def module_file(name: str, path: list[str]) -> Path | None:
    """The file of module ``name`` on ``path`` without importing anything."""
    parts = name.split(".")
    for entry in path:
        base = Path(entry, *parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def imports_of(file: Path, name: str) -> set[str]:
    """The modules ``file`` (module ``name``) imports when it is loaded: module-level and class-level
    statements, not function bodies, not those guarded by ``except ImportError``."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule, or a name
            elif isinstance(node, ast.Try):
                optional = any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                    for h in node.handlers
                )
                if not optional:
                    visit(node.body)
                visit(node.finalbody)
            elif isinstance(node, (ast.If, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(ast.parse(file.read_text(encoding="utf-8")).body)
    return found


def static_closure(roots: tuple[str, ...], path: list[str]) -> tuple[int, set[str], set[str]]:
    """Follow the traced modules' imports from ``roots``: (files read, outside top-level names, missing
    traced modules)."""
    todo, seen, outside, missing = list(roots), set(), set(), set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top not in TRACED:
            outside.add(top)
            continue
        file = module_file(name, path)
        if file is None:
            parent = name.rpartition(".")[0]
            if parent and module_file(parent, path) is not None:
                continue  # ``from package import name``: a name, not a module
            missing.add(name)
            continue
        files.add(file)
        for parent in _parents(name):
            todo.append(parent)
        todo.extend(imports_of(file, name))
    return len(files), outside, missing


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def main() -> int:
    path = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks"), *sys.path]
    sys.path[:0] = path[:3]
    problems: list[str] = []
    for name in TORCH_FREE:
        try:
            importlib.import_module(name)
        except Exception as err:
            problems.append(f"{name}: {type(err).__name__}: {err}")
    print(f"imported {len(TORCH_FREE)} modules that do not need torch")
    if importlib.util.find_spec("torch") is not None:
        for name in NEEDS_TORCH:
            try:
                importlib.import_module(name)
            except Exception as err:
                problems.append(f"{name}: {type(err).__name__}: {err}")
        print(f"imported {len(NEEDS_TORCH)} modules that need torch (torch is here)")
    else:
        files, outside, missing = static_closure(NEEDS_TORCH, path)
        problems += [f"{name}: no such module among the traced packages" for name in sorted(missing)]
        for top in sorted(outside - set(IMAGE)):
            if top != "__future__" and importlib.util.find_spec(top) is None:
                problems.append(f"{top}: imported by the run (statically, without torch here), not installed")
        print(
            f"no torch here: followed the imports of {files} files that need it; the outside modules they load, "
            f"{', '.join(sorted(outside))}, are installed (torch excepted: the GPU image has it)"
        )
    for problem in problems:
        print(f"MISSING {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
