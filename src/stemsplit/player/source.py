"""Random access to a track's stems for the page: PCM at the browser's rate, part by part, and overviews.

The page asks for the stems in parts (:meth:`StemSource.pcm`), so a 60-minute set is never held whole by
either side. Stems libsndfile can seek in (wav, flac, mp3 …, stemsplit's own output) are read where they
lie; any other stem (a ``.stem.mp4`` track, an m4a …) is decoded once into the player's temporary folder
as float32 wav. A part at another rate than the track's is resampled with soxr from a slightly wider
source range whose ends fall on the two rates' common grid, so consecutive parts join sample for sample
as if the whole track had been resampled at once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from stemsplit.audio._common import MODEL_CHANNELS, FloatArray
from stemsplit.audio.info import probe
from stemsplit.audio.stemset import StemSet, read_stem

OVERVIEW_BUCKETS = 1200
"""Columns of a stem's waveform overview."""

MAX_PART_S = 30.0
"""The longest part :meth:`StemSource.pcm` gives (seconds)."""

_RESAMPLE_MARGIN = 4096  # source frames of context on each side of a resampled part (rounded up to the grid)
_READ_BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class _Readable:
    path: Path
    channels: int


class StemSource:
    """The stems of one track, readable anywhere at any rate.

    Args:
        stems: the track's stems.
        workdir: the player's own temporary folder (stems that cannot be sought are decoded into it).

    Raises:
        AudioDecodeError: a stem could not be decoded.
    """

    def __init__(self, stems: StemSet, workdir: Path) -> None:
        self.stems = stems
        self._files = [self._readable(i, workdir) for i in range(len(stems.stems))]
        self._overview: dict[str, list[list[float]]] | None = None
        self._overview_lock = threading.Lock()

    def _readable(self, index: int, workdir: Path) -> _Readable:
        stem = self.stems.stems[index]
        if stem.track is None:
            info = probe(stem.path)
            if info.backend == "soundfile" and info.samplerate == self.stems.samplerate:
                return _Readable(stem.path, info.channels)
        path = workdir / f"stem{index}.wav"
        with sf.SoundFile(path, "w", self.stems.samplerate, MODEL_CHANNELS, "FLOAT") as out:
            for block in read_stem(stem, self.stems.samplerate):
                out.write(block.T)
        return _Readable(path, MODEL_CHANNELS)

    def read(self, start: int, frames: int) -> FloatArray:
        """Frames ``[start, start + frames)`` of every stem at the track's rate, zeros outside the track.

        Returns:
            float32 ``(stems, 2, frames)``.
        """
        out = np.zeros((len(self._files), MODEL_CHANNELS, frames), dtype=np.float32)
        lo, hi = max(start, 0), min(start + frames, self.stems.frames)
        if hi <= lo:
            return out
        for k, readable in enumerate(self._files):
            with sf.SoundFile(readable.path) as handle:
                handle.seek(lo)
                data = handle.read(hi - lo, dtype="float32", always_2d=True)
            n = data.shape[0]
            if readable.channels == 1:
                out[k, :, lo - start : lo - start + n] = data[:, 0]
            else:
                out[k, :, lo - start : lo - start + n] = data[:, :MODEL_CHANNELS].T
        return out

    def grid(self, rate: int) -> tuple[int, int]:
        """``(p, q)``: ``p`` source frames last exactly as long as ``q`` frames at ``rate``, smallest such."""
        g = math.gcd(self.stems.samplerate, rate)
        return self.stems.samplerate // g, rate // g

    def frames_at(self, rate: int) -> int:
        """The track's length in frames at ``rate``."""
        return math.ceil(self.stems.frames * rate / self.stems.samplerate)

    def pcm(self, start: int, frames: int, rate: int) -> FloatArray:
        """Frames ``[start, start + frames)`` of every stem at ``rate`` (``start`` on the :meth:`grid`).

        Returns:
            float32 ``(stems, 2, n)``, ``n`` = ``frames`` cut at the track's end.

        Raises:
            ValueError: ``start`` is not a multiple of the grid's ``q``, or the part is too long.
        """
        p, q = self.grid(rate)
        if start % q or start < 0:
            raise ValueError(f"a part must start on a multiple of {q} frames at {rate} Hz")
        if frames > MAX_PART_S * rate:
            raise ValueError(f"a part is at most {MAX_PART_S:g} s")
        n = max(0, min(frames, self.frames_at(rate) - start))
        if rate == self.stems.samplerate:
            return self.read(start, n)
        margin = math.ceil(_RESAMPLE_MARGIN / p) * p
        src_start = start // q * p
        src_frames = math.ceil(n * p / q) + 2 * margin
        x = self.read(src_start - margin, src_frames)
        out = np.empty((x.shape[0], MODEL_CHANNELS, n), dtype=np.float32)
        skip = margin // p * q
        for k in range(x.shape[0]):
            y = soxr.resample(np.ascontiguousarray(x[k].T), self.stems.samplerate, rate)
            out[k] = y[skip : skip + n].T
        return out

    def overview(self) -> dict[str, list[list[float]]]:
        """Each stem's waveform overview: :data:`OVERVIEW_BUCKETS` ``[min, max]`` pairs of its channel mean."""
        with self._overview_lock:
            if self._overview is None:
                self._overview = self._compute_overview()
            return self._overview

    def _compute_overview(self) -> dict[str, list[list[float]]]:
        total = self.stems.frames
        buckets = min(OVERVIEW_BUCKETS, max(total, 1))
        edges = (np.arange(buckets + 1) * total) // buckets
        lows = np.full((len(self._files), buckets), np.inf, dtype=np.float32)
        highs = np.full((len(self._files), buckets), -np.inf, dtype=np.float32)
        for start in range(0, total, _READ_BLOCK):
            x = self.read(start, min(_READ_BLOCK, total - start)).mean(axis=1)  # (stems, n)
            index = np.searchsorted(edges, np.arange(start, start + x.shape[1]), side="right") - 1
            columns, firsts = np.unique(index, return_index=True)
            for k in range(x.shape[0]):
                lows[k, columns] = np.minimum(lows[k, columns], np.minimum.reduceat(x[k], firsts))
                highs[k, columns] = np.maximum(highs[k, columns], np.maximum.reduceat(x[k], firsts))
        lows[~np.isfinite(lows)] = 0.0
        highs[~np.isfinite(highs)] = 0.0
        return {
            stem.name: [
                [round(float(a), 4), round(float(b), 4)] for a, b in zip(lows[k], highs[k], strict=True)
            ]
            for k, stem in enumerate(self.stems.stems)
        }
