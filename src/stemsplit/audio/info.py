"""Probe an audio file: what it holds, read from its header, and whether the start of its audio decodes.

Before any decoder sees it, the path must name a regular file that can be opened (a FIFO, device, socket
or folder is reported as what it is and never opened: a FIFO would block).

libsndfile (through ``soundfile``) is asked first: it covers wav/aiff/flac/ogg/opus and sniffs the content,
not the extension. MPEG audio (a ``.mp3`` name, an ID3 tag, or an MPEG frame sync at the start:
:mod:`~stemsplit.audio.mpeg`) goes to FFmpeg instead: libsndfile would hand it to libmpg123, which prints
its complaints about damaged frames (``Note: Illegal Audio-MPEG-Header``) on the process's stderr, where
FFmpeg reports through exceptions. Anything libsndfile refuses also goes to FFmpeg's demuxers (through
PyAV): m4a/aac, alac, wma, webm, and the audio track of video files. The backend that probed a file is the
one that decodes it (``AudioInfo.backend``).

A probe succeeds only for what the decoder will take: a stream FFmpeg has a decoder for, a sample rate
and a channel count above 0, audio whose start decodes (libsndfile's first read, or FFmpeg's first
packets; a file whose start libsndfile cannot decode goes to FFmpeg), and a declared length the file's
size can hold (a compressed file that declares more is refused; a PCM file that declares more is
truncated, and :attr:`AudioInfo.size_frames` bounds what is trusted). So ``--dry-run`` and the run agree.
"""

from __future__ import annotations

import errno
import stat
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import av
import soundfile as sf

from stemsplit.audio._common import AV_READ_OPTIONS, MIN_SAMPLERATE
from stemsplit.audio.mpeg import may_be_mpeg_audio
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

_MPEG_CODECS = ("mp1", "mp2", "mp3")
_MPEG_MIN_BYTES_PER_S = 1000
"""MPEG audio is never below 8 kbit/s (the lowest MPEG-2.5 layer III bitrate)."""
_MIN_BYTES_PER_S = 8
"""Any other compressed codec: 64 bit/s, far below what any encoder writes (a FLAC of digital silence in
its largest blocks takes about 120 bit/s); a declared length that needs less is not believed."""

_LEAST_AUDIO_RATE = 4000
"""Below this rate (Hz) a header is taken for damaged or not audio rather than for audio to resample."""

_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


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
        duration_s: ``frames / samplerate`` (at most what the file's size can hold), or the container's
            duration (seconds); ``None`` if unknown.
        codec: ``pcm_s16``, ``pcm_s24``, ``pcm_f32``, ``flac``, ``mp3``, ``vorbis``, ``opus``, ``aac``,
            ``alac``, … (libsndfile subtypes mapped to FFmpeg-like names; FFmpeg codec names as is).
        container: ``wav``, ``aiff``, ``flac``, ``ogg``, ``mp3``, … for libsndfile; FFmpeg's demuxer
            name (``mov,mp4,m4a,3gp,3g2,mj2``, ``matroska,webm``, ``asf``, …) for PyAV.
        bit_depth: bits per stored sample for PCM and lossless codecs; ``None`` for lossy ones.
        backend: the library that decodes this file (``soundfile`` or ``pyav``).
        size_bytes: the file's size when probed (None when not known).
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
    size_bytes: int | None = None

    @property
    def size_frames(self) -> int | None:
        """:attr:`frames`, but never more than the file's size can hold: the figure to size disk space or
        buffers by (a truncated PCM file declares more than it has). None when the length is unknown."""
        if self.frames is None or self.size_bytes is None:
            return self.frames
        return min(self.frames, _max_frames(self.size_bytes, self.codec, self.samplerate, self.channels))


def probe(path: Path | str) -> AudioInfo:
    """Describe an audio file from its header, once one read shows that the start of its audio decodes.

    Args:
        path: the file to look at.

    Returns:
        The file's :class:`AudioInfo`.

    Raises:
        AudioFileNotFoundError: the path does not exist, is a folder, or is a symlink loop.
        AudioDecodeError: the path is not a regular file (FIFO, device, socket), cannot be opened, is empty,
            not audio, damaged beyond reading, has no audio stream, or one that cannot be decoded (no
            decoder, 0 Hz, no channels, a declared length its size cannot hold).
    """
    path = Path(path)
    size = _regular_file_size(path)
    info = _described(path, size)
    _check_decodable(info)
    why = _first_audio_fails(info)
    if why is not None and info.backend == "soundfile":  # libsndfile cannot decode its start: FFmpeg may
        try:
            other = _probe_pyav(path, size)
            _check_decodable(other)
        except AudioDecodeError:
            pass
        else:
            if _first_audio_fails(other) is None:
                info, why = other, None
    if why is not None:
        raise AudioDecodeError(
            f"{path}: cannot be decoded ({why}); the file is damaged: re-export or re-download it", path=path
        )
    held = info.size_frames
    if held is not None and held != info.frames:  # a truncated PCM file: its duration is what it holds
        info = replace(info, duration_s=held / info.samplerate)
    return info


def _described(path: Path, size: int) -> AudioInfo:
    """The header's description, by the backend that will decode the file."""
    if _named_mpeg(path) or _may_be_mpeg(path):
        # libsndfile would hand it to libmpg123, which prints on the process's stderr (see the module doc)
        return _probe_pyav(path, size)
    try:
        info = _probe_soundfile(path, size)
    except (sf.SoundFileError, RuntimeError):
        return _probe_pyav(path, size)  # not a format libsndfile knows: FFmpeg gets its turn
    if info.codec in _MPEG_CODECS:  # MPEG audio libsndfile recognised past our look at the start
        return _probe_pyav(path, size)
    return info


def _regular_file_size(path: Path) -> int:
    """The size of ``path`` after checking that it is a regular, readable, non-empty file (not opened
    when it is anything else).

    Raises:
        AudioFileNotFoundError, AudioDecodeError: as :func:`probe` says.
    """
    try:
        st = path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise AudioFileNotFoundError(
                f"{path}: is a symbolic link loop (it leads back to itself); fix or remove the link",
                path=path,
            ) from None
        if isinstance(err, FileNotFoundError | NotADirectoryError):
            raise AudioFileNotFoundError(
                f"{path}: no such file; check the path (quote it if it contains spaces)", path=path
            ) from None
        raise _unreadable(path, err) from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioFileNotFoundError(f"{path}: is a folder, not an audio file; pass a file", path=path)
    for is_kind, kind in _SPECIAL_FILES:
        if is_kind(st.st_mode):
            raise AudioDecodeError(f"{path}: is {kind}, not an audio file; pass a regular file", path=path)
    if st.st_size == 0:
        raise AudioDecodeError(f"{path}: the file is empty (0 bytes); re-export or re-download it", path=path)
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise _unreadable(path, err) from None
    return st.st_size


def _unreadable(path: Path, err: OSError) -> AudioDecodeError:
    reason = err.strerror or first_line(err, with_type=True)
    return AudioDecodeError(
        f"{path}: cannot be opened ({reason}); check the file's permissions and that its disk is mounted",
        path=path,
    )


def _may_be_mpeg(path: Path) -> bool:
    try:
        return may_be_mpeg_audio(path)
    except OSError as err:
        raise _unreadable(path, err) from None


_FIRST_FRAMES = 8192
"""Frames the probe decodes with libsndfile to see that the audio decodes (its decoder's first read)."""
_FIRST_PACKETS = 64
"""Packets the probe lets FFmpeg try before it gives up on finding audio that decodes."""


def _first_audio_fails(info: AudioInfo) -> str | None:
    """Why the start of the audio does not decode with ``info.backend`` (None when it does): the decoder's
    first read, so that a file whose audio is damaged from the start is refused by the probe (and
    ``--dry-run``) as by the run."""
    if info.frames == 0:
        return None  # nothing to decode: :func:`check_supported` says so
    try:
        if info.backend == "soundfile":
            with sf.SoundFile(str(info.path)) as handle:
                if handle.read(_FIRST_FRAMES, dtype="float32").shape[0] == 0:
                    return "no audio decodes"
            return None
        with open_container(info.path) as container:
            stream = container.streams.audio[0]
            for count, packet in enumerate(container.demux(stream)):
                if count >= _FIRST_PACKETS:
                    break
                try:
                    if any(frame.samples for frame in packet.decode()):
                        return None
                except av.error.InvalidDataError:
                    continue  # a damaged packet: the decoder skips it, and so does the run
        return "no audio decodes at its start"
    except (sf.SoundFileError, RuntimeError, av.error.FFmpegError, ValueError, OSError) as err:
        return getattr(err, "strerror", None) or first_line(err)


def _check_decodable(info: AudioInfo) -> None:
    """Refuse what the decoder would refuse, so that a dry run and the run agree.

    Raises:
        AudioDecodeError: 0 Hz, no channels, or a compressed file declaring more than its size can hold.
    """
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioDecodeError(
            f"{info.path}: cannot be decoded (its header says {info.samplerate} Hz, {info.channels} "
            "channels); the file is damaged: re-export or re-download it",
            path=info.path,
        )
    if info.frames is None or info.size_bytes is None or info.codec.startswith("pcm_"):
        return  # a PCM file declaring more than it holds is truncated: the reader decodes what is there
    most = _max_frames(info.size_bytes, info.codec, info.samplerate, info.channels)
    if info.frames > most:
        raise AudioDecodeError(
            f"{info.path}: cannot be decoded (its header declares {info.frames / info.samplerate / 3600:.1f} "
            f"h of audio, more than its {info.size_bytes} bytes can hold); the file is damaged: re-export "
            "or re-download it",
            path=info.path,
        )


def _max_frames(size_bytes: int, codec: str, samplerate: int, channels: int) -> int:
    """The most frames a file of ``size_bytes`` can hold: exact for PCM (headers aside), a generous bound
    from the codec's least bitrate otherwise."""
    if codec.startswith("pcm_"):
        digits = "".join(ch for ch in codec if ch.isdigit())  # pcm_s16le: 16; pcm_alaw, pcm_mulaw: 8
        bits = int(digits) if digits else 8
        return size_bytes * 8 // max(1, bits * max(1, channels))
    per_s = _MPEG_MIN_BYTES_PER_S if codec.startswith(_MPEG_CODECS) else _MIN_BYTES_PER_S
    return size_bytes * max(1, samplerate) // per_s


def _named_mpeg(path: Path) -> bool:
    """Whether libsndfile picks its MPEG decoder for this file by the name alone (measured: ``.mp3``, any
    letter case; ``.mp2`` and ``.mpga`` are not)."""
    return path.suffix.lower() == ".mp3"


def check_supported(info: AudioInfo) -> None:
    """Refuse a file that decodes but cannot be separated.

    Raises:
        AudioDecodeError: a sample rate below 4 kHz (a damaged header, or not audio).
        UnsupportedAudioError: the sample rate is below 8 kHz, or the header says there are no samples.
    """
    if info.samplerate < _LEAST_AUDIO_RATE:
        raise AudioDecodeError(
            f"{info.path}: cannot be decoded (its header says {info.samplerate} Hz, a rate no audio file "
            "uses); the file is damaged or not audio: re-export or re-download it",
            path=info.path,
        )
    if info.samplerate < MIN_SAMPLERATE:
        raise UnsupportedAudioError(
            f"{info.path}: sample rate {info.samplerate} Hz is below the {MIN_SAMPLERATE} Hz minimum; "
            "resample it to 44100 Hz first",
            path=info.path,
        )
    if info.channels < 1 or info.frames == 0:
        raise UnsupportedAudioError(f"{info.path}: contains no audio samples; re-export it", path=info.path)


def _probe_soundfile(path: Path, size: int) -> AudioInfo:
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
        size_bytes=size,
    )


def open_container(path: Path) -> av.container.InputContainer:
    """Open ``path`` with FFmpeg's demuxers, undecodable metadata ignored (``AV_READ_OPTIONS``: PyAV 19
    dropped ``metadata_errors`` and keeps such bytes itself).

    Raises:
        av.error.FFmpegError, UnicodeDecodeError, OSError: FFmpeg cannot open it.
    """
    return av.open(str(path), **AV_READ_OPTIONS)


def _probe_pyav(path: Path, size: int) -> AudioInfo:
    try:
        container = open_container(path)
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as err:
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
        if ctx is None:  # FFmpeg knows no decoder for this stream's codec (or the header names none)
            raise AudioDecodeError(
                f"{path}: cannot be decoded (FFmpeg has no decoder for its audio stream in format "
                f"'{container.format.name}'); the file is damaged or uses a rare codec: convert it to "
                "wav or flac with another tool",
                path=path,
            )
        rate = int(ctx.sample_rate or stream.rate or 0)
        frames: int | None = None
        if stream.duration is not None and stream.time_base is not None and rate > 0:
            frames = max(0, round(float(stream.duration * stream.time_base) * rate))
        duration_s: float | None = frames / rate if frames is not None and rate > 0 else None
        if duration_s is None and container.duration is not None and container.duration > 0:
            duration_s = container.duration / 1_000_000  # AV_TIME_BASE
        codec = str(ctx.codec.canonical_name)  # "mp3", where the decoder is named "mp3float"
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
            size_bytes=size,
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
