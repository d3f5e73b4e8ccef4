"""Pure planners for chunked inference: window offsets, padding, cross-fade weights and shift delays.

Nothing here touches a model or keeps state; every function returns small immutable values (or a fresh
tensor of weights), so the overlap-add loop in :mod:`stemsplit.inference.engine` is the only stateful part.

Conventions (``htdemucs-spec.md`` §4.1): a track of ``length`` samples is cut into windows starting at
``range(0, length, stride)`` with ``stride = int((1 - overlap) * segment)``. A window keeps ``min(segment,
length - offset)`` output samples (its *chunk*). A model with a fixed window (HT Demucs) always sees
``segment`` samples: a short (last) chunk is centred in a ``segment``-long read that takes **real audio on
its left** and zeros past the end of the track (``start = offset - (segment - chunk) // 2``). A model that
takes any length (Hybrid Demucs, which has no ``valid_length`` in the reference) sees the chunk itself.
Outputs are multiplied by the first ``chunk`` entries of the triangle weights, summed, and divided by the
summed weights.

With ``shifts`` the track is delayed by ``delay`` zero samples (a *lane*), separated, and the first ``delay``
output samples are dropped; lanes use their own timeline, ``lane_position = track_position + delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

__all__ = [
    "WindowPlan",
    "draw_shift_delays",
    "plan_lane",
    "plan_window",
    "stride_samples",
    "triangle_weights",
    "window_count",
]


@dataclass(frozen=True)
class WindowPlan:
    """One model window in a lane's timeline (all values in samples).

    Attributes:
        offset: first output sample the window contributes to.
        length: how many output samples it contributes (``1 <= length <= segment``).
        read_start: first input sample the model sees; for a fixed window ``offset - (segment - length) // 2``,
            so it is negative or before ``offset`` only for a short window (real left context, zeros before 0).
        size: input samples the model sees: ``segment`` for a fixed window, else ``length``.
    """

    offset: int
    length: int
    read_start: int
    size: int

    @property
    def trim(self) -> int:
        """Samples to drop from the left of the model's ``size``-long output (``offset - read_start``)."""
        return self.offset - self.read_start


def stride_samples(segment: int, overlap: float) -> int:
    """Hop between window starts: ``int((1 - overlap) * segment)``, as the reference computes it.

    Args:
        segment: window length in samples (> 0).
        overlap: fraction of a window shared with the next one, ``0 <= overlap < 1``.

    Raises:
        ValueError: if ``segment < 1``, ``overlap`` is outside ``[0, 1)``, or the stride rounds to 0.
    """
    if segment < 1:
        raise ValueError(f"segment must be at least 1 sample, got {segment}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = int((1 - overlap) * segment)
    if stride < 1:
        raise ValueError(f"overlap {overlap} leaves no stride for a {segment}-sample window")
    return stride


def plan_window(offset: int, lane_length: int, segment: int, *, fixed: bool = True) -> WindowPlan:
    """Plan the window that starts at ``offset`` in a lane of ``lane_length`` samples.

    Args:
        offset: window start, ``0 <= offset < lane_length``.
        lane_length: samples in the lane (track length plus the lane's delay).
        segment: window length in samples.
        fixed: the model always sees ``segment`` samples (a short window is centred with context); False:
            a short window is run at its own length.
    """
    assert 0 <= offset < lane_length, f"offset {offset} outside a lane of {lane_length} samples"
    length = min(segment, lane_length - offset)
    if not fixed:
        return WindowPlan(offset=offset, length=length, read_start=offset, size=length)
    return WindowPlan(offset=offset, length=length, read_start=offset - (segment - length) // 2, size=segment)


def window_count(lane_length: int, stride: int) -> int:
    """Number of windows in a lane: ``len(range(0, lane_length, stride))``."""
    return len(range(0, lane_length, stride))


def plan_lane(lane_length: int, segment: int, stride: int, *, fixed: bool = True) -> tuple[WindowPlan, ...]:
    """All windows of a lane of known length, in offset order (empty for an empty lane)."""
    return tuple(plan_window(o, lane_length, segment, fixed=fixed) for o in range(0, lane_length, stride))


def triangle_weights(segment: int) -> torch.Tensor:
    """The linear cross-fade ``[1, 2, …, segment//2, segment - segment//2, …, 2, 1] / max`` as float32.

    Computed as the reference does (integer ramp divided by its maximum), so the values are bit-identical.

    Returns:
        (segment,) float32 tensor on the CPU, values in ``(0, 1]``.
    """
    half = segment // 2
    ramp = torch.cat([torch.arange(1, half + 1), torch.arange(segment - half, 0, -1)])  # (segment,) int64
    return ramp / ramp.max()


def draw_shift_delays(shifts: int, max_shift: int, rng: random.Random) -> tuple[int, ...]:
    """Delays (in samples) for ``shifts`` randomly shifted passes; ``(0,)`` when ``shifts == 0``.

    Each pass draws ``offset = rng.randint(0, max_shift)`` and delays the track by ``max_shift - offset``
    zero samples, the reference's shift trick (spec §4.1) with an explicit generator instead of the global
    ``random`` module.
    """
    if shifts < 0:
        raise ValueError(f"shifts must be >= 0, got {shifts}")
    if shifts == 0:
        return (0,)
    return tuple(max_shift - rng.randint(0, max_shift) for _ in range(shifts))
