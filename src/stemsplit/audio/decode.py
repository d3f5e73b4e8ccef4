"""Decode a probed file into float32 chunks at its own rate and channel count.

Two backends, chosen by :func:`stemsplit.audio.info.probe`: libsndfile (``soundfile``) and FFmpeg's
libraries (PyAV). Both yield private ``(frames, channels)`` float32 chunks of varying length, full scale
= 1.0. A failure in the middle of a file raises :class:`AudioDecodeError`; the reader decides whether
what came before is usable (see :mod:`stemsplit.audio.reader`).
"""

from __future__ import annotations

from collections.abc import Generator

import av
import numpy as np
import soundfile as sf

from stemsplit.audio._common import AV_READ_OPTIONS, FloatArray
from stemsplit.audio.info import AudioInfo
from stemsplit.errors import AudioDecodeError

SOUNDFILE_CHUNK_FRAMES = 8192
"""Frames per libsndfile read. Small enough that a read failing on damaged data loses little."""

# FFmpeg integer sample formats -> (dtype to widen to, offset, scale) so that float = (x - offset) / scale.
_INT_FORMATS: dict[str, tuple[float, float]] = {
    "u8": (128.0, 128.0),
    "s16": (0.0, 32768.0),
    "s32": (0.0, 2147483648.0),
    "s64": (0.0, 9223372036854775808.0),
}


def decode_chunks(info: AudioInfo) -> Generator[FloatArray, None, None]:
    """Yield the file's audio as float32 ``(frames, channels)`` chunks at its own rate.

    Raises:
        AudioDecodeError: the file could not be opened, or decoding failed part-way.
    """
    if info.backend == "soundfile":
        return _soundfile_chunks(info)
    return _pyav_chunks(info)


def _decode_error(info: AudioInfo, err: BaseException) -> AudioDecodeError:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return AudioDecodeError(
        f"{info.path}: decoding failed ({reason}); the file is damaged: re-export or re-download it",
        path=info.path,
    )


def _soundfile_chunks(info: AudioInfo) -> Generator[FloatArray, None, None]:
    try:
        handle = sf.SoundFile(str(info.path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise _decode_error(info, err) from err
    with handle:
        while True:
            try:
                chunk = handle.read(SOUNDFILE_CHUNK_FRAMES, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError) as err:
                raise _decode_error(info, err) from err
            if chunk.shape[0] == 0:
                return
            yield chunk


def _pyav_chunks(info: AudioInfo) -> Generator[FloatArray, None, None]:
    # Frames beyond the length the container declares (mp4 edit lists) are encoder padding: drop them.
    limit = info.frames
    done = 0
    try:
        container = av.open(str(info.path), **AV_READ_OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise _decode_error(info, err) from err
    with container:
        stream = container.streams.audio[0]
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    chunk = _frame_to_float(frame, info)
                    if limit is not None and done + chunk.shape[0] > limit:
                        chunk = chunk[: max(limit - done, 0)]
                    done += chunk.shape[0]
                    if chunk.shape[0]:
                        yield chunk
                    if limit is not None and done >= limit:
                        return
        except (av.error.FFmpegError, ValueError) as err:
            raise _decode_error(info, err) from err


def _frame_to_float(frame: av.AudioFrame, info: AudioInfo) -> FloatArray:
    """One decoded frame as float32 ``(frames, channels)``, full scale = 1.0."""
    fmt = frame.format
    channels = len(frame.layout.channels)
    if channels != info.channels or frame.sample_rate != info.samplerate:
        raise AudioDecodeError(
            f"{info.path}: the audio changes format mid-stream ({channels} ch at {frame.sample_rate} Hz, "
            f"started as {info.channels} ch at {info.samplerate} Hz); convert it to wav or flac first",
            path=info.path,
        )
    data = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
    if fmt.is_planar:
        data = data.T
    else:
        data = data.reshape(-1, channels)
    base = fmt.name.rstrip("p")
    if base in _INT_FORMATS:
        offset, scale = _INT_FORMATS[base]
        out = data.astype(np.float64) if base == "s64" else data.astype(np.float32)
        if offset:
            out -= offset
        out /= scale
        return np.ascontiguousarray(out, dtype=np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)
