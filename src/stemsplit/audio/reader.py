"""The streaming reader: a file as float32 ``(channels, n)`` blocks at the model's rate and channels.

One pass decodes (:mod:`~stemsplit.audio.decode`), maps channels and resamples
(:mod:`~stemsplit.audio.convert`) chunk by chunk, so memory does not grow with the track. A reader can
be iterated any number of times (the engine makes a statistics pass, then a separation pass); every pass
decodes afresh and yields identical blocks.

Damaged files: if decoding fails part-way, the reader stops there, yields what decoded and issues a
:class:`~stemsplit.errors.TruncatedAudioWarning`; it also warns when a file that decoded cleanly is more
than 1 s shorter than its header says. A failure before the first sample is an
:class:`~stemsplit.errors.AudioDecodeError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stemsplit.audio._common import (
    DEFAULT_BLOCK_FRAMES,
    MODEL_CHANNELS,
    MODEL_SAMPLERATE,
    FloatArray,
    ResampleQuality,
)
from stemsplit.audio.convert import (
    Reblocker,
    StreamResampler,
    is_standard_layout,
    remix_frames,
)
from stemsplit.audio.decode import decode_chunks
from stemsplit.audio.info import AudioInfo, check_supported, probe
from stemsplit.errors import AudioDecodeError, DownmixWarning, TruncatedAudioWarning

TRUNCATION_TOLERANCE_S = 1.0
"""A cleanly decoded file may be this much shorter than its header says before the reader warns (s)."""


class AudioReader:
    """Stream one audio file as float32 ``(channels, block_frames)`` blocks.

    Every block but the last has exactly ``block_frames`` frames. Over one pass the blocks hold
    ``output_frames(frames_in, info.samplerate, samplerate)`` frames in all, where ``frames_in`` is the
    number of frames decoded (the header's ``info.frames`` unless the file is damaged).

    Args:
        path: the audio file.
        samplerate: output rate in Hz (``None``: the file's own rate). Default: the model's 44100.
        channels: output channel count, 1 or 2 (``None``: the file's own). Default: the model's 2.
        block_frames: frames per block.
        quality: soxr quality preset.

    Attributes:
        info: the file's :class:`AudioInfo` (probed when the reader is made).
        samplerate: the output rate (Hz).
        channels: the output channel count.
        frames_in: source frames decoded by the last complete pass (``None`` before one).
        frames_out: frames yielded by the last complete pass (``None`` before one).

    Raises:
        AudioFileNotFoundError, AudioDecodeError: from :func:`probe` (at construction) and while decoding.
        UnsupportedAudioError: the sample rate is below 8 kHz, or the header declares no samples.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        samplerate: int | None = MODEL_SAMPLERATE,
        channels: int | None = MODEL_CHANNELS,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        quality: ResampleQuality = "HQ",
    ) -> None:
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        if channels is not None and channels not in (1, 2):
            raise ValueError(f"channels must be 1, 2 or None, got {channels}")
        self.info: AudioInfo = probe(path)
        check_supported(self.info)
        self.samplerate = samplerate or self.info.samplerate
        self.channels = channels or self.info.channels
        self.block_frames = block_frames
        self.quality: ResampleQuality = quality
        self.frames_in: int | None = None
        self.frames_out: int | None = None
        self._warned_downmix = False
        self._warned_short = False  # every pass decodes afresh; say it once per reader

    def __iter__(self) -> Iterator[FloatArray]:
        """Decode the file once more from the start and yield its blocks."""
        self._warn_downmix()
        resampler = StreamResampler(self.info.samplerate, self.samplerate, self.channels, self.quality)
        blocker = Reblocker(self.channels, self.block_frames)
        frames_in = 0
        failure: AudioDecodeError | None = None
        chunks = decode_chunks(self.info)
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except AudioDecodeError as err:
                    if frames_in == 0:
                        raise
                    failure = err
                    break
                frames_in += chunk.shape[0]
                yield from blocker.push(resampler.process(remix_frames(chunk, self.channels)))
        finally:
            chunks.close()
        if frames_in == 0:
            raise AudioDecodeError(
                f"{self.info.path}: contains no audio samples; re-export it", path=self.info.path
            )
        yield from blocker.push(resampler.flush())
        last = blocker.remainder()
        if last.shape[1]:
            yield last
        self._warn_short(frames_in, failure)
        self.frames_in = frames_in
        self.frames_out = resampler.frames_out

    def _warn_downmix(self) -> None:
        have = self.info.channels
        if have <= 2 or self.channels != 2 or self._warned_downmix:
            return
        self._warned_downmix = True
        how = "ITU-R BS.775 coefficients" if is_standard_layout(have) else "equal weights (unknown layout)"
        warnings.warn(
            f"{self.info.path}: {have} channels downmixed to stereo with {how}; the stems are stereo",
            DownmixWarning,
            stacklevel=3,
        )

    def _warn_short(self, frames_in: int, failure: AudioDecodeError | None) -> None:
        if self._warned_short:
            return
        rate = self.info.samplerate
        got = frames_in / rate
        if failure is not None:
            self._warned_short = True
            warnings.warn(
                f"{self.info.path}: decoding stopped at {got:.1f} s on damaged data ({failure}); "
                "the stems cover only the part that decoded",
                TruncatedAudioWarning,
                stacklevel=3,
            )
        elif self.info.frames is not None and self.info.frames - frames_in > TRUNCATION_TOLERANCE_S * rate:
            self._warned_short = True
            warnings.warn(
                f"{self.info.path}: ends at {got:.1f} s but its header says {self.info.frames / rate:.1f} s "
                "(truncated file?); the stems cover only the part that decoded",
                TruncatedAudioWarning,
                stacklevel=3,
            )


def read_audio(
    path: Path | str,
    *,
    samplerate: int | None = MODEL_SAMPLERATE,
    channels: int | None = MODEL_CHANNELS,
    quality: ResampleQuality = "HQ",
) -> tuple[FloatArray, AudioInfo]:
    """Read a whole file into memory (small files, tests): the streaming reader's blocks, joined.

    Returns:
        float32 ``(channels, frames)`` at ``samplerate``, and the file's :class:`AudioInfo`.

    Raises:
        The same errors as :class:`AudioReader`.
    """
    reader = AudioReader(
        path, samplerate=samplerate, channels=channels, block_frames=1 << 20, quality=quality
    )
    blocks = list(reader)
    audio = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    return audio, reader.info
