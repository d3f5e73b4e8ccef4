"""The ``stemsplit.json`` written beside a track's stems, and the check that lets a re-run skip the track.

A track counts as finished only when its sidecar exists, says the stems were made from the same input
(same bytes: size and modification time, or else the SHA-256 of its content) by the same model weights
with the same settings, lists exactly the stems now asked for, and every stem file is there with the size
recorded when it was written. The sidecar is written (atomically) only after every stem has been
renamed into place, so a run killed at any moment leaves a track that is redone, never one that is
wrongly skipped.

The sidecar also says whose stems they are: the input's resolved absolute path and content. A track is
its file or its content: the same file (by any path, even edited since) or the same bytes (a copy, a
moved or renamed file) is the same track and finds its stems again; anything else is another track. A
later run for another track with the same name (``A/01.flac`` then ``B/01.flac``) sees that and writes
elsewhere (see :func:`made_from_other_input`) instead of replacing them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stemsplit._version import __version__

FORMAT = 1


@dataclass(frozen=True)
class Provenance:
    """What determines a track's stems.

    Attributes:
        model: the model name.
        weights_id: the weights' identity (see :class:`stemsplit.weights.loading.ModelInfo`).
        settings: every option that changes the output files (JSON-able).
    """

    model: str
    weights_id: str
    settings: Mapping[str, Any]


def source_identity(source: Path) -> dict[str, Any]:
    """What identifies an input's content: size, modification time and SHA-256."""
    from stemsplit.weights.download import sha256_file

    stat = source.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(source)}


def _same_source(recorded: object, source: Path) -> bool:
    """Whether ``source`` still has the recorded content (hashing only when its mtime changed)."""
    if not isinstance(recorded, dict):
        return False
    try:
        stat = source.stat()
        if stat.st_size != recorded.get("bytes"):
            return False
        if stat.st_mtime_ns == recorded.get("mtime_ns"):
            return True
        from stemsplit.weights.download import sha256_file

        return sha256_file(source) == recorded.get("sha256")
    except OSError:
        return False


def _same_file(recorded: Path, source: Path) -> bool:
    """Whether two paths name the same file (resolved; or, both existing, the same file on disk)."""
    try:
        return recorded.resolve() == source.resolve() or os.path.samefile(recorded, source)
    except (OSError, RuntimeError):  # a path that does not exist, or a symlink loop
        return False


def made_from_other_input(path: Path, source: Path) -> bool:
    """Whether the sidecar at ``path`` records the stems of another track than ``source``.

    The same track is the same file (by any path, even edited since: its stems are redone in place) or
    the same content (a copy elsewhere, or the file moved or renamed: its stems are found again, and
    skipped when complete, which is checked against the content too). Only another file with other
    content is another track. False when there is no readable sidecar or it records no input path
    (nothing says the stems are someone else's).
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    entry = record.get("input") if isinstance(record, dict) else None
    recorded = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(recorded, str) or not recorded:
        return False
    return not (_same_file(Path(recorded), source) or _same_source(entry, source))


def write_sidecar(
    path: Path, provenance: Provenance, stems: Mapping[str, Path], source: Path, extra: Mapping[str, Any]
) -> None:
    """Record how the stems were made; written to a temporary name, then renamed into place.

    Args:
        path: the sidecar file.
        provenance: model, weights and settings.
        stems: stem name → written file.
        source: the input the stems were made from (recorded as its resolved absolute path).
        extra: more JSON-able fields to record (informational).
    """
    record = {
        "format": FORMAT,
        "stemsplit_version": __version__,
        "input": {"path": str(source.resolve()), **source_identity(source)},
        "model": provenance.model,
        "weights": provenance.weights_id,
        "settings": dict(provenance.settings),
        "stems": {stem: {"file": file.name, "bytes": file.stat().st_size} for stem, file in stems.items()},
        **{k: v for k, v in extra.items() if k != "input"},
    }
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        temp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def is_complete(path: Path, provenance: Provenance, stems: Mapping[str, Path], source: Path) -> bool:
    """Whether the stems at ``stems`` were fully written from ``source`` by the same model and settings."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return False
    if (record.get("model"), record.get("weights"), record.get("settings")) != (
        provenance.model,
        provenance.weights_id,
        json.loads(json.dumps(dict(provenance.settings))),
    ):
        return False
    if not _same_source(record.get("input"), source):
        return False
    recorded = record.get("stems")
    if not isinstance(recorded, dict) or set(recorded) != set(stems):
        return False
    return _as_recorded(recorded, stems)


def _record_of(path: Path) -> dict[str, Any] | None:
    """The sidecar at ``path`` as a mapping, or None (none, unreadable, or another format)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


# The option behind each recorded setting, as a person would type it, and how its unset value reads.
_OPTIONS: dict[str, tuple[str, str]] = {
    "model": ("--model", ""),
    "weights": ("the model's weights", ""),
    "stems": ("--stems", "all"),
    "two_stems": ("--two-stems", "none"),
    "other_method": ("--other-method", "none"),
    "format": ("--format", ""),
    "bit_depth": ("--bit-depth", "none"),
    "mp3_bitrate": ("--mp3-bitrate", "none"),
    "samplerate": ("--sample-rate", "input"),
    "clip": ("--clip", ""),
    "segment": ("--segment", "the model's"),
    "overlap": ("--overlap", ""),
    "shifts": ("--shifts", ""),
    "seed": ("--seed", "none"),
    "precision": ("--precision", ""),
    "stem_codec": ("--stem-codec", "none"),
    "aac_bitrate": ("--aac-bitrate", "none"),
    "stem_names": ("--stem-names", "none"),
    "stem_colors": ("--stem-colors", "none"),
}


_DEPENDENT = frozenset({"other_method", "seed", "bit_depth", "mp3_bitrate", "stem_codec", "aac_bitrate",
                        "stem_names", "stem_colors"})  # fmt: skip
"""The settings recorded as None where they do not apply (``--other-method`` without ``--two-stems`` …)."""


def _shown(value: object, unset: str) -> str:
    if value is None:
        return unset
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def changed_settings(path: Path, provenance: Provenance) -> list[str]:
    """What differs between the stems the sidecar at ``path`` records and those ``provenance`` makes, each
    as ``--option old → new`` (the weights as a whole), in a fixed order; empty when there is no readable
    sidecar or nothing differs."""
    record = _record_of(path)
    if record is None:
        return []
    old = {"model": record.get("model"), "weights": record.get("weights")}
    old.update(record.get("settings") or {})
    new = {"model": provenance.model, "weights": provenance.weights_id}
    new.update(json.loads(json.dumps(dict(provenance.settings))))
    changes = []
    for key in sorted(set(old) | set(new), key=lambda k: list(_OPTIONS).index(k) if k in _OPTIONS else 99):
        if old.get(key) == new.get(key):
            continue
        if key in _DEPENDENT and (old.get(key) is None or new.get(key) is None):
            continue  # recorded only where it applies: its coming or going follows another change
        option, unset = _OPTIONS.get(key, (key, "none"))
        if key == "weights":
            changes.append("the model's weights changed")
        else:
            changes.append(f"{option} {_shown(old.get(key), unset)} → {_shown(new.get(key), unset)}")
    return changes


def superseded_files(path: Path, keep: Mapping[str, Path]) -> list[Path]:
    """The stem files the sidecar at ``path`` lists that a new run writing ``keep`` leaves behind.

    Only a file the sidecar records in its own folder, still of the recorded size (so, its stems' file),
    and not among ``keep`` counts; nothing else is ever named.
    """
    record = _record_of(path)
    stems = record.get("stems") if record is not None else None
    if not isinstance(stems, dict):
        return []
    kept = {p.resolve() for p in keep.values()}
    stale = []
    for entry in stems.values():
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name:
            continue  # a name with a folder in it is no name of ours
        file = path.parent / name
        try:
            if file.resolve() not in kept and file.is_file() and file.stat().st_size == entry.get("bytes"):
                stale.append(file)
        except OSError:
            continue
    return stale


def recorded_facts(path: Path) -> dict[str, Any]:
    """What the run that made the stems recorded of the input and of the run (``duration_s``,
    ``samplerate``, ``channels``, ``codec``, ``output_samplerate``, ``warnings``: a list of
    ``{"kind", "message"}``); empty for a sidecar written before they were recorded."""
    record = _record_of(path)
    facts = record.get("facts") if record is not None else None
    return facts if isinstance(facts, dict) else {}


def derivable_subset(path: Path, provenance: Provenance, stems: Mapping[str, Path], source: Path) -> bool:
    """Whether ``stems`` are already on disk, byte for byte what a run would write: the sidecar at ``path``
    records them from the same input, model, weights and settings but ``--stems`` (a run that kept more
    stems), in its own folder at their recorded sizes, and no clip gain was applied (one gain is shared by
    the stems a run writes, so fewer stems could get another). Not for ``--two-stems`` or stem files, whose
    files mix several stems."""
    record = _record_of(path)
    if record is None or (record.get("model"), record.get("weights")) != (
        provenance.model,
        provenance.weights_id,
    ):
        return False
    new = json.loads(json.dumps(dict(provenance.settings)))
    old = record.get("settings")
    if not isinstance(old, dict) or {k: v for k, v in old.items() if k != "stems"} != {
        k: v for k, v in new.items() if k != "stems"
    }:
        return False
    if new.get("two_stems") is not None or new.get("format") == "stem.mp4":
        return False
    if new.get("clip") == "rescale" and record.get("gain") != 1.0:
        return False
    recorded = record.get("stems")
    if not isinstance(recorded, dict) or not _same_source(record.get("input"), source):
        return False
    return all(file.parent == path.parent for file in stems.values()) and _as_recorded(recorded, stems)


def keep_subset(path: Path, provenance: Provenance, stems: Mapping[str, Path], source: Path) -> None:
    """Make the stems on disk that :func:`derivable_subset` accepts the track's result: the sidecar
    rewritten for ``stems`` (its facts and gain kept), then the stems it no longer lists removed."""
    record = _record_of(path) or {}
    stale = superseded_files(path, stems)
    write_sidecar(path, provenance, stems, source, {k: record[k] for k in ("gain", "facts") if k in record})
    for file in stale:
        file.unlink(missing_ok=True)


def _as_recorded(recorded: dict[str, Any], stems: Mapping[str, Path]) -> bool:
    """Whether each stem file is on disk under the name and with the size its sidecar entry records."""
    for stem, file in stems.items():
        entry = recorded.get(stem)
        try:
            if (
                not isinstance(entry, dict)
                or entry.get("file") != file.name
                or file.stat().st_size != entry.get("bytes")
            ):
                return False
        except OSError:
            return False
    return True
