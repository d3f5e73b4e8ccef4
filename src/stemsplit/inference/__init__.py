"""Chunked, batched, streamed inference over a model callable (windows, overlap-add, shifts, bags, devices).

Modules, one job each:

* :mod:`~stemsplit.inference.planner`: pure window / weight / shift planners.
* :mod:`~stemsplit.inference.stats`: track normalisation statistics (whole-track or streamed).
* :mod:`~stemsplit.inference.devices`: device, precision and batch-size rules, the process settings.
* :mod:`~stemsplit.inference.compute`: how a batch computes, resolved once (:class:`Compute`), and the
  compile policy.
* :mod:`~stemsplit.inference.accelerator`: whether a GPU runs this torch's kernels; GPU failures in words.
* :mod:`~stemsplit.inference.runner`: one device runner (models placed once, batches, precision, failures).
* :mod:`~stemsplit.inference.stream`: one track's windows and overlap-add state, on the device.
* :mod:`~stemsplit.inference.scheduler`: batches filled from the windows of several tracks in flight.
* :mod:`~stemsplit.inference.engine`: one track, streamed or in memory (:func:`separate_stream`,
  :func:`separate_tensor`), and the runner factory.
"""

from __future__ import annotations

from stemsplit.inference.compute import Compute, resolve_compute
from stemsplit.inference.devices import (
    Precision,
    PrecisionChoice,
    choose_precision,
    resolve_device,
    resolve_dtype,
)
from stemsplit.inference.engine import (
    EngineOptions,
    ModelBag,
    ModelFn,
    ProgressCallback,
    SeparationReport,
    bag_plan,
    make_runner,
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
from stemsplit.inference.runner import DeviceRunner
from stemsplit.inference.scheduler import Scheduler
from stemsplit.inference.stats import RunningStats, TrackStats, stats_from_blocks, track_stats
from stemsplit.inference.stream import HostBlock, TrackAudio, TrackStream

__all__ = [
    "Compute",
    "DeviceRunner",
    "EngineOptions",
    "HostBlock",
    "ModelBag",
    "ModelFn",
    "Precision",
    "PrecisionChoice",
    "ProgressCallback",
    "RunningStats",
    "Scheduler",
    "SeparationReport",
    "TrackAudio",
    "TrackStats",
    "TrackStream",
    "WindowPlan",
    "bag_plan",
    "choose_precision",
    "make_runner",
    "plan_lane",
    "plan_window",
    "resolve_compute",
    "resolve_device",
    "resolve_dtype",
    "separate_stream",
    "separate_tensor",
    "stats_from_blocks",
    "stride_samples",
    "track_stats",
    "triangle_weights",
]
