"""What a run is about to do and what it did, as data: the ``--dry-run`` rows and the ``--report`` document.

The command line renders both (:mod:`stemsplit.cli.separate`); they are built here so that the rules
they follow (which tracks a run would skip, what a report holds) are the pipeline's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stemsplit._version import __version__
from stemsplit.audio import AudioInfo, fold_sources
from stemsplit.errors import AudioFileNotFoundError
from stemsplit.pipeline.batch import Batch, triage
from stemsplit.pipeline.inputs import failure_message
from stemsplit.pipeline.options import SeparationOptions
from stemsplit.pipeline.results import NullBatchReporter, TrackResult, summarise
from stemsplit.pipeline.sidecar import derivable_subset
from stemsplit.weights import registry


def dry_run_rows(batch: Batch, options: SeparationOptions) -> list[dict[str, Any]]:
    """One JSON-able row per input of a planned batch, in input order: what a real run would do with it.

    Each row has ``input`` and ``action``: ``separate``, ``skip (complete)`` (by the run's own rule,
    :func:`~stemsplit.pipeline.batch.triage`), ``keep (on disk)`` (fewer ``--stems`` than a run made, kept
    without separating), ``not found`` or ``cannot decode``. A readable input adds
    ``model``, ``duration_s``, ``samplerate``, ``channels``, ``codec`` and ``outputs`` (stem → path); an
    unreadable one ``error`` (its message names the file).
    """
    skipped: set[int] = set()

    def settled(index: int, result: TrackResult) -> None:
        if result.status == "skipped":
            skipped.add(index)

    groups = triage(batch, options, NullBatchReporter(), settled, derive=False)
    rows = []
    for index, (path, probed, outputs) in enumerate(batch.tracks):
        row: dict[str, Any] = {"input": str(path)}
        if isinstance(probed, AudioInfo):
            action = "skip (complete)" if index in skipped else "separate"
            if action == "separate" and outputs is not None and outputs.sidecar.is_file():
                provenance = groups[batch.picks[index]].provenance
                if derivable_subset(outputs.sidecar, provenance, outputs.stems, path):
                    action = "keep (on disk)"
            row.update(
                action=action,
                model=batch.model_of(index).name,
                duration_s=probed.duration_s,
                samplerate=probed.samplerate,
                channels=probed.channels,
                codec=probed.codec,
                outputs={k: str(v) for k, v in (outputs.stems if outputs else {}).items()},
            )
        else:
            action = "not found" if isinstance(probed, AudioFileNotFoundError) else "cannot decode"
            row.update(action=action, error=failure_message(probed))
        rows.append(row)
    return rows


def folded_sources(batch: Batch) -> list[str]:
    """The model's sources that a stem file mixes into its ``other`` stem (a 6-stem model's guitar and
    piano); empty unless the batch writes stem files."""
    if not batch.plan.stem_file:
        return []
    return [s for s in fold_sources(batch.plan.computed)["other"] if s != "other"]


def deeper_inputs(batch: Batch, options: SeparationOptions) -> list[tuple[Path, int]]:
    """The readable inputs stored as integers with more bits per sample than the stems will have (a 24-bit
    FLAC written as 16-bit WAV), each with its bit depth; empty for formats without a bit depth. Float
    inputs (``pcm_f32``: a DAW's or another tool's intermediate files) are not counted."""
    written = options.output_settings()["bit_depth"]
    if written not in ("16", "24"):  # none (lossy), or 32-bit float: nothing is lost
        return []
    return [
        (path, probed.bit_depth)
        for path, probed, _ in batch.tracks
        if isinstance(probed, AudioInfo)
        and probed.bit_depth is not None
        and probed.bit_depth > int(written)
        and not probed.codec.startswith("pcm_f")
    ]


def model_label(options: SeparationOptions) -> str:
    """The model as the user named it; ``auto`` with its rule."""
    if options.model != registry.AUTO:
        return options.model
    limit = registry.LONG_TRACK_S
    when = f"{limit / 60:g} min" if limit % 60 == 0 else f"{limit:g} s"
    return f"auto ({registry.DEFAULT_MODEL} under {when}, {registry.LONG_TRACK_MODEL} from {when})"


def report_document(
    batch: Batch, options: SeparationOptions, results: Sequence[TrackResult]
) -> dict[str, Any]:
    """The ``--report`` document of a run: version, model(s), settings, counts and every track's result."""
    settings = asdict(options)
    settings["out_dir"] = str(options.out_dir)
    described = [
        {"name": m.name, "weights": m.weights_id, "path": str(m.path) if m.path else None}
        for m in batch.models
    ]
    return {
        "stemsplit_version": __version__,
        # One model, or with --model auto the ones it picks from (each track's is in tracks[].model).
        "model": described[0] if len(described) == 1 else {"name": options.model, "choices": described},
        "settings": settings,
        "summary": dict(summarise(results)),
        "tracks": [r.to_dict() for r in results],
    }


def write_report(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON at ``path``, atomically (a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    try:
        temp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
