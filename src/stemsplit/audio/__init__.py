"""Audio in and out for stemsplit: every decoder, resampler, encoder and tag call lives here.

No system FFmpeg and no torch: libsndfile (``soundfile``) reads wav/aiff/flac/ogg/opus and writes
wav/flac/mp3; FFmpeg's libraries bundled in PyAV read everything else (mp3, m4a/aac, alac, wma, webm, the
audio of video files); ``soxr`` resamples; ``mutagen`` copies tags. Arrays are numpy float32
``(channels, frames)``, full scale = 1.0; the engine converts to and from tensors.

The contract the pipeline relies on:

Probe
    :func:`probe` ``(path) -> AudioInfo``: rate, channels, header frame count, duration, codec,
    container, bit depth, from the header only; it refuses what the decoder would refuse (special
    files, no decoder, 0 Hz, no channels, a length the file cannot hold). :func:`check_supported`
    refuses rates below 8 kHz.

Read
    :class:`AudioReader` ``(path, samplerate=44100, channels=2, block_frames=65536)`` is re-iterable;
    each pass decodes afresh and yields float32 ``(channels, block_frames)`` blocks (the last one
    shorter) at ``samplerate``: mono duplicated, more than two channels downmixed (ITU-R BS.775, with
    a :class:`~stemsplit.errors.DownmixWarning`). Passes are identical, and the joined blocks equal
    :func:`convert` of the whole decoded file bit for bit. A pass yields exactly
    :func:`output_frames` ``(frames_in, rate_in, rate_out)`` frames (round half up), where
    ``frames_in`` (set after the pass) is what decoded. Damaged or truncated files give what decoded
    and a :class:`~stemsplit.errors.TruncatedAudioWarning`. Silent files are not special. Files
    shorter than the model's window are read as they are; the engine pads them.

Write
    :class:`TrackWriter` ``(paths, WriteOptions(...), samplerate=, channels=, frames=, tags=)`` takes
    float32 ``(2, n)`` blocks at 44100 Hz per stem, resamples them back to ``samplerate`` and to
    ``channels`` (1 for a mono input: the mean of the model's two channels), encodes wav/flac/mp3,
    and publishes all stems atomically on :meth:`TrackWriter.close`. ``clip="rescale"`` applies one
    gain shared by every stem of the track, only when a stem would clip. The
    :class:`TrackWriteReport` gives the gain and each stem's peak and RMS.

Write a Native Instruments stem file
    :class:`StemMp4Writer` ``(path, WriteOptions(format="stem.mp4", ...), sources=, samplerate=,
    frames=, tags=, manifest=)`` takes the input mix (:meth:`StemMp4Writer.write_master`, ``(2, n)`` at
    the output rate) and every source's blocks (:meth:`StemMp4Writer.write_all`, as above) and
    publishes one ``.stem.mp4`` (master and drums, bass, other, vocals; AAC or ALAC; the
    :class:`StemManifest` names and colours) atomically on close, with the same clip rule (the master
    counts as a fifth track). Other sources than those four are summed into ``other``
    (:func:`fold_sources`).

Tags
    :func:`read_tags` ``(input) -> TrackTags`` and ``TrackWriter(tags=...)``, which writes them onto
    every stem with the stem name appended to the title.

Errors are the :class:`~stemsplit.errors.AudioError` family; each message is one line that names the
file and says what to do.
"""

from __future__ import annotations

from stemsplit.audio._common import (
    DEFAULT_BLOCK_FRAMES,
    MIN_SAMPLERATE,
    MODEL_CHANNELS,
    MODEL_SAMPLERATE,
    FloatArray,
    ResampleQuality,
)
from stemsplit.audio.convert import convert, downmix_matrix, output_frames
from stemsplit.audio.info import AudioInfo, check_supported, probe
from stemsplit.audio.ni_stems import NI_STEMS, StemManifest, fold_sources, parse_assignments
from stemsplit.audio.reader import AudioReader, read_audio
from stemsplit.audio.stem_mp4 import MASTER, StemMp4Writer
from stemsplit.audio.tags import Picture, TrackTags, read_tags, write_tags
from stemsplit.audio.writer import (
    BitDepth,
    ClipMode,
    Container,
    StemCodec,
    StemStats,
    StemWriter,
    TrackWriter,
    TrackWriteReport,
    WriteOptions,
    check_track_space,
    remove_stale_temporaries,
)

__all__ = [
    "DEFAULT_BLOCK_FRAMES",
    "MASTER",
    "MIN_SAMPLERATE",
    "MODEL_CHANNELS",
    "MODEL_SAMPLERATE",
    "NI_STEMS",
    "AudioInfo",
    "AudioReader",
    "BitDepth",
    "ClipMode",
    "Container",
    "FloatArray",
    "Picture",
    "ResampleQuality",
    "StemCodec",
    "StemManifest",
    "StemMp4Writer",
    "StemStats",
    "StemWriter",
    "TrackTags",
    "TrackWriteReport",
    "TrackWriter",
    "WriteOptions",
    "check_supported",
    "check_track_space",
    "convert",
    "downmix_matrix",
    "fold_sources",
    "output_frames",
    "parse_assignments",
    "probe",
    "read_audio",
    "read_tags",
    "remove_stale_temporaries",
    "stem_channels",
    "write_tags",
]


def stem_channels(info: AudioInfo) -> int:
    """The channel count stems of this input get: 1 for a mono input, else 2."""
    return 1 if info.channels == 1 else MODEL_CHANNELS
