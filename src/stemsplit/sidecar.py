"""The ``stemsplit.json`` written beside a track's stems, and the check that lets a re-run skip the track.

A track counts as finished only when its sidecar exists, says the stems were made by the same model
weights with the same settings, lists exactly the stems now asked for, and every stem file is there with
the size recorded when it was written. The sidecar is written (atomically) only after every stem has been
renamed into place, so a run killed at any moment leaves a track that is redone, never one that is
wrongly skipped.
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
        weights_id: the weights' identity (see :class:`stemsplit.loading.ModelInfo`).
        settings: every option that changes the output files (JSON-able).
    """

    model: str
    weights_id: str
    settings: Mapping[str, Any]


def write_sidecar(
    path: Path, provenance: Provenance, stems: Mapping[str, Path], extra: Mapping[str, Any]
) -> None:
    """Record how the stems were made; written to a temporary name, then renamed into place."""
    record = {
        "format": FORMAT,
        "stemsplit_version": __version__,
        "model": provenance.model,
        "weights": provenance.weights_id,
        "settings": dict(provenance.settings),
        "stems": {stem: {"file": file.name, "bytes": file.stat().st_size} for stem, file in stems.items()},
        **extra,
    }
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        temp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def is_complete(path: Path, provenance: Provenance, stems: Mapping[str, Path]) -> bool:
    """Whether the stems at ``stems`` were fully written by the same model and settings."""
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
    recorded = record.get("stems")
    if not isinstance(recorded, dict) or set(recorded) != set(stems):
        return False
    for stem, file in stems.items():
        entry = recorded[stem]
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
