"""Where each stem goes: the ``--filename`` template, stem selection and name collisions.

The default layout is demucs-compatible: ``<out>/{model}/{track}/{stem}.{ext}``. Placeholders:
``{model}`` model name, ``{track}`` input file name without its extension, ``{trackext}`` that extension
(without the dot), ``{stem}`` stem name, ``{ext}`` output format. A ``stem.mp4`` holds every stem of a
track in one file, so its template has no ``{stem}``; its default is ``<out>/{model}/{track}.{ext}``
(``separated/htdemucs/song.stem.mp4``), with the sidecar beside it as ``{track}.stemsplit.json``.

One rule decides ``{track}``: it is the first of ``name``, ``name (ext)``, ``name (2)``, ``name (3)`` …
(``name`` the file's name without its extension, ``ext`` that extension) that no other track holds. A
name is held by another input of the same run (earlier in the list), or by stems on disk whose
``stemsplit.json`` records another track: another file with other content (see
:func:`stemsplit.pipeline.sidecar.made_from_other_input`). So the same file, a copy of it, or the file
moved or renamed finds its stems again, and a different song with the same name never replaces them.
"""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stemsplit._paths import nearest_existing
from stemsplit.errors import InvalidOptionError

DEFAULT_TEMPLATE = "{model}/{track}/{stem}.{ext}"
STEM_FILE_TEMPLATE = "{model}/{track}.{ext}"
"""The default template of ``--format stem.mp4`` (one file per track)."""
PLACEHOLDERS = frozenset({"model", "track", "trackext", "stem", "ext"})
SIDECAR_NAME = "stemsplit.json"


def check_template(template: str, *, stem_file: bool = False) -> str:
    """Validate a ``--filename`` template (``stem_file``: for ``--format stem.mp4``).

    Raises:
        InvalidOptionError: unknown or malformed placeholders, no ``{stem}`` (stems would overwrite each
            other), a ``{stem}`` in a stem file's template (one file holds every stem), or an absolute
            path / ``..`` (outputs must stay inside ``--out``).
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise InvalidOptionError(
            f"--filename {template!r} is malformed ({err})", option="--filename"
        ) from err
    unknown = fields - PLACEHOLDERS
    if unknown:
        raise InvalidOptionError(
            f"--filename {template!r} uses unknown placeholder {{{sorted(unknown)[0]}}}; "
            f"use {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}",
            option="--filename",
        )
    if stem_file and "stem" in fields:
        raise InvalidOptionError(
            f"--filename {template!r}: a stem.mp4 holds every stem of a track, so its template has no "
            f"{{stem}}; use for example {STEM_FILE_TEMPLATE!r}",
            option="--filename",
        )
    if not stem_file and "stem" not in fields:
        raise InvalidOptionError(
            f"--filename {template!r} has no {{stem}}, so every stem would get the same name",
            option="--filename",
        )
    if Path(template).is_absolute() or ".." in Path(template).parts:
        raise InvalidOptionError(f"--filename {template!r} must stay inside --out", option="--filename")
    return template


@dataclass(frozen=True)
class TrackOutputs:
    """The files one input will produce.

    Attributes:
        track: the ``{track}`` value used (after any collision suffix).
        stems: stem name → output path, in output order.
        sidecar: the ``stemsplit.json`` that records how they were made (for resuming batches).
    """

    track: str
    stems: Mapping[str, Path]
    sidecar: Path


def _render(
    template: str, out_dir: Path, model: str, track: str, trackext: str, stems: Sequence[str], ext: str
) -> dict[str, Path]:
    return {
        stem: out_dir / template.format(model=model, track=track, trackext=trackext, stem=stem, ext=ext)
        for stem in stems
    }


def _sidecar(template: str, stems: Mapping[str, Path], track: str) -> Path:
    first = next(iter(stems.values()))
    # One folder per track (the default): a plain stemsplit.json; otherwise one sidecar per track.
    per_track_folder = "{track}" in str(Path(template).parent)
    return first.parent / (SIDECAR_NAME if per_track_folder else f"{track}.{SIDECAR_NAME}")


def plan_outputs(
    inputs: Sequence[Path],
    *,
    out_dir: Path,
    template: str,
    models: Sequence[str],
    stems: Sequence[str],
    ext: str,
    owned_by_other: Callable[[Path, Path], bool] | None = None,
) -> list[TrackOutputs]:
    """Output paths for every input, in input order, with collisions resolved.

    Args:
        inputs: the input files.
        out_dir: ``--out``.
        template: a template accepted by :func:`check_template`.
        models: ``{model}`` of each input (the model its stems come from).
        stems: the names of the files to write, in order: the stems, or one name for a stem file.
        ext: ``{ext}`` (``wav``, ``flac``, ``mp3`` or ``stem.mp4``).
        owned_by_other: ``(sidecar, input) -> bool``: whether existing stems belong to another input
            (see :func:`stemsplit.pipeline.sidecar.made_from_other_input`); such names are passed over like
            names taken in this batch. Not asked when the template has no ``{track}`` (no other name
            exists). None: files on disk are not looked at.

    Returns:
        One :class:`TrackOutputs` per input.

    Raises:
        InvalidOptionError: two inputs would write the same stem files and the template has no
            ``{track}`` to tell them apart.
    """
    taken: set[str] = set()  # case-folded: macOS and Windows file systems ignore case
    planned = []
    for path, model in zip(inputs, models, strict=True):
        track, trackext = path.stem, path.suffix.lstrip(".")
        candidates = [track, f"{track} ({trackext})" if trackext else f"{track} (2)"]
        candidates += [f"{track} ({n})" for n in range(2, 10_000)]
        for name in candidates:
            files = _render(template, out_dir, model, name, trackext, stems, ext)
            sidecar = _sidecar(template, files, name)
            claimed = {str(p).casefold() for p in (*files.values(), sidecar)}
            # Renaming {track} cannot help when the template does not use it.
            fixed = files == _render(template, out_dir, model, name + " (x)", trackext, stems, ext)
            if claimed & taken:
                if fixed:
                    raise InvalidOptionError(
                        f"--filename {template!r}: {path} would overwrite the stems of another input; "
                        "put {track} in the template",
                        option="--filename",
                    )
                continue
            if not fixed and owned_by_other is not None and owned_by_other(sidecar, path):
                continue  # an earlier run's stems of another input
            taken |= claimed
            planned.append(TrackOutputs(name, files, sidecar))
            break
    return planned


# --- folders ---------------------------------------------------------------------------------------


def check_writable_folder(folder: Path, *, option: str, value: Path | None = None) -> None:
    """Refuse a folder that files cannot be written in, saying why; nothing is left behind.

    The folder need not exist: then its nearest existing ancestor must be a folder in which it can be
    created. Writing is tried for real (a temporary file, deleted at once), since permission bits say
    nothing of read-only mounts, ``/proc`` or root.

    Args:
        folder: the folder (``--out``, or the folder of ``--report``).
        option: the option that named it, for the message.
        value: the option's value, when it is not the folder itself (the ``--report`` file).

    Raises:
        InvalidOptionError: a file is in the way, or the folder cannot be created or written.
    """
    given = f"{option} {value if value is not None else folder}"
    base = nearest_existing(folder) or Path(folder.anchor or ".")
    if not base.is_dir():
        what = "is a file" if base == folder and value is None else f"{base} is a file"
        raise InvalidOptionError(f"{given}: {what}, not a folder; choose another path", option=option)
    try:
        handle, name = tempfile.mkstemp(prefix=".stemsplit-probe-", dir=base)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        what = f"cannot write in {folder}" if base == folder else f"cannot create {folder} in {base}"
        raise InvalidOptionError(
            f"{given}: {what} ({reason}); choose a folder you can write to", option=option
        ) from err
    os.close(handle)
    Path(name).unlink(missing_ok=True)


@contextmanager
def folders_removed_unless_finished(outputs: TrackOutputs) -> Iterator[None]:
    """Remove the folders that a track's files create when the track does not finish.

    The folders of ``outputs`` that do not exist on entry are noted; when the block is left by an
    exception (a failure, Ctrl-C), those of them left empty are removed, deepest first, and the exception
    goes on. Folders that existed before, or that hold anything, are never touched.
    """
    missing: set[Path] = set()
    for path in (*outputs.stems.values(), outputs.sidecar):
        for folder in path.parents:
            if folder.exists():
                break
            missing.add(folder)
    try:
        yield
    except BaseException:
        for folder in sorted(missing, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty (another track's files, or the user's), or already gone
        raise
