"""Streaming, atomic writing of Native Instruments stem files (``.stem.mp4``) for Traktor and Mixxx.

One file per track holds five stereo tracks at one rate (Mixxx refuses anything else):

1. the master, the input mix, *enabled* (``tkhd`` flags), so that any player plays the song;
2. to 5. drums, bass, other and vocals (:data:`~stemsplit.audio.ni_stems.NI_STEMS`), *disabled*.

Codec: AAC (FFmpeg's native encoder at ``aac_bitrate`` per track; NI's tool uses 256 kbit/s) or ALAC
(lossless, 16 or 24 bit). A stem file is always stereo: a mono input gives both channels the same
signal. The ``moov/udta/stem`` box holds the :class:`~stemsplit.audio.ni_stems.StemManifest` JSON.

How a file is made, all under hidden temporary names beside the target:

* stem blocks are resampled from the model's 44100 Hz to the output rate (soxr, as
  :class:`~stemsplit.audio.writer.StemWriter` does); master blocks arrive at the output rate; every
  track is cut or zero-padded to exactly ``frames``;
* PyAV encodes the five tracks and muxes them, interleaved, into ``.<name>.<token>.mux.partial``. The
  movie timescale is the sample rate, so the edit lists that hide the AAC encoder's 1024 priming
  samples and its end padding are exact: every track lasts ``frames`` samples;
* mutagen writes the tags (the input's title, without a stem suffix, artist, album, track, date, cover);
* the box editor (:mod:`~stemsplit.audio.isobmff`) writes ``.<name>.<token>.partial`` with ``moov``
  in front, the manifest, the track flags, and every chunk offset moved;
* :func:`os.replace` publishes it. An exception or interrupt before that removes every temporary
  file; nothing ever appears under the final name half written.

Clipping (``clip``): the master counts as a fifth track.

* ``rescale`` (default): if any of the five tracks would exceed full scale, all five are multiplied
  by one gain, ``RESCALE_PEAK / max peak``. The stems then still sum to the master, so a DJ application
  that switches between the master and the stems does not change level, and nothing in the file clips
  (the master of a lossy input can peak above full scale). When nothing clips, the usual case, the
  master is the input mix as decoded. As with :class:`~stemsplit.audio.writer.TrackWriter`, each track
  is also staged as float32 until the gain is known, and the file is encoded again from the stages
  only when a gain is needed.
* ``clamp`` and ``none``: samples beyond ±1.0 are clamped (ALAC stores integers; AAC, like mp3, is
  fed clamped audio).

ALAC samples are ``round(x · 2^(bits−1))`` clipped to the integer range: the inverse of the ``v / 2^(bits−1)``
that decoders use, so integer audio survives a round trip unchanged.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import av
import mutagen
import numpy as np

from stemsplit.audio import isobmff
from stemsplit.audio._common import MODEL_CHANNELS, MODEL_SAMPLERATE, FloatArray, ResampleQuality
from stemsplit.audio.convert import StreamResampler, output_frames
from stemsplit.audio.ni_stems import NI_STEMS, StemManifest, fold_sources
from stemsplit.audio.tags import TrackTags, write_tags
from stemsplit.audio.writer import (
    RESCALE_PEAK,
    STEM_TRACKS,
    StemStats,
    TrackWriteReport,
    WriteOptions,
    check_track_space,
    temp_token,
)
from stemsplit.errors import AudioWriteError, TagCopyWarning, first_line

MASTER = "master"
"""The report's name for track 1, the input mix."""

_CHUNK = 1 << 16  # frames per track and read when encoding again from the stages


class _Track:
    """One track of a stem file: exact length, peak and RMS, and (``rescale``) a float32 stage.

    ``push`` and ``end`` return the private ``(frames, 2)`` audio to encode, at the output rate.
    """

    def __init__(self, name: str, frames: int, resampler: StreamResampler, stage_path: Path | None) -> None:
        self.name = name
        self.frames = frames
        self.stage_path = stage_path
        self.written = 0
        self.peak = 0.0
        self._resampler = resampler
        self._sumsq = 0.0
        self._over = 0
        self._ended = False
        self._stage: BinaryIO | None = None

    def open_stage(self) -> None:
        if self.stage_path is not None:
            self._stage = self.stage_path.open("wb")

    def push(self, block: FloatArray) -> FloatArray:
        """Take a float32 ``(2, n)`` block at the input rate."""
        if self._ended:
            raise RuntimeError(f"{self.name}: the stream has ended")
        if block.ndim != 2 or block.shape[0] != MODEL_CHANNELS:
            raise ValueError(f"{self.name}: expected a ({MODEL_CHANNELS}, n) block, got {block.shape}")
        return self._account(self._resampler.process(np.ascontiguousarray(block.T, dtype=np.float32)))

    def end(self) -> FloatArray:
        """Flush the resampler and pad to the exact length, so :attr:`peak` is final. Idempotent."""
        if self._ended:
            return np.zeros((0, MODEL_CHANNELS), dtype=np.float32)
        self._ended = True
        tail = self._account(self._resampler.flush())
        pad = np.zeros((max(self.frames - self.written, 0), MODEL_CHANNELS), dtype=np.float32)
        return np.concatenate([tail, self._account(pad)])

    def stats(self, path: Path, samplerate: int, rescale: bool) -> StemStats:
        samples = self.written * MODEL_CHANNELS
        return StemStats(
            name=self.name,
            path=path,
            frames=self.written,
            samplerate=samplerate,
            channels=MODEL_CHANNELS,
            peak=self.peak,
            rms=math.sqrt(self._sumsq / samples) if samples else 0.0,
            clipped_samples=0 if rescale else self._over,
        )

    def close_stage(self) -> None:
        stage, self._stage = self._stage, None
        if stage is not None:
            stage.close()

    def _account(self, y: FloatArray) -> FloatArray:
        y = y[: max(self.frames - self.written, 0)]
        if y.shape[0] == 0:
            return y
        high, low = float(y.max()), float(y.min())
        if not (math.isfinite(high) and math.isfinite(low)):
            raise ValueError(f"{self.name}: the track holds NaN or infinity (engine bug)")
        peak = max(high, -low)
        self.peak = max(self.peak, peak)
        self._sumsq += float(np.dot(y.ravel(), y.ravel()))
        if peak > 1.0:
            self._over += int(np.count_nonzero(np.abs(y) > 1.0))
        if self._stage is not None:
            y.tofile(self._stage)
        self.written += y.shape[0]
        return y


class _Muxer:
    """PyAV's MP4 muxer with one encoder per track, fed private float32 ``(frames, 2)`` chunks."""

    def __init__(self, path: Path, options: WriteOptions, samplerate: int, tracks: int) -> None:
        self.samplerate = samplerate
        self._pool: ThreadPoolExecutor | None = None
        self._bits = 0 if options.stem_codec == "aac" else int(options.bit_depth)
        self._format = {0: "fltp", 16: "s16p", 24: "s32p"}[self._bits]
        self._container: Any = av.open(
            str(path), "w", format="ipod", container_options={"movie_timescale": str(samplerate)}
        )
        try:
            self._streams = []
            for _ in range(tracks):
                stream = self._container.add_stream(
                    options.stem_codec, rate=samplerate, layout="stereo", format=self._format
                )
                if options.stem_codec == "aac":
                    stream.bit_rate = options.aac_bitrate * 1000
                self._streams.append(stream)
        except BaseException:
            self.abort()
            raise
        self._pts = [0] * tracks
        threads = min(tracks, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="stem-mp4") if threads > 1 else None

    def encode(self, chunks: Sequence[tuple[int, FloatArray]], gain: float = 1.0) -> None:
        """Encode ``(track, (frames, 2) float32)`` chunks, times ``gain``, clamped to ±1.

        The tracks' encoders run in parallel threads (FFmpeg releases the GIL); their packets are
        muxed here, in track order.
        """
        frames = [(k, self._frame(k, y, gain)) for k, y in chunks if y.shape[0]]
        if self._pool is not None and len(frames) > 1:
            encoded = list(self._pool.map(lambda item: self._streams[item[0]].encode(item[1]), frames))
        else:
            encoded = [self._streams[k].encode(frame) for k, frame in frames]
        for packets in encoded:
            for packet in packets:
                self._container.mux(packet)

    def close(self) -> None:
        """Flush every encoder and finish the file."""
        for stream in self._streams:
            for packet in stream.encode(None):
                self._container.mux(packet)
        self._container.close()
        self._container = None
        self._shutdown()

    def abort(self) -> None:
        """Close the file without flushing. Never raises."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        self._shutdown()

    def _frame(self, track: int, y: FloatArray, gain: float) -> Any:
        x = np.clip(y.T * np.float32(gain) if gain != 1.0 else y.T, -1.0, 1.0)
        if self._bits:
            scale = float(1 << (self._bits - 1))
            q = np.clip(np.rint(x * np.float32(scale)), -scale, scale - 1)
            x = q.astype(np.int16) if self._bits == 16 else q.astype(np.int32) << 8
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=self._format, layout="stereo")
        frame.sample_rate = self.samplerate
        frame.time_base = Fraction(1, self.samplerate)
        frame.pts = self._pts[track]
        self._pts[track] += y.shape[0]
        return frame

    def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class StemMp4Writer:
    """One track's stem file: the master and four stems streamed in, published atomically on close.

    Use it as a context manager like :class:`~stemsplit.audio.writer.TrackWriter`: leaving the block
    normally closes it (:meth:`close`), leaving it by an exception (``KeyboardInterrupt`` included)
    aborts it, deleting every temporary file.

    ::

        with StemMp4Writer(path, options, sources=bag.sources, samplerate=rate, frames=n) as track:
            track.write_master(mix)           # (2, m) float32 at track.samplerate
            track.write_all(blocks)           # {source: (2, n) float32 at 44100 Hz}, in any step
        report = track.report                 # gain; master and stems' peak and RMS

    Args:
        path: the final path (``….stem.mp4``).
        options: encoding and clipping options with ``format="stem.mp4"``.
        sources: the model's source names, folded into the four stems by
            :func:`~stemsplit.audio.ni_stems.fold_sources` (``htdemucs_6s``: guitar and piano into other).
        samplerate: the output rate asked for (Hz), normally the input's; AAC falls back to 44100 for a
            rate it lacks (:meth:`WriteOptions.samplerate_for`). :attr:`samplerate` is the one written.
        frames: exact length of every track in frames at ``samplerate``, at least 1 (normally the
            input's decoded frame count).
        tags: tags to write (the title as is, no stem suffix); ``None``: none.
        title_fallback: the title used when ``tags`` has none (normally the input's file name stem).
        manifest: stem names and colours; ``None``: NI's defaults.
        samplerate_in: the rate of the stem blocks (Hz).
        quality: soxr quality preset for the stems' resampling.

    Raises:
        InvalidOptionError: the sources cannot be folded into drums, bass, other and vocals.
        AudioWriteError: a temporary file cannot be created (nothing is left behind), or the disk
            cannot hold the track (:func:`~stemsplit.audio.writer.check_track_space`).
    """

    def __init__(
        self,
        path: Path | str,
        options: WriteOptions,
        *,
        sources: Sequence[str],
        samplerate: int,
        frames: int,
        tags: TrackTags | None = None,
        title_fallback: str = "",
        manifest: StemManifest | None = None,
        samplerate_in: int = MODEL_SAMPLERATE,
        quality: ResampleQuality = "HQ",
    ) -> None:
        if not options.is_stem_file:
            raise ValueError(f"StemMp4Writer writes stem.mp4, not {options.format}")
        if frames < 1:
            raise ValueError(f"a stem file needs at least one frame, got {frames}")
        self.path = Path(path)
        self.options = options
        self.fold = fold_sources(sources)
        self.samplerate = options.samplerate_for(samplerate)
        self.frames = output_frames(frames, samplerate, self.samplerate)
        self.tags = tags
        self.title_fallback = title_fallback
        self.manifest = manifest or StemManifest()
        self.report: TrackWriteReport | None = None
        check_track_space([self.path], options, samplerate=samplerate, channels=MODEL_CHANNELS, frames=frames)
        token = temp_token()
        self.temp_path = self.path.with_name(f".{self.path.name}.{token}.partial")
        self._mux_path = self.path.with_name(f".{self.path.name}.{token}.mux.partial")
        rescale = options.clip == "rescale"
        rates = [(self.samplerate, MASTER)] + [(samplerate_in, stem) for stem in NI_STEMS]
        self._tracks = [
            _Track(
                name,
                self.frames,
                StreamResampler(rate, self.samplerate, MODEL_CHANNELS, quality),
                self.path.with_name(f".{self.path.name}.{token}.{k}.stage") if rescale else None,
            )
            for k, (rate, name) in enumerate(rates)
        ]
        self._muxer: _Muxer | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for track in self._tracks:
                track.open_stage()
            self._muxer = _Muxer(self._mux_path, options, self.samplerate, STEM_TRACKS)
        except (OSError, av.FFmpegError) as err:
            self.abort()
            raise self._error(err) from err
        except BaseException:
            self.abort()
            raise

    @property
    def folded(self) -> tuple[str, ...]:
        """The model's sources summed into ``other`` besides ``other`` itself (``guitar``, ``piano``)."""
        return tuple(s for s in self.fold["other"] if s != "other")

    def write_master(self, block: FloatArray) -> None:
        """Append a float32 ``(2, n)`` block of the input mix at :attr:`samplerate`.

        Raises:
            ValueError: the block has the wrong shape or holds NaN/infinity.
            AudioWriteError: the disk or the encoder refused the data.
        """
        self._encode([(0, block)])

    def write_all(self, blocks: Mapping[str, FloatArray]) -> None:
        """Append one float32 ``(2, n)`` block of every source at ``samplerate_in`` (same ``n`` each).

        Raises:
            ValueError: a source is missing, or a block has the wrong shape or holds NaN/infinity.
            AudioWriteError: the disk or the encoder refused the data.
        """
        missing = [s for stem in NI_STEMS for s in self.fold[stem] if s not in blocks]
        if missing:
            raise ValueError(f"no block for source {missing[0]!r}")
        summed = []
        for k, stem in enumerate(NI_STEMS, start=1):
            parts = [blocks[s] for s in self.fold[stem]]
            block = parts[0]
            if len(parts) > 1:
                block = parts[0].astype(np.float32, copy=True)
                for part in parts[1:]:
                    block += part
            summed.append((k, block))
        self._encode(summed)

    def close(self) -> TrackWriteReport:
        """Finish every track (shared gain), tag, move ``moov`` in front, then rename into place.

        Returns:
            The report (also kept in :attr:`report`): the master first, then the four stems.

        Raises:
            AudioWriteError: the file could not be finished or renamed (temporary files are removed).
        """
        if self.report is not None:
            return self.report
        try:
            self._encode([(k, None) for k in range(STEM_TRACKS)])
            peak = max(track.peak for track in self._tracks)
            rescale = self.options.clip == "rescale"
            gain = RESCALE_PEAK / peak if rescale and peak > 1.0 else 1.0
            try:
                assert self._muxer is not None
                self._muxer.close()
                self._muxer = None  # closed: abort must not close it again
                for track in self._tracks:
                    track.close_stage()
                if gain != 1.0:
                    self._encode_from_stages(gain)
                for track in self._tracks:
                    if track.stage_path is not None:
                        track.stage_path.unlink()
                self._tag()
                isobmff.rewrite(self._mux_path, self.temp_path, self._edit, moov_first=True)
                os.replace(self.temp_path, self.path)
                self._mux_path.unlink()
            except (OSError, av.FFmpegError, isobmff.BoxError) as err:
                raise self._error(err) from err
        except BaseException:
            self.abort()
            raise
        stats = tuple(t.stats(self.path, self.samplerate, rescale) for t in self._tracks)
        self.report = TrackWriteReport(stems=stats, gain=gain, clip=self.options.clip)
        return self.report

    def abort(self) -> None:
        """Delete every temporary file; the final path is left untouched. Never raises."""
        muxer, self._muxer = self._muxer, None
        if muxer is not None:
            muxer.abort()
        for track in self._tracks:
            with contextlib.suppress(OSError):
                track.close_stage()
        temps = [self.temp_path, self._mux_path, *(t.stage_path for t in self._tracks if t.stage_path)]
        for temp in temps:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)

    def __enter__(self) -> StemMp4Writer:
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

    # --- internals ---------------------------------------------------------------------------

    def _encode(self, blocks: Sequence[tuple[int, FloatArray | None]]) -> None:
        """Account for a block of each track ``k`` given (``None``: its end) and encode what they give."""
        if self.report is not None or self._muxer is None:
            raise RuntimeError("the stem file is already closed")
        try:
            chunks = [(k, self._tracks[k].end() if b is None else self._tracks[k].push(b)) for k, b in blocks]
            self._muxer.encode(chunks)
        except (OSError, av.FFmpegError) as err:
            raise self._error(err) from err

    def _encode_from_stages(self, gain: float) -> None:
        """Mux the whole file again from the float32 stages, times ``gain``, interleaving the tracks."""
        muxer = self._muxer = _Muxer(self._mux_path, self.options, self.samplerate, STEM_TRACKS)
        with contextlib.ExitStack() as stack:
            stages = [stack.enter_context(t.stage_path.open("rb")) for t in self._tracks if t.stage_path]
            while True:
                flats = [np.fromfile(f, dtype=np.float32, count=_CHUNK * MODEL_CHANNELS) for f in stages]
                if not any(flat.size for flat in flats):
                    break
                muxer.encode([(k, flat.reshape(-1, MODEL_CHANNELS)) for k, flat in enumerate(flats)], gain)
        muxer.close()
        self._muxer = None

    def _tag(self) -> None:
        if self.tags is None:
            return
        title = self.tags.title or self.title_fallback or self.path.name.removesuffix(".stem.mp4")
        try:
            write_tags(self._mux_path, "stem.mp4", replace(self.tags, title=title))
        except (mutagen.MutagenError, OSError) as err:
            warnings.warn(
                f"{self.path}: tags not copied ({err}); the audio is fine", TagCopyWarning, stacklevel=4
            )

    def _edit(self, moov: isobmff.Box) -> None:
        """Mark the master enabled and the stems disabled; add the stem manifest."""
        tracks = isobmff.tracks(moov)
        if len(tracks) != STEM_TRACKS:
            raise isobmff.BoxError(f"the muxer wrote {len(tracks)} tracks, not {STEM_TRACKS}")
        for k, trak in enumerate(tracks):
            isobmff.set_track_enabled(trak, k == 0)
        isobmff.set_user_data(moov, "stem", self.manifest.to_json())

    def _error(self, err: BaseException) -> AudioWriteError:
        reason = getattr(err, "strerror", None) or first_line(err)
        return AudioWriteError(
            f"{self.path}: cannot write the stem file ({reason}); check that the folder is writable "
            "and the disk has space",
            path=self.path,
        )
