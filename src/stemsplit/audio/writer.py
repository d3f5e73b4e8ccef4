"""Streaming, atomic stem writing: one track's stems, with one shared clip-safe gain.

Blocks come in as float32 ``(2, n)`` at the model's 44100 Hz. Each stem writer maps them to the output
channel count (mono input → mono stems: the mean of the two model channels), resamples them to the
output rate with soxr's streaming resampler, and encodes them with libsndfile: wav (PCM 16, PCM 24,
float 32), flac (PCM 16, PCM 24) or mp3 (constant bitrate, LAME through libsndfile ≥ 1.1).

Atomic: every file is written under a hidden temporary name in its destination folder
(``.<name>.<token>.partial``, plus ``.<name>.<token>.stage`` in ``rescale`` mode) and renamed with
:func:`os.replace` only when every stem of the track is complete, closed and tagged. An exception or
interrupt before that (leaving the ``with`` block by an exception, or :meth:`TrackWriter.abort`) removes
the temporary files; no file appears under a final name. Only a hard kill can leave temporary files,
and only under those hidden names. The token names the process that writes (:func:`temp_token`), so that
the next run of the same track removes what a dead run left, whatever its age
(:func:`remove_stale_temporaries`).

Clipping (``clip``):

* ``rescale`` (default): if any stem's peak exceeds full scale (1.0), every stem of the track is
  multiplied by the same gain, ``RESCALE_PEAK / max peak``, so the stems still sum to (a scaled) mix;
  otherwise nothing changes. The gain is known only at the end, so each stem is also staged as raw
  float32; the directly encoded file is kept when no gain is needed, and re-encoded from the stage
  when it is.
* ``clamp``: samples beyond ±1.0 are clamped.
* ``none``: float32 wav keeps values beyond ±1.0; integer PCM and mp3 cannot hold them and clamp.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import socket
import time
import uuid
import warnings
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import mutagen
import numpy as np
import soundfile as sf

from stemsplit._paths import nearest_existing
from stemsplit.audio._common import MODEL_CHANNELS, MODEL_SAMPLERATE, FloatArray, ResampleQuality
from stemsplit.audio.convert import StreamResampler, output_frames, remix_frames
from stemsplit.audio.tags import TrackTags, write_tags
from stemsplit.errors import AudioWriteError, InvalidOptionError, TagCopyWarning, first_line

Container = Literal["wav", "flac", "mp3", "stem.mp4"]
BitDepth = Literal["16", "24", "32f"]
ClipMode = Literal["rescale", "clamp", "none"]
StemCodec = Literal["aac", "alac"]

RESCALE_PEAK = 0.99
"""The peak (linear) the loudest stem is brought to when ``rescale`` applies a gain (≈ −0.09 dBFS)."""

MP3_SAMPLERATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Rates MPEG audio can carry; other output rates fall back to 44100 for mp3."""

AAC_SAMPLERATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
"""Rates AAC can carry (at or above stemsplit's 8 kHz floor); other rates fall back to 44100."""

STEM_TRACKS = 5
"""Tracks in a ``stem.mp4``: the master and four stems."""

_SUBTYPES: dict[BitDepth, str] = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
_STAGE_CHUNK = 1 << 16  # frames per read when re-encoding from a stage file


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How stems are encoded.

    Attributes:
        format: ``wav``, ``flac``, ``mp3``, or ``stem.mp4`` (one Native Instruments stem file per
            track, written by :class:`~stemsplit.audio.stem_mp4.StemMp4Writer`).
        bit_depth: ``16``, ``24`` or ``32f`` (float); flac and ALAC have no float; mp3 and AAC ignore it.
        mp3_bitrate: constant bitrate in kbit/s (8 to 320; MPEG-2 rates below 32 kHz cap at 160).
        clip: ``rescale``, ``clamp`` or ``none`` (see the module docstring).
        stem_codec: the codec of a ``stem.mp4``: ``aac`` (lossy, what Traktor everywhere opens) or
            ``alac`` (lossless).
        aac_bitrate: AAC bitrate of each stereo track of a ``stem.mp4`` in kbit/s (32 to 512).

    Raises:
        InvalidOptionError: an impossible combination (flac or ALAC with ``32f``) or a value out of range.
    """

    format: Container = "wav"
    bit_depth: BitDepth = "16"
    mp3_bitrate: int = 320
    clip: ClipMode = "rescale"
    stem_codec: StemCodec = "aac"
    aac_bitrate: int = 256

    def __post_init__(self) -> None:
        if self.format not in ("wav", "flac", "mp3", "stem.mp4"):
            raise InvalidOptionError.bad_value("--format", self.format, "wav, flac, mp3 or stem.mp4")
        if self.bit_depth not in _SUBTYPES:
            raise InvalidOptionError.bad_value("--bit-depth", self.bit_depth, "16, 24 or 32f")
        if self.format == "flac" and self.bit_depth == "32f":
            raise InvalidOptionError(
                "flac cannot store 32-bit float; use --bit-depth 24, or --format wav for float",
                option="--bit-depth",
            )
        if not 8 <= self.mp3_bitrate <= 320:
            raise InvalidOptionError.bad_value(
                "--mp3-bitrate", self.mp3_bitrate, "a bitrate from 8 to 320 (kbit/s)"
            )
        if self.clip not in ("rescale", "clamp", "none"):
            raise InvalidOptionError.bad_value("--clip", self.clip, "rescale, clamp or none")
        if self.stem_codec not in ("aac", "alac"):
            raise InvalidOptionError.bad_value("--stem-codec", self.stem_codec, "aac or alac")
        if self.format == "stem.mp4" and self.stem_codec == "alac" and self.bit_depth == "32f":
            raise InvalidOptionError(
                "ALAC cannot store 32-bit float; use --bit-depth 16 or 24", option="--bit-depth"
            )
        if not 32 <= self.aac_bitrate <= 512:
            raise InvalidOptionError.bad_value(
                "--aac-bitrate", self.aac_bitrate, "a bitrate from 32 to 512 (kbit/s)"
            )

    @property
    def extension(self) -> str:
        """The file extension, without a dot (``stem.mp4`` for stem files)."""
        return self.format

    @property
    def is_float(self) -> bool:
        """Whether the encoded file stores float samples (the only kind that keeps values beyond ±1)."""
        return self.format == "wav" and self.bit_depth == "32f"

    @property
    def is_stem_file(self) -> bool:
        """Whether each track becomes one ``stem.mp4`` (master and four stems) instead of a file per stem."""
        return self.format == "stem.mp4"

    def samplerate_for(self, requested: int) -> int:
        """The rate the file is written at: ``requested``, except a rate mp3 or AAC lacks → 44100."""
        limit = self.rate_limit()
        if limit is not None and requested not in limit[1]:
            return MODEL_SAMPLERATE
        return requested

    def min_bytes(self, frames: int, channels: int, samplerate: int) -> int:
        """A lower bound of the disk space one output file takes while it is written, in bytes.

        The encoded file (wav: exact; mp3: its constant bitrate; flac and ``stem.mp4``: 0, as a silent
        stem compresses to almost nothing and AAC's bitrate is only an average) plus, with
        ``clip="rescale"``, the raw float32 copy staged until the shared gain is known (for a
        ``stem.mp4``, of its five stereo tracks). Used to refuse a track that cannot fit before any
        work is done.

        Args:
            frames: stem length in frames at ``samplerate``.
            channels: stem channels (a ``stem.mp4`` is always stereo).
            samplerate: the rate the stem is written at (Hz).
        """
        if self.is_stem_file:
            return STEM_TRACKS * frames * MODEL_CHANNELS * 4 if self.clip == "rescale" else 0
        stage = frames * channels * 4 if self.clip == "rescale" else 0
        if self.format == "wav":
            encoded = frames * channels * {"16": 2, "24": 3, "32f": 4}[self.bit_depth]
        elif self.format == "mp3":
            encoded = _mp3_kbps(self.mp3_bitrate, samplerate) * 1000 // 8 * frames // samplerate
        else:
            encoded = 0
        return stage + encoded

    def check_samplerate(self, requested: int) -> None:
        """Refuse an explicitly requested output rate this format cannot store (instead of changing it).

        Raises:
            InvalidOptionError: mp3 or AAC at a rate it lacks; the message lists the rates it has.
        """
        limit = self.rate_limit()
        if limit is not None and requested not in limit[1]:
            codec, rates, remedy = limit
            listed = ", ".join(str(rate) for rate in rates)
            raise InvalidOptionError(
                f"--sample-rate {requested}: {codec} cannot store it; use one of {listed} Hz, "
                f"'input', or {remedy}",
                option="--sample-rate",
            )

    def rate_limit(self) -> tuple[str, tuple[int, ...], str] | None:
        """``(codec, the only rates it stores, the option that lifts the limit)``; ``None``: any rate.

        ``("MP3", MP3_SAMPLERATES, "--format flac/wav")`` for mp3, ``("AAC", AAC_SAMPLERATES,
        "--stem-codec alac")`` for an AAC stem file.
        """
        if self.format == "mp3":
            return "MP3", MP3_SAMPLERATES, "--format flac/wav"
        if self.is_stem_file and self.stem_codec == "aac":
            return "AAC", AAC_SAMPLERATES, "--stem-codec alac"
        return None

    def _soundfile_args(self, samplerate: int) -> dict[str, Any]:
        if self.format == "mp3":
            return {
                "format": "MP3",
                "subtype": "MPEG_LAYER_III",
                "bitrate_mode": "CONSTANT",
                "compression_level": _mp3_compression_level(self.mp3_bitrate, samplerate),
            }
        return {"format": self.format.upper(), "subtype": _SUBTYPES[self.bit_depth]}


def _mp3_bitrate_range(samplerate: int) -> tuple[int, int]:
    """The CBR range (kbit/s) of the MPEG version that has ``samplerate``: MPEG-1, MPEG-2 or MPEG-2.5."""
    return (32, 320) if samplerate >= 32000 else (8, 160) if samplerate >= 16000 else (8, 64)


def _mp3_kbps(kbps: int, samplerate: int) -> int:
    """The bitrate an mp3 at ``samplerate`` really gets when ``kbps`` is asked for."""
    low, high = _mp3_bitrate_range(samplerate)
    return min(max(kbps, low), high)


def _mp3_compression_level(kbps: int, samplerate: int) -> float:
    """libsndfile maps compression level 0..1 linearly onto the MPEG version's CBR range, max to min."""
    low, high = _mp3_bitrate_range(samplerate)
    return min((high - _mp3_kbps(kbps, samplerate)) / (high - low), 0.999)  # 1.0 is refused by libsndfile


@dataclass(frozen=True, slots=True)
class StemStats:
    """What was written for one stem.

    Attributes:
        name: the stem's name.
        path: its final path.
        frames: frames per channel in the file.
        samplerate: its rate (Hz).
        channels: its channel count.
        peak: max |sample| before the shared gain (linear; full scale = 1.0).
        rms: root mean square over all samples and channels, before the shared gain (linear).
        clipped_samples: samples beyond ±1.0 in the file as written (clamped, or kept by float +
            ``none``); 0 in ``rescale`` mode.
    """

    name: str
    path: Path
    frames: int
    samplerate: int
    channels: int
    peak: float
    rms: float
    clipped_samples: int

    @property
    def peak_dbfs(self) -> float:
        """:attr:`peak` in dB relative to full scale (``-inf`` for silence)."""
        return 20.0 * math.log10(self.peak) if self.peak > 0 else -math.inf


@dataclass(frozen=True, slots=True)
class TrackWriteReport:
    """What :meth:`TrackWriter.close` wrote.

    Attributes:
        stems: per-stem statistics, in the order the stems were given.
        gain: the gain applied to every stem (linear; 1.0 = none).
        clip: the clip mode used.
    """

    stems: tuple[StemStats, ...]
    gain: float
    clip: ClipMode

    @property
    def gain_db(self) -> float:
        """:attr:`gain` in dB."""
        return 20.0 * math.log10(self.gain)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The final paths, in stem order."""
        return tuple(s.path for s in self.stems)


STALE_TEMP_AGE_S = 600.0
"""A temporary stem file untouched for this long belongs to a run that was killed (s), whoever wrote it."""

_HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


def temp_token() -> str:
    """The token of this process's temporary names: ``<pid>-<host>-<random>`` (hexadecimal; the host as a
    16-bit hash of its name), so that a later run can tell whether the writer is still alive."""
    return f"{os.getpid():x}-{_HOST_TAG}-{uuid.uuid4().hex[:6]}"


def _owner_is_gone(token: str) -> bool:
    """Whether the process a token names is known to be dead: written on this host, by a process that no
    longer exists (an older token, another host's or a live process's is not known to be)."""
    parts = token.split("-")
    if len(parts) != 3 or parts[1] != _HOST_TAG or os.name != "posix":
        return False
    try:
        pid = int(parts[0], 16)
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # ours: a writer of this process may be using it
    try:
        os.kill(pid, 0)  # signal 0: is there such a process?
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's)
        return False
    return False


def remove_stale_temporaries(paths: Iterable[Path], *, older_than_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete temporaries a killed run left for these final stem paths (``.<name>.<token>[.mux].partial``,
    ``.<name>.<token>.stage``).

    A temporary whose writing process is dead (its token names a process of this host that no longer
    exists) is removed whatever its age; any other only when untouched for ``older_than_s`` (a live writer
    touches its temporaries continuously; a reused process id or another host's run is covered so).
    Returns what was removed.
    """
    removed = []
    now = time.time()
    for final in paths:
        prefix = f".{final.name}."
        for temp in final.parent.glob(f"{glob.escape(prefix)}*"):
            if temp.suffix not in (".partial", ".stage"):
                continue
            token = temp.name[len(prefix) :].split(".")[0]
            try:
                if _owner_is_gone(token) or now - temp.stat().st_mtime > older_than_s:
                    temp.unlink()
                    removed.append(temp)
            except OSError:
                continue  # gone already, or not ours to delete
    return removed


class StemWriter:
    """One stem: stream blocks in, encode to a temporary file, publish it with :meth:`publish`.

    Most callers use :class:`TrackWriter`, which drives one of these per stem and shares the gain.

    Args:
        name: the stem's name (for reports).
        path: the final path.
        options: encoding options.
        samplerate: the output rate asked for (Hz); see :meth:`WriteOptions.samplerate_for`.
        channels: output channel count (1 or the input's).
        frames: exact output length in frames at ``samplerate`` (``None``: what the resampler gives).
        samplerate_in, channels_in: what the blocks are (default: the model's 44100 Hz stereo).
        quality: soxr quality preset.

    Raises:
        AudioWriteError: the folder or the temporary file cannot be created.
    """

    def __init__(
        self,
        name: str,
        path: Path | str,
        options: WriteOptions,
        *,
        samplerate: int,
        channels: int,
        frames: int | None = None,
        samplerate_in: int = MODEL_SAMPLERATE,
        channels_in: int = MODEL_CHANNELS,
        quality: ResampleQuality = "HQ",
    ) -> None:
        if channels not in (1, channels_in):
            raise ValueError(f"stems can be mono or {channels_in}-channel, not {channels}-channel")
        self.name = name
        self.path = Path(path)
        self.options = options
        self.samplerate = options.samplerate_for(samplerate)
        self.channels = channels
        self.channels_in = channels_in
        self.frames = None if frames is None else output_frames(frames, samplerate, self.samplerate)
        token = temp_token()
        self.temp_path = self.path.with_name(f".{self.path.name}.{token}.partial")
        self.stage_path = self.path.with_name(f".{self.path.name}.{token}.stage")
        self._resampler = StreamResampler(samplerate_in, self.samplerate, channels, quality)
        self._clamp = options.clip == "clamp" or not options.is_float
        self._written = 0
        self._peak = 0.0
        self._sumsq = 0.0
        self._over = 0
        self._ended = False
        self._encoder: sf.SoundFile | None = None
        self._stage: BinaryIO | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._encoder = self._open_encoder()
            if options.clip == "rescale":
                self._stage = self.stage_path.open("wb")
        except (OSError, sf.SoundFileError, RuntimeError) as err:
            self.abort()
            raise self._error(err) from err

    @property
    def peak(self) -> float:
        """max |sample| written so far, before any gain (linear)."""
        return self._peak

    def write(self, block: FloatArray) -> None:
        """Append a float32 ``(channels_in, n)`` block at ``samplerate_in``.

        Raises:
            ValueError: the block has the wrong shape or holds NaN/infinity (an engine bug).
            AudioWriteError: the disk refused the data.
        """
        if self._ended:
            raise RuntimeError(f"{self.name}: the stream has ended")
        if block.ndim != 2 or block.shape[0] != self.channels_in:
            raise ValueError(f"{self.name}: expected a ({self.channels_in}, n) block, got {block.shape}")
        x = remix_frames(np.ascontiguousarray(block.T, dtype=np.float32), self.channels)
        self._emit(self._resampler.process(x))

    def end_stream(self) -> None:
        """Flush the resampler and pad to the exact length, so :attr:`peak` is final. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._emit(self._resampler.flush())
        if self.frames is not None and self._written < self.frames:
            self._emit(np.zeros((self.frames - self._written, self.channels), dtype=np.float32))

    def finish(self, gain: float = 1.0) -> StemStats:
        """Flush, close, and apply ``gain`` (re-encoding from the stage) if it is not 1.

        The result is complete under :attr:`temp_path`; :meth:`publish` moves it into place.

        Raises:
            AudioWriteError: the disk refused the data.
        """
        self.end_stream()
        try:
            self._close_files()
            if gain != 1.0:
                self._encode_from_stage(gain)
            self.stage_path.unlink(missing_ok=True)
        except (OSError, sf.SoundFileError, RuntimeError) as err:
            raise self._error(err) from err
        samples = self._written * self.channels
        return StemStats(
            name=self.name,
            path=self.path,
            frames=self._written,
            samplerate=self.samplerate,
            channels=self.channels,
            peak=self._peak,
            rms=math.sqrt(self._sumsq / samples) if samples else 0.0,
            clipped_samples=0 if self.options.clip == "rescale" else self._over,
        )

    def publish(self) -> None:
        """Rename the finished temporary file to the final path (atomic on one filesystem)."""
        try:
            os.replace(self.temp_path, self.path)
        except OSError as err:
            raise self._error(err) from err

    def abort(self) -> None:
        """Close and delete the temporary files; the final path is left untouched. Never raises."""
        try:
            self._close_files()
        except (OSError, sf.SoundFileError, RuntimeError):
            pass
        for temp in (self.temp_path, self.stage_path):
            try:
                temp.unlink(missing_ok=True)
            except OSError:
                pass

    # --- internals ---------------------------------------------------------------------------

    def _open_encoder(self) -> sf.SoundFile:
        return sf.SoundFile(
            str(self.temp_path),
            "w",
            samplerate=self.samplerate,
            channels=self.channels,
            **self.options._soundfile_args(self.samplerate),
        )

    def _emit(self, y: FloatArray) -> None:
        """Account for and write ``(frames, channels)`` output-rate audio."""
        if self.frames is not None:
            y = y[: max(self.frames - self._written, 0)]
        if y.shape[0] == 0:
            return
        high, low = float(y.max()), float(y.min())  # two passes, no |y| temporary
        if not (math.isfinite(high) and math.isfinite(low)):
            raise ValueError(f"{self.name}: the stem holds NaN or infinity (engine bug)")
        peak = max(high, -low)
        self._peak = max(self._peak, peak)
        self._sumsq += float(np.dot(y.ravel(), y.ravel()))
        if peak > 1.0:
            self._over += int(np.count_nonzero(np.abs(y) > 1.0))
        try:
            if self._stage is not None:
                y.tofile(self._stage)
            assert self._encoder is not None
            self._encoder.write(np.clip(y, -1.0, 1.0) if self._clamp and peak > 1.0 else y)
        except (OSError, sf.SoundFileError, RuntimeError) as err:
            raise self._error(err) from err
        self._written += y.shape[0]

    def _encode_from_stage(self, gain: float) -> None:
        """Re-encode the whole stem from its float32 stage, times ``gain``, over the temporary file."""
        with self.stage_path.open("rb") as stage, self._open_encoder() as encoder:
            while True:
                flat = np.fromfile(stage, dtype=np.float32, count=_STAGE_CHUNK * self.channels)
                if flat.size == 0:
                    break
                y = flat.reshape(-1, self.channels) * np.float32(gain)
                encoder.write(np.clip(y, -1.0, 1.0) if self._clamp else y)

    def _close_files(self) -> None:
        encoder, stage = self._encoder, self._stage
        self._encoder = self._stage = None
        try:
            if encoder is not None:
                encoder.close()
        finally:
            if stage is not None:
                stage.close()

    def _error(self, err: BaseException) -> AudioWriteError:
        reason = getattr(err, "strerror", None) or first_line(err)
        return AudioWriteError(
            f"{self.path}: cannot write the stem ({reason}); check that the folder is writable "
            "and the disk has space",
            path=self.path,
        )


def check_track_space(
    paths: Iterable[Path | str], options: WriteOptions, *, samplerate: int, channels: int, frames: int
) -> None:
    """Refuse a track whose stems cannot fit: each of ``paths`` needs :meth:`WriteOptions.min_bytes`.

    Args:
        paths: the stems' final paths (their folders may not exist yet).
        options: encoding options.
        samplerate: the output rate asked for (Hz); see :meth:`WriteOptions.samplerate_for`.
        channels: stem channels.
        frames: stem length in frames at ``samplerate`` (a header's count is good enough).

    Raises:
        AudioWriteError: a disk has less free space than its stems need; names the folder and both sizes.
    """
    rate = options.samplerate_for(samplerate)
    per_file = options.min_bytes(output_frames(frames, samplerate, rate), channels, rate)
    need: dict[Path, int] = {}
    for path in paths:
        folder = nearest_existing(Path(path).parent) or Path(path).parent
        need[folder] = need.get(folder, 0) + per_file
    for folder, wanted in need.items():
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue  # cannot tell: the write itself will report a full disk
        if free < wanted:
            raise AudioWriteError(
                f"{folder}: not enough free disk space for this track's stems (at least {_size(wanted)} "
                f"needed, {_size(free)} free); free some space or write elsewhere with -o",
                path=folder,
            )


def _size(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{-(-n // 1000)} kB"  # rounded up: 1 byte is 1 kB


class TrackWriter:
    """All stems of one track, written in step, published together.

    Use it as a context manager: leaving the block normally closes it (:meth:`close`), leaving it by an
    exception (``KeyboardInterrupt`` included) aborts it, deleting every temporary file.

    ::

        with TrackWriter(paths, options, samplerate=info.samplerate, channels=1, frames=n) as track:
            for blocks in engine:                  # {stem: (2, n) float32 at 44100 Hz}
                track.write_all(blocks)
        report = track.report                      # gain, per-stem peak and RMS

    Args:
        paths: final path of each stem, by stem name (order kept in the report).
        options: encoding and clipping options.
        samplerate: output rate asked for (Hz), normally the input's.
        channels: output channel count: 1 for a mono input, else 2.
        frames: exact stem length in frames at ``samplerate`` (normally the input's decoded frame
            count); ``None`` to take what the resampler gives (may differ from the input by a frame).
        tags: tags to copy onto every stem (the stem name is appended to the title); ``None``: none.
        title_fallback: the title used when ``tags`` has none (normally the input's file name stem).
        samplerate_in, channels_in, quality: see :class:`StemWriter`.

    Raises:
        AudioWriteError: a temporary file cannot be created (nothing is left behind), or, with
            ``frames`` known, the disk cannot hold the stems (:func:`check_track_space`).
    """

    def __init__(
        self,
        paths: Mapping[str, Path | str],
        options: WriteOptions | None = None,
        *,
        samplerate: int,
        channels: int,
        frames: int | None = None,
        tags: TrackTags | None = None,
        title_fallback: str = "",
        samplerate_in: int = MODEL_SAMPLERATE,
        channels_in: int = MODEL_CHANNELS,
        quality: ResampleQuality = "HQ",
    ) -> None:
        self.options = options or WriteOptions()
        if self.options.is_stem_file:
            raise ValueError("a stem.mp4 is written by StemMp4Writer, not TrackWriter")
        self.tags = tags
        self.title_fallback = title_fallback
        self.report: TrackWriteReport | None = None
        self._writers: dict[str, StemWriter] = {}
        if frames is not None:
            check_track_space(
                paths.values(), self.options, samplerate=samplerate, channels=channels, frames=frames
            )
        try:
            for name, path in paths.items():
                self._writers[name] = StemWriter(
                    name,
                    path,
                    self.options,
                    samplerate=samplerate,
                    channels=channels,
                    frames=frames,
                    samplerate_in=samplerate_in,
                    channels_in=channels_in,
                    quality=quality,
                )
        except BaseException:
            self.abort()
            raise

    @property
    def stems(self) -> tuple[str, ...]:
        """The stem names, in order."""
        return tuple(self._writers)

    def write(self, stem: str, block: FloatArray) -> None:
        """Append a float32 ``(channels_in, n)`` block to one stem. See :meth:`StemWriter.write`."""
        if self.report is not None:
            raise RuntimeError("the track is already closed")
        self._writers[stem].write(block)

    def write_all(self, blocks: Mapping[str, FloatArray]) -> None:
        """Append one block to each stem named in ``blocks``."""
        for stem, block in blocks.items():
            self.write(stem, block)

    def close(self) -> TrackWriteReport:
        """Finish every stem (shared gain), tag them, then rename them all into place.

        Returns:
            The report (also kept in :attr:`report`).

        Raises:
            AudioWriteError: a stem could not be finished or renamed (temporary files are removed).
        """
        if self.report is not None:
            return self.report
        try:
            gain = self._shared_gain()
            stats = tuple(w.finish(gain) for w in self._writers.values())
            self._tag_all()
            for writer in self._writers.values():
                writer.publish()
        except BaseException:
            self.abort()
            raise
        self.report = TrackWriteReport(stems=stats, gain=gain, clip=self.options.clip)
        return self.report

    def abort(self) -> None:
        """Delete every temporary file; no final path is created. Never raises."""
        for writer in self._writers.values():
            writer.abort()

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _shared_gain(self) -> float:
        for writer in self._writers.values():  # the resampler's tail counts towards the peak
            writer.end_stream()
        peak = max((w.peak for w in self._writers.values()), default=0.0)
        if self.options.clip != "rescale" or peak <= 1.0:
            return 1.0
        return RESCALE_PEAK / peak

    def _tag_all(self) -> None:
        if self.tags is None:
            return
        for name, writer in self._writers.items():
            stem_tags = self.tags.for_stem(name, self.title_fallback or writer.path.stem)
            try:
                write_tags(writer.temp_path, self.options.format, stem_tags)
            except (mutagen.MutagenError, OSError) as err:
                warnings.warn(
                    f"{writer.path}: tags not copied ({err}); the audio is fine",
                    TagCopyWarning,
                    stacklevel=3,
                )
