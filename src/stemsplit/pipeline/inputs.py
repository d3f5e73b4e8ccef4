"""Turn the command line's PATHS into a list of audio files: files, folders (recursive) and globs.

Globs are expanded here, so ``stemsplit "music/**/*.flac"`` works in shells that do not expand them
(Windows cmd, quoted arguments). Folders are searched recursively for files with an audio extension
(case-insensitive); hidden files and folders (names starting with ``.``: macOS ``._song.wav`` companions,
``.DS_Store``, ``.git``) are skipped, and so is the output folder when it lies inside an input folder.
A path that names nothing, a folder or glob that holds no audio file, and a subfolder that cannot be
listed, is kept as a *missing* input so the batch can report it and go on. Nothing here opens a file or
raises for one path: a symbolic link loop, a FIFO or a device named like audio is kept as an input, and
the probe says what it is.
"""

from __future__ import annotations

import glob
import os
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stemsplit import settings
from stemsplit.errors import InputError, StemsplitError

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".alac", ".aif", ".aiff",
    ".aifc", ".wma", ".webm", ".mka", ".mp4", ".m4v", ".mov", ".mkv", ".wv", ".ape", ".caf", ".w64", ".au",
})  # fmt: skip

_SHOWN_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".wma")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    """One input of a batch.

    Attributes:
        path: the file as the user can read it (relative paths stay relative).
        argument: the command-line argument it came from.
        missing: True when the argument gave no file: it names nothing, or (see ``no_audio``) a folder
            or glob matches with no audio file in them.
        no_audio: with ``missing``, ``"folder"`` or ``"glob"`` when the argument exists (a folder, or a
            glob with matches) but holds no audio file; None when it names nothing.
        unlisted: with ``missing``, why ``path`` (the argument, or a folder inside it) could not be looked
            at or listed.
    """

    path: Path
    argument: str
    missing: bool = False
    no_audio: Literal["folder", "glob"] | None = None
    unlisted: str | None = None


def is_audio_name(path: Path) -> bool:
    """Whether the file name has an audio (or audio-in-video) extension, case-insensitively."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def is_hidden_name(path: Path) -> bool:
    """Whether the name starts with ``.`` (hidden on Unix; macOS AppleDouble ``._*`` files are such names)."""
    return path.name.startswith(".")


def missing_reason(item: InputFile) -> str:
    """One line saying why a ``missing`` input gave no file, and what to do about it."""
    looked_for = ", ".join(_SHOWN_EXTENSIONS) + " and more, any letter case"
    if item.unlisted is not None:
        return (
            f"{item.path}: cannot be looked into ({item.unlisted}); check its permissions and those of the "
            "folders above it"
        )
    if item.no_audio == "folder":
        return (
            f"{item.argument}: no audio files in this folder or its subfolders (looked for {looked_for}; "
            "hidden files are skipped); name a file directly to try another type"
        )
    if item.no_audio == "glob":
        return (
            f"{item.argument}: the glob matches no audio file (looked for {looked_for}; hidden files are "
            "skipped); name a file directly to try another type"
        )
    return f"{item.argument}: no such file, folder or matching glob (check the path; quote paths with spaces)"


def unexpected_error(path: Path, err: BaseException, step: str) -> InputError:
    """The error an input fails with when ``step`` (``probing``, ``decoding`` …) it raised ``err``, which
    is not one of ours: one line naming the file and the exception's type (its traceback kept as
    ``detail`` under ``STEMSPLIT_DEBUG=1``)."""
    kind = type(err).__name__
    hint = "" if settings.debug() else "; set STEMSPLIT_DEBUG=1 for the traceback and report it"
    return InputError(
        f"{path}: internal error while {step} it ({kind}: {str(err).strip() or kind}){hint}",
        path=path,
        cause=kind,
        detail="".join(traceback.format_exception(err)).rstrip() if settings.debug() else None,
    )


def failure_message(err: StemsplitError) -> str:
    """What a failed input's result says: the error's one line, then under ``STEMSPLIT_DEBUG=1`` the
    traceback of an unexpected one."""
    detail = err.detail if isinstance(err, InputError) else None
    return f"{err}\n{detail}" if detail else str(err)


def _identity(path: Path) -> Path:
    """The path resolved, to tell duplicates apart; a path that cannot be resolved (a symbolic link loop)
    stands for itself, and its probe says what is wrong."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" before Python 3.13
        return Path(os.path.abspath(path))


def _inside(path: Path, folder: Path) -> bool:
    try:
        _identity(path).relative_to(folder)
    except ValueError:
        return False
    return True


def _walk(folder: Path, skip: Path | None, unlisted: list[tuple[Path, str]]) -> Iterable[Path]:
    """Audio files under ``folder`` (links to folders are not followed); subfolders that cannot be listed
    are appended to ``unlisted`` with the reason."""

    def failed(err: OSError) -> None:
        unlisted.append((Path(err.filename or folder), err.strerror or type(err).__name__))

    for root, dirs, files in os.walk(folder, onerror=failed):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not (is_hidden_name(Path(d)) or (skip is not None and _inside(here / d, skip)))
        )
        for name in sorted(files):
            path = here / name
            if is_audio_name(path) and not is_hidden_name(path):
                yield path


def discover_inputs(arguments: Sequence[str], out_dir: Path | None = None) -> list[InputFile]:
    """Expand files, folders and globs into audio files, in argument order, without duplicates.

    Args:
        arguments: the PATHS the user gave.
        out_dir: the output folder, skipped inside input folders (so a re-run does not separate stems).

    Returns:
        One entry per distinct file, plus one ``missing`` entry per argument that gave no file (it
        names nothing, or a folder or glob without audio files: ``no_audio``). A file named explicitly
        is kept whatever its extension or name (the decoder decides); files found in folders or by globs
        are filtered by extension, and hidden ones are skipped (a glob matches a hidden name only where
        the pattern spells out its leading ``.``, as in :mod:`glob`).
    """
    skip = _identity(out_dir) if out_dir is not None else None
    seen: set[Path] = set()
    found: list[InputFile] = []

    def add(path: Path, argument: str) -> None:
        key = _identity(path)
        if key not in seen:
            seen.add(key)
            found.append(InputFile(path, argument))

    for argument in arguments:
        unlisted: list[tuple[Path, str]] = []
        try:
            files = _expand(argument, skip, unlisted)
        except OSError as err:  # the argument cannot even be looked at (a folder above it is closed)
            files, unlisted = [], [(Path(argument), err.strerror or type(err).__name__)]
        for file in files:
            if isinstance(file, InputFile):
                found.append(file)
            else:
                add(file, argument)
        for folder, reason in unlisted:
            found.append(InputFile(folder, argument, missing=True, unlisted=reason))
    return found


def _expand(argument: str, skip: Path | None, unlisted: list[tuple[Path, str]]) -> list[Path | InputFile]:
    """The files one argument gives, or the ``missing`` input it is (folders that cannot be listed are
    appended to ``unlisted``)."""
    path = Path(argument)
    if path.is_dir():
        files = list(_walk(path, skip, unlisted))
        if not files and not unlisted:
            return [InputFile(path, argument, missing=True, no_audio="folder")]
        return list(files)
    if path.exists() or path.is_symlink():  # a link loop or a dangling link: the probe says which
        return [path]
    if _GLOB_CHARS & set(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        # Anything but a folder is kept (a FIFO or a device named like audio is reported by the probe).
        files = [Path(m) for m in matches if not Path(m).is_dir() and is_audio_name(Path(m))]
        for folder in (Path(m) for m in matches if Path(m).is_dir()):
            files.extend(_walk(folder, skip, unlisted))
        files = [f for f in files if skip is None or not _inside(f, skip)]
        if not files and not unlisted:
            return [InputFile(path, argument, missing=True, no_audio="glob" if matches else None)]
        return list(files)
    return [InputFile(path, argument, missing=True)]
