"""Chunked, batched, streamed inference over a model callable (windows, overlap-add, shifts, bags, devices).

Modules, one job each:

* :mod:`~stemsplit.inference.planner`: pure window / weight / shift planners.
* :mod:`~stemsplit.inference.stats`: track normalisation statistics (whole-track or streamed).
* :mod:`~stemsplit.inference.devices`: device, precision, batch-size and compile policy.
* :mod:`~stemsplit.inference.engine`: the one loop (:func:`separate_stream`, :func:`separate_tensor`).
"""

from __future__ import annotations

from stemsplit.inference.devices import (
    Precision,
    PrecisionChoice,
    choose_precision,
    resolve_device,
    resolve_dtype,
)
from stemsplit.inference.engine import (
    BatchRunner,
    EngineOptions,
    ModelBag,
    ModelFn,
    ProgressCallback,
    SeparationReport,
    separate_stream,
    separate_tensor,
)
from stemsplit.inference.planner import (
    WindowPlan,
    plan_lane,
    plan_window,
    stride_samples,
    triangle_weights,
)
from stemsplit.inference.stats import RunningStats, TrackStats, stats_from_blocks, track_stats

__all__ = [
    "BatchRunner",
    "EngineOptions",
    "ModelBag",
    "ModelFn",
    "Precision",
    "PrecisionChoice",
    "ProgressCallback",
    "RunningStats",
    "SeparationReport",
    "TrackStats",
    "WindowPlan",
    "choose_precision",
    "plan_lane",
    "plan_window",
    "resolve_device",
    "resolve_dtype",
    "separate_stream",
    "separate_tensor",
    "stats_from_blocks",
    "stride_samples",
    "track_stats",
    "triangle_weights",
]
