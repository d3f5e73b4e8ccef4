"""Shared constants and array types of the audio package (no I/O here)."""

from __future__ import annotations

from typing import Literal, TypeAlias, TypedDict

import av
import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float32]
"""A float32 array. Public functions take and return ``(channels, frames)``; private helpers in this
package use ``(frames, channels)`` (the layout libsndfile and soxr work in) and say so."""

ResampleQuality: TypeAlias = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
"""soxr quality presets; ``HQ`` (20-bit precision, ~120 dB stop-band) is the default."""

MODEL_SAMPLERATE = 44100
"""The rate HT-Demucs works at (Hz)."""

MODEL_CHANNELS = 2
"""The channel count HT-Demucs works with."""

MIN_SAMPLERATE = 8000
"""Inputs below this rate (Hz) are refused: they carry almost nothing the model can separate."""

DEFAULT_BLOCK_FRAMES = 65536
"""Default block length (frames per channel) of the streaming reader."""


class AvReadOptions(TypedDict, total=False):
    """The keyword arguments of ``av.open`` that reading passes on top of the path."""

    metadata_errors: str


AV_READ_OPTIONS: AvReadOptions = (
    {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
)
"""Keyword arguments of ``av.open`` for reading. Before PyAV 19, tags that are not UTF-8 raise
``UnicodeDecodeError`` unless ``metadata_errors="ignore"``; PyAV 19 removed the argument (a ``TypeError``)
and keeps such bytes as surrogate escapes itself."""
