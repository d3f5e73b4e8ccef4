"""Track normalisation statistics, exact in one pass over the whole track or streamed block by block.

The reference (``demucs.api.Separator.separate_tensor`` in 4.1.0) normalises the whole track with the mean
and the unbiased standard deviation of its mono mix (the mean over channels), plus ``1e-8`` on the std, and
multiplies the stems back with the same two numbers (spec §4.2, §5.3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["STD_EPSILON", "RunningStats", "TrackStats", "stats_from_blocks", "track_stats"]

STD_EPSILON = 1e-8
"""Added to the track's standard deviation, as ``demucs.api`` 4.1.0 does."""


@dataclass(frozen=True)
class TrackStats:
    """Normalisation statistics of one track.

    Attributes:
        mean: mean of the mono mix (float32 scalar tensor, audio units).
        std: unbiased std of the mono mix plus :data:`STD_EPSILON` (float32 scalar tensor, > 0).
        frames: samples per channel seen (used only as a progress hint by the engine).
    """

    mean: torch.Tensor
    std: torch.Tensor
    frames: int

    def normalise(self, block: torch.Tensor) -> torch.Tensor:
        """``(block - mean) / std`` in float32; ``block`` is (..., n)."""
        return (block - self.mean) / self.std

    def denormalise(self, block: torch.Tensor) -> torch.Tensor:
        """``block * std + mean`` in float32 (the inverse of :meth:`normalise`)."""
        return block * self.std + self.mean


def _make(mean: float | torch.Tensor, std: float | torch.Tensor, frames: int) -> TrackStats:
    m = torch.as_tensor(mean, dtype=torch.float32)
    s = torch.as_tensor(std, dtype=torch.float32)
    return TrackStats(mean=m, std=s, frames=frames)


def track_stats(wav: torch.Tensor) -> TrackStats:
    """Statistics of a whole track held in memory, computed exactly as the reference does (float32 torch).

    Args:
        wav: (C, T) float32 audio.

    Returns:
        The mono mix's mean and ``std + 1e-8``. A track with fewer than 2 samples gets ``std = 1e-8``
        (the reference would produce NaN).
    """
    if wav.dim() != 2:
        raise ValueError(f"expected a (channels, samples) tensor, got shape {tuple(wav.shape)}")
    mono = wav.float().mean(0)  # (T,)
    if mono.numel() < 2:
        mean = mono.mean() if mono.numel() else torch.zeros(())
        return _make(mean, STD_EPSILON, int(mono.numel()))
    return _make(mono.mean(), mono.std() + STD_EPSILON, int(mono.numel()))


class RunningStats:
    """Streaming mean and unbiased variance of the mono mix, merged block by block in float64.

    Feed (C, n) blocks (torch or numpy) with :meth:`update`, then read :meth:`result`. The mono mix of each
    block is formed in float32 like the reference; sums use Chan's parallel update in float64, so the
    result agrees with :func:`track_stats` to float32 rounding whatever the block sizes.
    """

    def __init__(self) -> None:
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, block: torch.Tensor | np.ndarray) -> None:
        """Add one (C, n) block of audio."""
        t = torch.as_tensor(block)
        if t.dim() != 2:
            raise ValueError(f"expected a (channels, samples) block, got shape {tuple(t.shape)}")
        n = int(t.shape[-1])
        if n == 0:
            return
        mono = t.float().mean(0).double()  # (n,)
        b_mean = float(mono.mean())
        b_m2 = float(((mono - b_mean) ** 2).sum())
        total = self._n + n
        delta = b_mean - self._mean
        self._mean += delta * n / total
        self._m2 += b_m2 + delta * delta * self._n * n / total
        self._n = total

    def result(self) -> TrackStats:
        """The statistics of everything seen so far (``std = 1e-8`` for fewer than 2 samples)."""
        if self._n < 2:
            return _make(self._mean, STD_EPSILON, self._n)
        std = math.sqrt(self._m2 / (self._n - 1))
        return _make(self._mean, std + STD_EPSILON, self._n)


def stats_from_blocks(blocks: Iterable[torch.Tensor | np.ndarray]) -> TrackStats:
    """One cheap pass over a block reader: the track's :class:`TrackStats` without holding the track."""
    running = RunningStats()
    for block in blocks:
        running.update(block)
    return running.result()
