"""Probe an audio file: what it holds, read from its header, without decoding it.

libsndfile (through ``soundfile``) is asked first: it covers wav/aiff/flac/ogg/opus/mp3 and sniffs the
content, not the extension, except that it takes a ``.mp3`` for MPEG audio by its name: such a file that
does not start like MPEG audio (:mod:`~stemsplit.audio.mpeg`) goes straight to FFmpeg, so that libmpg123
never prints on stderr. Anything libsndfile refuses goes to FFmpeg's demuxers (through PyAV): m4a/aac,
alac, wma, webm, and the audio track of video files. The backend that probed a file is the one that
decodes it (``AudioInfo.backend``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import soundfile as sf

from stemsplit.audio._common import AV_READ_OPTIONS, MIN_SAMPLERATE
from stemsplit.audio.mpeg import starts_like_mpeg_audio
from stemsplit.errors import AudioDecodeError, AudioFileNotFoundError, UnsupportedAudioError, first_line

Backend = Literal["soundfile", "pyav"]

# libsndfile subtype -> (codec name, bits per sample); codecs not listed keep their lower-cased name.
_SF_CODECS: dict[str, tuple[str, int | None]] = {
    "PCM_S8": ("pcm_s8", 8),
    "PCM_U8": ("pcm_u8", 8),
    "PCM_16": ("pcm_s16", 16),
    "PCM_24": ("pcm_s24", 24),
    "PCM_32": ("pcm_s32", 32),
    "FLOAT": ("pcm_f32", 32),
    "DOUBLE": ("pcm_f64", 64),
    "VORBIS": ("vorbis", None),
    "OPUS": ("opus", None),
    "MPEG_LAYER_I": ("mp1", None),
    "MPEG_LAYER_II": ("mp2", None),
    "MPEG_LAYER_III": ("mp3", None),
    "ALAC_16": ("alac", 16),
    "ALAC_20": ("alac", 20),
    "ALAC_24": ("alac", 24),
    "ALAC_32": ("alac", 32),
}

# FFmpeg codecs whose decoded sample format tells the stored bit depth.
_LOSSLESS_PREFIXES = ("pcm_", "alac", "flac", "wavpack", "tta", "ape", "mlp", "truehd")


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What an audio file holds, as its header declares it.

    Attributes:
        path: the file.
        samplerate: samples per second per channel (Hz).
        channels: number of channels.
        frames: samples per channel as the header/index declares them; exact for wav/aiff/flac, the
            container's figure for compressed formats, ``None`` when the container does not say. A
            damaged file can decode fewer (the reader warns when more than 1 s is missing).
        duration_s: ``frames / samplerate``, or the container's duration (seconds); ``None`` if unknown.
        codec: ``pcm_s16``, ``pcm_s24``, ``pcm_f32``, ``flac``, ``mp3``, ``vorbis``, ``opus``, ``aac``,
            ``alac``, … (libsndfile subtypes mapped to FFmpeg-like names; FFmpeg codec names as is).
        container: ``wav``, ``aiff``, ``flac``, ``ogg``, ``mp3``, … for libsndfile; FFmpeg's demuxer
            name (``mov,mp4,m4a,3gp,3g2,mj2``, ``matroska,webm``, ``asf``, …) for PyAV.
        bit_depth: bits per stored sample for PCM and lossless codecs; ``None`` for lossy ones.
        backend: the library that decodes this file (``soundfile`` or ``pyav``).
    """

    path: Path
    samplerate: int
    channels: int
    frames: int | None
    duration_s: float | None
    codec: str
    container: str
    bit_depth: int | None
    backend: Backend


def probe(path: Path | str) -> AudioInfo:
    """Describe an audio file from its header, without decoding its audio.

    Args:
        path: the file to look at.

    Returns:
        The file's :class:`AudioInfo`.

    Raises:
        AudioFileNotFoundError: the path does not exist or is a folder.
        AudioDecodeError: the file is empty, not audio, damaged beyond reading, or has no audio stream.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileNotFoundError(
            f"{path}: no such file; check the path (quote it if it contains spaces)", path=path
        )
    if path.is_dir():
        raise AudioFileNotFoundError(f"{path}: is a folder, not an audio file; pass a file", path=path)
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{path}: the file is empty (0 bytes); re-export or re-download it", path=path)
    if _named_mpeg(path) and not starts_like_mpeg_audio(path):
        # libsndfile would take it for MP3 by its name alone, and libmpg123 would print its complaints
        # (``Note: Illegal Audio-MPEG-Header``) on the process's stderr: FFmpeg says what it is instead.
        return _probe_pyav(path)
    try:
        return _probe_soundfile(path)
    except (sf.SoundFileError, RuntimeError):
        pass  # not a format libsndfile knows: FFmpeg gets its turn
    return _probe_pyav(path)


def _named_mpeg(path: Path) -> bool:
    """Whether libsndfile picks its MPEG decoder for this file by the name alone (measured: ``.mp3``, any
    letter case; ``.mp2`` and ``.mpga`` are not)."""
    return path.suffix.lower() == ".mp3"


def check_supported(info: AudioInfo) -> None:
    """Refuse a file that decodes but cannot be separated.

    Raises:
        UnsupportedAudioError: the sample rate is below 8 kHz, or the header says there are no samples.
    """
    if info.samplerate < MIN_SAMPLERATE:
        raise UnsupportedAudioError(
            f"{info.path}: sample rate {info.samplerate} Hz is below the {MIN_SAMPLERATE} Hz minimum; "
            "resample it to 44100 Hz first",
            path=info.path,
        )
    if info.channels < 1 or info.frames == 0:
        raise UnsupportedAudioError(f"{info.path}: contains no audio samples; re-export it", path=info.path)


def _probe_soundfile(path: Path) -> AudioInfo:
    raw = sf.info(str(path))
    container = str(raw.format).lower()
    codec, bits = _SF_CODECS.get(str(raw.subtype), (str(raw.subtype).lower(), None))
    if container == "flac":
        codec = "flac"
    frames = int(raw.frames)
    declared = _declared_pcm_frames(path, container)
    if declared is not None and declared > frames:  # libsndfile clamps a truncated data chunk
        frames = declared
    rate = int(raw.samplerate)
    return AudioInfo(
        path=path,
        samplerate=rate,
        channels=int(raw.channels),
        frames=frames,
        duration_s=frames / rate if rate > 0 else None,
        codec=codec,
        container=container,
        bit_depth=bits,
        backend="soundfile",
    )


def _probe_pyav(path: Path) -> AudioInfo:
    try:
        container = av.open(str(path), **AV_READ_OPTIONS)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        # libsndfile's reason for a file it does not recognise is misleading ("File does not exist or is
        # not a regular file"), so only FFmpeg's (the more tolerant decoder) is shown.
        reason = getattr(err, "strerror", None) or first_line(err)
        raise AudioDecodeError(
            f"{path}: cannot be read as audio ({reason}); the file may be damaged or not audio: "
            "re-export or re-download it",
            path=path,
        ) from err
    with container:
        if not container.streams.audio:
            kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["no streams"]
            raise AudioDecodeError(
                f"{path}: has no audio stream (FFmpeg sees format '{container.format.name}' with "
                f"{', '.join(kinds)}); pass an audio file such as .wav, .flac, .mp3 or .m4a",
                path=path,
            )
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        rate = int(ctx.sample_rate or stream.rate or 0)
        frames: int | None = None
        if stream.duration is not None and stream.time_base is not None and rate > 0:
            frames = round(float(stream.duration * stream.time_base) * rate)
        duration_s: float | None = frames / rate if frames is not None and rate > 0 else None
        if duration_s is None and container.duration is not None:
            duration_s = container.duration / 1_000_000  # AV_TIME_BASE
        codec = str(ctx.name)
        bits: int | None = None
        if codec.startswith(_LOSSLESS_PREFIXES) and ctx.format is not None:
            bits = int(ctx.format.bits)
        return AudioInfo(
            path=path,
            samplerate=rate,
            channels=int(ctx.channels),
            frames=frames,
            duration_s=duration_s,
            codec=codec,
            container=str(container.format.name),
            bit_depth=bits,
            backend="pyav",
        )


def _declared_pcm_frames(path: Path, container: str) -> int | None:
    """The frame count a WAV ``data`` chunk or an AIFF ``COMM`` chunk declares (libsndfile clamps it)."""
    if container not in ("wav", "wavex", "aiff"):
        return None
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _riff_frames(head)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_frames(head)
    return None


def _riff_frames(head: bytes) -> int | None:
    block_align = 0
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt " and pos + 22 <= len(head):
            block_align = struct.unpack_from("<H", head, pos + 20)[0]
        elif cid == b"data":
            return int(size) // block_align if block_align > 0 and size != 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None


def _aiff_frames(head: bytes) -> int | None:
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack_from(">I", head, pos + 4)[0]
        if cid == b"COMM" and pos + 14 <= len(head):
            return int(struct.unpack_from(">I", head, pos + 10)[0])
        pos += 8 + size + (size & 1)
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
