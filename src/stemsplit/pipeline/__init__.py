"""From input paths to written stems: plan a batch, then run it track by track.

Modules, one job each:

* :mod:`~stemsplit.pipeline.options`: :class:`SeparationOptions` and the stems a run computes and writes.
* :mod:`~stemsplit.pipeline.inputs`: the command line's PATHS (files, folders, globs) → input files.
* :mod:`~stemsplit.pipeline.outputs`: output paths from the ``--filename`` template, collisions.
* :mod:`~stemsplit.pipeline.sidecar`: ``stemsplit.json`` beside the stems (what made them; resume).
* :mod:`~stemsplit.pipeline.results`: :class:`TrackResult`, warnings kept per track, progress protocol.
* :mod:`~stemsplit.pipeline.track`: one track's steps: decode once, separate, write atomically.
* :mod:`~stemsplit.pipeline.workers`: the threads that run a batch (decode ahead, device, write behind).
* :mod:`~stemsplit.pipeline.batch`: plan a batch before any work, run it, go on after a bad track.
* :mod:`~stemsplit.pipeline.report`: the ``--dry-run`` rows and the ``--report`` document, as data.

The pipeline never prints: it reports through :class:`BatchReporter` and returns :class:`TrackResult` s.
"""

from __future__ import annotations

from stemsplit.inference.compute import Compute
from stemsplit.pipeline.batch import (
    Batch,
    plan_batch,
    separate_batch,
    warn_compute,
)
from stemsplit.pipeline.options import (
    OtherMethod,
    SeparationOptions,
    StemPlan,
    check_segment,
    compute_for,
    engine_options,
    model_cache,
    plan_stems,
    plan_track_outputs,
    run_plan,
)
from stemsplit.pipeline.results import (
    NEAR_SILENT_DBFS,
    BatchInterrupted,
    BatchReporter,
    NullBatchReporter,
    Status,
    TrackResult,
    TrackWarning,
    collect_warnings,
    summarise,
    warning_kind,
)
from stemsplit.pipeline.track import separate_track

__all__ = [
    "NEAR_SILENT_DBFS",
    "Batch",
    "BatchInterrupted",
    "BatchReporter",
    "Compute",
    "NullBatchReporter",
    "OtherMethod",
    "SeparationOptions",
    "Status",
    "StemPlan",
    "TrackResult",
    "TrackWarning",
    "check_segment",
    "collect_warnings",
    "compute_for",
    "engine_options",
    "model_cache",
    "plan_batch",
    "plan_stems",
    "plan_track_outputs",
    "run_plan",
    "separate_batch",
    "separate_track",
    "summarise",
    "warn_compute",
    "warning_kind",
]
