"""Turn the command line's PATHS into a list of audio files: files, folders (recursive) and globs.

Globs are expanded here, so ``stemsplit "music/**/*.flac"`` works in shells that do not expand them
(Windows cmd, quoted arguments). Folders are searched recursively for files with an audio extension
(case-insensitive); the output folder is skipped when it lies inside an input folder. A path that names
nothing is kept as a *missing* input so the batch can report it and go on.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".alac", ".aif", ".aiff",
    ".aifc", ".wma", ".webm", ".mka", ".mp4", ".m4v", ".mov", ".mkv", ".wv", ".ape", ".caf", ".w64", ".au",
})  # fmt: skip

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    """One input of a batch.

    Attributes:
        path: the file as the user can read it (relative paths stay relative).
        argument: the command-line argument it came from.
        missing: True when the argument named no existing file, folder or glob match.
    """

    path: Path
    argument: str
    missing: bool = False


def is_audio_name(path: Path) -> bool:
    """Whether the file name has an audio (or audio-in-video) extension, case-insensitively."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def _walk(folder: Path, skip: Path | None) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not (skip is not None and _inside(here / d, skip)))
        for name in sorted(files):
            path = here / name
            if is_audio_name(path):
                yield path


def discover_inputs(arguments: Sequence[str], out_dir: Path | None = None) -> list[InputFile]:
    """Expand files, folders and globs into audio files, in argument order, without duplicates.

    Args:
        arguments: the PATHS the user gave.
        out_dir: the output folder, skipped inside input folders (so a re-run does not separate stems).

    Returns:
        One entry per distinct file, plus one ``missing`` entry per argument that matched nothing.
        A file named explicitly is kept whatever its extension (the decoder decides); files found in
        folders or by globs are filtered by extension.
    """
    skip = out_dir.resolve() if out_dir is not None else None
    seen: set[Path] = set()
    found: list[InputFile] = []

    def add(path: Path, argument: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(InputFile(path, argument))

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            for file in _walk(path, skip):
                add(file, argument)
        elif path.exists():
            add(path, argument)
        elif _GLOB_CHARS & set(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file() and is_audio_name(Path(m))]
            for folder in (Path(m) for m in matches if Path(m).is_dir()):
                files.extend(_walk(folder, skip))
            files = [f for f in files if skip is None or not _inside(f, skip)]
            if not files:
                found.append(InputFile(path, argument, missing=True))
            for file in files:
                add(file, argument)
        else:
            found.append(InputFile(path, argument, missing=True))
    return found
