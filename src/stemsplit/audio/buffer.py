"""A decoded track held for the engine: in memory up to a bound, spilled to a temporary file beyond it.

The pipeline decodes each input once (the normalisation needs the whole track's statistics before the first
window, and the engine then reads windows from it). :class:`TrackBuffer` keeps the decoded float32 audio
(at the model's rate and channels) in memory while it is short; once it passes ``memory_frames`` it moves to
a temporary file (deleted when closed, or by the system if the process dies) and is read back with plain
reads (not a memory map, so reading a long track does not grow the resident memory). Reads are safe from
several threads.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import IO

import numpy as np

from stemsplit.audio._common import FloatArray

__all__ = ["TrackBuffer"]

_BYTES = 4  # float32


class TrackBuffer:
    """A decoded track, appended in ``(channels, n)`` blocks, read back as ``(channels, hi - lo)`` spans.

    Args:
        channels: channels of every block.
        memory_frames: frames kept in memory before the track moves to a temporary file.
        spill_dir: where that file goes (None: the system's temporary folder).

    Attributes:
        spilled: whether the track is on disk.
    """

    def __init__(self, channels: int, *, memory_frames: int, spill_dir: Path | None = None) -> None:
        self.channels = channels
        self.memory_frames = memory_frames
        self.spill_dir = spill_dir
        self.spilled = False
        self._blocks: list[FloatArray] = []
        self._offsets: list[int] = []  # first frame of each in-memory block
        self._end = 0
        self._frames: int | None = None
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()  # one reader or writer of the file at a time

    # -- the TrackAudio protocol of the engine ----------------------------------------------------------------

    @property
    def start(self) -> int:
        """The first frame that can be read (always 0: nothing is discarded before :meth:`close`)."""
        return 0

    @property
    def end(self) -> int:
        """Frames appended so far."""
        return self._end

    @property
    def frames(self) -> int | None:
        """The track's length, once :meth:`finish` was called."""
        return self._frames

    def read(self, lo: int, hi: int) -> FloatArray:
        """Frames ``[lo, hi)``, ``0 <= lo <= hi <= end``, as a float32 ``(channels, hi - lo)`` array."""
        assert 0 <= lo <= hi <= self._end, f"read [{lo}, {hi}) outside [0, {self._end})"
        if self._file is not None:
            with self._lock:
                self._file.seek(lo * self.channels * _BYTES)
                data = bytearray(self._file.read((hi - lo) * self.channels * _BYTES))  # writable, for torch
            frames: FloatArray = np.frombuffer(data, dtype=np.float32).reshape(hi - lo, self.channels).T
            return frames
        parts = []
        for first, block in zip(self._offsets, self._blocks, strict=True):
            last = first + block.shape[1]
            if last <= lo or first >= hi:
                continue
            parts.append(block[:, max(lo - first, 0) : min(hi, last) - first])
        if not parts:
            return np.zeros((self.channels, 0), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def discard_before(self, position: int) -> None:
        """Nothing is freed early: the writer reads the mix back (``--other-method minus``) after the engine."""

    # -- filling ------------------------------------------------------------------------------------------------

    def append(self, block: FloatArray) -> None:
        """Add a ``(channels, n)`` float32 block at the end (moving to disk past ``memory_frames``).

        Raises:
            OSError: the temporary file cannot be written (disk full, no temporary folder).
        """
        if block.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) blocks, got {block.shape}")
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self._file is None and self._end + block.shape[1] > self.memory_frames:
            self._spill()
        if self._file is not None:
            with self._lock:
                self._file.seek(0, 2)
                self._file.write(np.ascontiguousarray(block.T).tobytes())
        else:
            self._offsets.append(self._end)
            self._blocks.append(block)
        self._end += block.shape[1]

    def finish(self) -> None:
        """Every block is in: the track is :attr:`end` frames long."""
        self._frames = self._end

    def close(self) -> None:
        """Free the memory or the temporary file (the buffer cannot be read afterwards)."""
        with self._lock:
            self._blocks, self._offsets = [], []
            if self._file is not None:
                self._file.close()
                self._file = None

    def _spill(self) -> None:
        file = tempfile.TemporaryFile(prefix="stemsplit-", suffix=".f32", dir=self.spill_dir)
        try:
            for block in self._blocks:
                file.write(np.ascontiguousarray(block.T).tobytes())
        except BaseException:
            file.close()
            raise
        self._file, self.spilled = file, True
        self._blocks, self._offsets = [], []
