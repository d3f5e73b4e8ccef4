"""Channel mapping and streaming resampling (pure computation, no file I/O).

Channel rules (to ``channels`` = 2, what the model takes):

* mono is duplicated to both channels;
* more than two channels are downmixed with ITU-R BS.775 coefficients: each front channel into its side
  at 0 dB, a centre channel (front or back) into both at −3 dB (×1/√2), surround and back channels into their side at
  −3 dB, LFE dropped. Channel orders are the WAV/FFmpeg defaults (3: L R C; 4: L R Ls Rs; 5: L R C Ls Rs;
  6: L R C LFE Ls Rs; 7: L R C LFE Cs Ls Rs; 8: L R C LFE Lb Rb Ls Rs). Other counts are folded to mono
  (the mean of every channel) on both sides. No normalisation: the sum of the stems still equals the
  downmix, and the writer's clip handling takes care of peaks above full scale.

To ``channels`` = 1 (mono stems from the model's stereo): the mean of the channels.

Resampling uses soxr's streaming resampler. Its output does not depend on how the input is chunked, so
the concatenated blocks of a stream equal a one-shot :func:`convert` bit for bit. The total output length
is fixed by :func:`output_frames`: ``floor(frames_in * rate_out / rate_in + 1/2)``.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from stemsplit.audio._common import FloatArray, ResampleQuality

_M3DB = 1.0 / math.sqrt(2.0)

# Rows are (left, right) output gains for each input channel, in the layout orders listed above.
_DOWNMIX: dict[int, list[tuple[float, float]]] = {
    3: [(1, 0), (0, 1), (_M3DB, _M3DB)],
    4: [(1, 0), (0, 1), (_M3DB, 0), (0, _M3DB)],
    5: [(1, 0), (0, 1), (_M3DB, _M3DB), (_M3DB, 0), (0, _M3DB)],
    6: [(1, 0), (0, 1), (_M3DB, _M3DB), (0, 0), (_M3DB, 0), (0, _M3DB)],
    7: [(1, 0), (0, 1), (_M3DB, _M3DB), (0, 0), (_M3DB, _M3DB), (_M3DB, 0), (0, _M3DB)],
    8: [(1, 0), (0, 1), (_M3DB, _M3DB), (0, 0), (_M3DB, 0), (0, _M3DB), (_M3DB, 0), (0, _M3DB)],
}


def downmix_matrix(channels: int) -> FloatArray:
    """The ``(2, channels)`` matrix that folds ``channels`` (> 2) to stereo; see the module docstring."""
    if channels <= 2:
        raise ValueError(f"a downmix needs more than 2 channels, got {channels}")
    rows = _DOWNMIX.get(channels)
    if rows is None:
        return np.full((2, channels), 1.0 / channels, dtype=np.float32)
    matrix: FloatArray = np.asarray(rows, dtype=np.float32).T.copy()
    return matrix


def is_standard_layout(channels: int) -> bool:
    """Whether ``channels`` (> 2) has a known surround layout (otherwise it is folded to mono)."""
    return channels in _DOWNMIX


def remix_frames(x: FloatArray, channels: int) -> FloatArray:
    """Map ``(frames, C)`` audio to ``(frames, channels)`` by the rules above (private layout)."""
    have = x.shape[1]
    if have == channels:
        return x
    if channels == 1:
        mono: FloatArray = x.mean(axis=1, keepdims=True, dtype=np.float32)
        return mono
    if have == 1:
        dup: FloatArray = np.repeat(x, channels, axis=1)
        return dup
    if channels == 2:
        return np.ascontiguousarray(x @ downmix_matrix(have).T, dtype=np.float32)
    raise ValueError(f"cannot map {have} channels to {channels}")


def output_frames(frames: int, rate_in: int, rate_out: int) -> int:
    """Frames after resampling ``frames`` from ``rate_in`` to ``rate_out``: round half up, exact."""
    return (2 * frames * rate_out + rate_in) // (2 * rate_in)


class StreamResampler:
    """Resample a stream chunk by chunk, with an exact total length.

    ``process`` takes and returns private ``(frames, channels)`` float32 chunks; ``flush`` returns the
    tail, trimmed or zero-padded so that the total equals :func:`output_frames` of the input total.
    With equal rates it passes chunks through untouched.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int, quality: ResampleQuality = "HQ") -> None:
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.channels = channels
        self.frames_in = 0
        self.frames_out = 0
        self._stream = (
            None
            if rate_in == rate_out
            else soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality=quality)
        )

    def process(self, x: FloatArray) -> FloatArray:
        """Feed ``(frames, channels)`` float32; return what is ready (may be empty)."""
        self.frames_in += x.shape[0]
        if self._stream is None:
            y = x
        else:
            y = self._stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=False)
        y = y[: max(self._budget(), 0)]  # never run past the exact total (soxr lags; defensive)
        self.frames_out += y.shape[0]
        return y

    def flush(self) -> FloatArray:
        """End the stream; return the last ``(frames, channels)`` so the total length is exact."""
        if self._stream is None:
            tail = np.zeros((0, self.channels), dtype=np.float32)
        else:
            empty = np.zeros((0, self.channels), dtype=np.float32)
            tail = self._stream.resample_chunk(empty, last=True)
        need = max(self._budget(), 0)
        if tail.shape[0] >= need:
            tail = tail[:need]
        else:
            pad = np.zeros((need - tail.shape[0], self.channels), dtype=np.float32)
            tail = np.concatenate([tail, pad])
        self.frames_out += tail.shape[0]
        return tail

    def _budget(self) -> int:
        return output_frames(self.frames_in, self.rate_in, self.rate_out) - self.frames_out


class Reblocker:
    """Collect ``(frames, channels)`` chunks and hand out ``(channels, block)`` float32 blocks."""

    def __init__(self, channels: int, block_frames: int) -> None:
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        self.channels = channels
        self.block_frames = block_frames
        self._parts: list[FloatArray] = []
        self._count = 0

    def push(self, chunk: FloatArray) -> list[FloatArray]:
        """Add a chunk; return every full block now available (each ``(channels, block_frames)``)."""
        if chunk.shape[0]:
            self._parts.append(chunk)
            self._count += chunk.shape[0]
        if self._count < self.block_frames:
            return []
        joined = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
        whole = (self._count // self.block_frames) * self.block_frames
        blocks = [
            np.ascontiguousarray(joined[i : i + self.block_frames].T)
            for i in range(0, whole, self.block_frames)
        ]
        rest = joined[whole:]
        self._parts = [rest] if rest.shape[0] else []
        self._count = rest.shape[0]
        return blocks

    def remainder(self) -> FloatArray:
        """The last, shorter ``(channels, n)`` block (``n`` may be 0); empties the buffer."""
        if not self._parts:
            return np.zeros((self.channels, 0), dtype=np.float32)
        joined = np.concatenate(self._parts)
        self._parts, self._count = [], 0
        return np.ascontiguousarray(joined.T)


def convert(
    audio: FloatArray,
    rate_in: int,
    rate_out: int,
    channels: int | None = None,
    quality: ResampleQuality = "HQ",
) -> FloatArray:
    """Convert a whole ``(C, frames)`` array in one go; equals the streaming reader's blocks, joined.

    Args:
        audio: float32 ``(C, frames)`` at ``rate_in`` Hz.
        rate_in: its sample rate (Hz).
        rate_out: the wanted sample rate (Hz).
        channels: the wanted channel count (``None``: keep ``C``); see the module docstring. No warning
            is issued here for a downmix; the reader warns.
        quality: soxr quality preset.

    Returns:
        float32 ``(channels, output_frames(frames, rate_in, rate_out))``.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, frames), got shape {audio.shape}")
    x = remix_frames(np.ascontiguousarray(audio.T, dtype=np.float32), channels or audio.shape[0])
    rs = StreamResampler(rate_in, rate_out, x.shape[1], quality)
    y = np.concatenate([rs.process(x), rs.flush()])
    return np.ascontiguousarray(y.T)
