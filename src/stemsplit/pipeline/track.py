"""One track, in the three steps the batch runs on different threads: decode, separate, write.

* :func:`decode_track` reads the input once (decode → downmix → resample to the model's rate) into a
  :class:`~stemsplit.audio.buffer.TrackBuffer` while computing the normalisation statistics, after checking
  that the stems will fit on the disk.
* The separation itself is the engine's (:class:`~stemsplit.inference.TrackStream` on a shared runner);
  it hands finished blocks to the track's :class:`StemSink`.
* :class:`StemSink` turns those blocks into the requested stems (``no_<stem>`` by ``add`` or ``minus``),
  writes them atomically, records the sidecar and builds the :class:`~stemsplit.pipeline.results.TrackResult`.
  With ``--format stem.mp4`` the stems go into one :class:`~stemsplit.audio.StemMp4Writer` instead of a
  :class:`~stemsplit.audio.TrackWriter`, and the input is read a second time, at the stem file's rate, for
  its master track (the decoded copy is at the model's rate).

:func:`separate_track` runs the three in the calling thread, for one file (the library's
``Separator.separate_file``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stemsplit.audio import (
    MASTER,
    AudioInfo,
    AudioReader,
    StemMp4Writer,
    TrackWriter,
    check_track_space,
    output_frames,
    read_tags,
    remove_stale_temporaries,
    stem_channels,
)
from stemsplit.audio.buffer import TrackBuffer
from stemsplit.errors import (
    AudioDecodeError,
    NearSilentStemWarning,
    SampleRateWarning,
    SidecarWarning,
    SilentInputWarning,
)
from stemsplit.inference import (
    DeviceRunner,
    HostBlock,
    ModelBag,
    RunningStats,
    Scheduler,
    TrackStats,
    TrackStream,
)
from stemsplit.pipeline.options import STEM_FILE, SeparationOptions, StemPlan, run_plan
from stemsplit.pipeline.outputs import TrackOutputs, folders_removed_unless_finished
from stemsplit.pipeline.results import NEAR_SILENT_DBFS, TrackResult, collect_warnings, noted_so_far
from stemsplit.pipeline.sidecar import Provenance, superseded_files, write_sidecar

_BLOCK_FRAMES = 1 << 16

MEMORY_SECONDS = 600.0
"""Decoded audio kept in memory per track (10 minutes, 212 MB in stereo float32); longer tracks are held in
a temporary file instead, so memory does not grow with the track's length."""


@dataclass
class DecodedTrack:
    """An input decoded once, ready for the engine.

    Attributes:
        path, outputs: the input and where its stems go.
        info: its probe.
        audio: the decoded audio at the model's rate and channels.
        stats: its normalisation statistics.
        frames_in: source frames decoded (at the input's rate).
        out_rate: the stems' rate (Hz).
        peak_dbfs: the decoded input's peak (dBFS; ``-inf`` for silence).
        timings: ``decode`` seconds so far (``separate`` and ``total`` are added by the sink).
        started: when work on the track began (``time.perf_counter``).
    """

    path: Path
    outputs: TrackOutputs
    info: AudioInfo
    audio: TrackBuffer
    stats: TrackStats
    frames_in: int
    out_rate: int
    started: float
    peak_dbfs: float = -math.inf
    timings: dict[str, float] = field(default_factory=dict)


def decode_track(
    bag: ModelBag,
    path: Path,
    outputs: TrackOutputs,
    options: SeparationOptions,
    *,
    memory_frames: int | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> DecodedTrack:
    """Decode ``path`` once into memory (or a temporary file past ``memory_frames``) with its statistics.

    Args:
        bag: the model (its rate and channels).
        path, outputs: the input and its planned outputs (checked for disk space first).
        options: the run's settings (output format and rate).
        memory_frames: frames kept in memory (default :data:`MEMORY_SECONDS` at the model's rate).
        stop: polled between blocks; True abandons the decode (``KeyboardInterrupt``).

    Raises:
        StemsplitError: unreadable input, an input holding NaN or infinite samples, or not enough disk
            space for the stems.
        KeyboardInterrupt: ``stop`` said so.
    """
    started = time.perf_counter()
    reader = AudioReader(
        path, samplerate=bag.samplerate, channels=bag.audio_channels, block_frames=_BLOCK_FRAMES
    )
    info = reader.info
    write_options = options.write_options()
    out_rate = write_options.samplerate_for(options.samplerate or info.samplerate)
    remove_stale_temporaries(outputs.stems.values())  # left by a run that was killed outright
    if info.size_frames is not None:  # before decoding, which takes a while on a long track
        check_track_space(
            outputs.stems.values(),
            write_options,
            samplerate=out_rate,
            channels=stem_channels(info),
            frames=output_frames(info.size_frames, info.samplerate, out_rate),  # what the file can hold
        )
    in_memory = memory_frames if memory_frames is not None else int(MEMORY_SECONDS * bag.samplerate)
    audio = TrackBuffer(bag.audio_channels, memory_frames=in_memory)
    running = RunningStats()
    peak = 0.0
    try:
        for block in reader:
            if stop():
                raise KeyboardInterrupt
            if block.size:
                block_peak = float(np.abs(block).max())  # NaN or inf when any sample is
                if not math.isfinite(block_peak):
                    raise _non_finite(path, audio.end / bag.samplerate)
                peak = max(peak, block_peak)
            audio.append(block)
            running.update(block)
    except BaseException:
        audio.close()
        raise
    audio.finish()
    limit = write_options.rate_limit()
    if limit is not None and out_rate != info.samplerate and options.samplerate is None:  # mp3, AAC
        warnings.warn(
            SampleRateWarning(
                f"{path}: {limit[0]} cannot store the input's {info.samplerate} Hz; the stems are written "
                f"at {out_rate} Hz (use {limit[2]} to keep {info.samplerate} Hz)",
                requested=info.samplerate,
                written=out_rate,
            ),
            stacklevel=2,
        )
    frames_in = reader.frames_in or 0
    peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
    track = DecodedTrack(
        path, outputs, info, audio, running.result(), frames_in, out_rate, started, peak_dbfs
    )
    track.timings["decode"] = time.perf_counter() - started
    return track


def _non_finite(path: Path, at_s: float) -> AudioDecodeError:
    return AudioDecodeError(
        f"{path}: the input holds NaN or infinite samples (from about {at_s:.1f} s); the file is damaged "
        "(floating-point samples written by a faulty program): re-export it",
        path=path,
    )


class StemSink:
    """Writes one track's stems from the engine's blocks, then its sidecar; builds its result.

    Args:
        track: the decoded track.
        options: the run's settings; plan: which stems are computed and written.
        samplerate, sources: the model's rate (Hz) and sources.
        provenance: recorded in the sidecar (None: no sidecar).
        progress: told the seconds of audio written so far.

    :meth:`write` takes the blocks in track order, :meth:`finish` publishes the stems and returns the
    result; :meth:`abort` (or an exception in either) leaves nothing under a final name.
    """

    def __init__(
        self,
        track: DecodedTrack,
        options: SeparationOptions,
        plan: StemPlan,
        *,
        samplerate: int,
        sources: Sequence[str],
        provenance: Provenance | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.track, self.plan, self.provenance, self.progress = track, plan, provenance, progress
        self.samplerate = samplerate  # the model's
        self.sources = tuple(sources)  # the model's (to say what "other" holds)
        self.emitted = 0
        info = track.info
        frames_out = output_frames(track.frames_in, info.samplerate, track.out_rate)
        self.writer: TrackWriter | StemMp4Writer
        self.master: _MasterFeed | None = None
        if plan.stem_file:
            self.writer = StemMp4Writer(
                track.outputs.stems[STEM_FILE],
                options.write_options(),
                sources=plan.written,
                samplerate=track.out_rate,
                frames=frames_out,
                tags=read_tags(track.path),
                title_fallback=track.path.stem,
                manifest=options.stem_manifest(),
            )
            self.master = _MasterFeed(track.path, self.writer, samplerate)
        else:
            self.writer = TrackWriter(
                dict(track.outputs.stems),
                options.write_options(),
                samplerate=track.out_rate,
                channels=stem_channels(info),
                frames=frames_out,
                tags=read_tags(track.path),
                title_fallback=track.path.stem,
            )

    def write(self, block: HostBlock) -> None:
        """Write one finished block, (S, C, n) stems in the engine's order."""
        array = block.get().numpy()
        n = array.shape[-1]
        mix = self.track.audio.read(self.emitted, self.emitted + n) if self.plan.needs_mix else None
        self.writer.write_all(self.plan.combine(array, mix))
        self.emitted += n
        if self.master is not None:
            self.master.follow(self.emitted)
        if self.progress is not None:
            self.progress(self.emitted / self.samplerate)

    def finish(self, runner: DeviceRunner) -> TrackResult:
        """Publish the stems and the sidecar; the result (``runner``: where the model ran)."""
        track = self.track
        if self.emitted != track.audio.frames:  # checked before anything is published (the writer aborts)
            self.abort()
            raise AudioDecodeError(
                f"{track.path}: the engine gave {self.emitted} samples for a track of {track.audio.frames}; run again",
                path=track.path,
            )
        if self.master is not None:
            self.master.finish()
        # The files of an earlier run with other settings that this one does not write (its sidecar lists
        # them): removed once the new stems and sidecar are in place, so the folder holds this run's files.
        stale = superseded_files(track.outputs.sidecar, track.outputs.stems) if self.provenance else []
        # The stems are renamed into place one by one: an old sidecar must not vouch for a set that an
        # interrupt leaves half replaced. A new one is written once every stem is in place.
        track.outputs.sidecar.unlink(missing_ok=True)
        written = self.writer.close()
        track.audio.close()
        stems = {st.name: st.peak_dbfs for st in written.stems if st.name != MASTER}
        _check_levels(track.path, track.peak_dbfs, stems, self.sources)
        info = track.info
        facts = {
            "duration_s": track.frames_in / info.samplerate,
            "samplerate": info.samplerate,
            "channels": info.channels,
            "codec": info.codec,
            "output_samplerate": track.out_rate,
            "warnings": [asdict(w) for w in noted_so_far()],  # a skipped re-run reports them
        }
        if self.provenance is not None and _record(
            track.outputs, self.provenance, track.path, {"gain": written.gain, "facts": facts}
        ):
            for file in stale:
                file.unlink(missing_ok=True)
        finished = time.perf_counter()
        timings = {**track.timings, "total": finished - track.started}
        timings["separate"] = timings["total"] - timings.get("decode", 0.0)
        return TrackResult(
            input=track.path,
            status="done",
            outputs=dict(track.outputs.stems),
            duration_s=track.frames_in / info.samplerate,
            samplerate=info.samplerate,
            channels=info.channels,
            codec=info.codec,
            output_samplerate=track.out_rate,
            timings=timings,
            device=str(runner.device),
            precision=str(runner.dtype).removeprefix("torch."),
            batch_size=runner.batch_size,
            gain=written.gain,
            stems={
                st.name: {"peak": st.peak, "rms": st.rms, "peak_dbfs": st.peak_dbfs} for st in written.stems
            },
        )

    def abort(self) -> None:
        """Delete everything written so far (no final name was ever used) and free the decoded audio."""
        self.writer.abort()
        self.track.audio.close()


class _MasterFeed:
    """A stem file's master: the input mix at the file's rate, written in step with the stems."""

    def __init__(self, path: Path, writer: StemMp4Writer, model_rate: int) -> None:
        reader = AudioReader(path, samplerate=writer.samplerate, channels=2, block_frames=_BLOCK_FRAMES)
        self._blocks = iter(reader)
        self._writer = writer
        self._model_rate = model_rate
        self._fed = 0

    def follow(self, emitted: int) -> None:
        """Write the master until it is as far along as ``emitted`` stem frames at the model's rate."""
        while self._fed * self._model_rate < emitted * self._writer.samplerate:
            block = next(self._blocks, None)
            if block is None:
                return
            self._writer.write_master(block)
            self._fed += block.shape[1]

    def finish(self) -> None:
        """Write the rest of the master."""
        for block in self._blocks:
            self._writer.write_master(block)


def separate_track(
    bag: ModelBag,
    path: Path,
    outputs: TrackOutputs,
    options: SeparationOptions,
    plan: StemPlan,
    *,
    runner: DeviceRunner,
    provenance: Provenance | None = None,
    progress: Callable[[float], None] | None = None,
) -> TrackResult:
    """Separate one file and write its stems (atomically) and, with ``provenance``, its sidecar, in the
    calling thread.

    The :class:`~stemsplit.errors.StemsplitWarning` s issued on the way (including a
    :class:`~stemsplit.errors.SilentInputWarning` for an input whose peak is below :data:`NEAR_SILENT_DBFS`,
    or else a :class:`~stemsplit.errors.NearSilentStemWarning` per stem whose peak is below it) go through
    :mod:`warnings` as they happen and are also kept in the result's ``warnings``.

    Args:
        runner: the runner to use (:func:`~stemsplit.inference.make_runner` for ``bag``, from the run's
            :class:`~stemsplit.inference.compute.Compute`).

    Raises:
        StemsplitError: unreadable input, invalid options, or a write failure; nothing is left under a
            final stem name, and no folder that the track's files created.
    """
    with collect_warnings() as noted, folders_removed_unless_finished(outputs):
        bag_run = run_plan(bag, options, plan.computed)
        track = decode_track(bag, path, outputs, options)
        try:
            sink = StemSink(
                track,
                options,
                plan,
                samplerate=bag.samplerate,
                sources=bag.sources,
                provenance=provenance,
                progress=progress,
            )
        except BaseException:
            track.audio.close()
            raise
        try:
            with runner:
                scheduler = Scheduler(runner, bag_run.members)
                scheduler.add(TrackStream(bag_run, track.audio, track.stats, sink.write, runner.device))
                while scheduler.step():
                    pass
                scheduler.drain()
            result = sink.finish(runner)
        except BaseException:
            sink.abort()
            raise
    result.warnings = tuple(noted)
    return result


def _record(outputs: TrackOutputs, provenance: Provenance, path: Path, extra: Mapping[str, Any]) -> bool:
    """Write the sidecar (``extra``: its informational fields); a failure only costs the skip on a re-run,
    so it is a warning. Whether it was written."""
    try:
        write_sidecar(outputs.sidecar, provenance, outputs.stems, path, extra)
        return True
    except OSError as err:
        warnings.warn(
            f"{outputs.sidecar}: could not record how the stems were made ({err.strerror or err}); "
            "a re-run will separate this track again",
            SidecarWarning,
            stacklevel=3,
        )
        return False


def _level(dbfs: float) -> str:
    return "silent (every sample is zero)" if dbfs == -math.inf else f"near-silent (peak {dbfs:.1f} dBFS)"


def _what(source: str, sources: Sequence[str]) -> str:
    """A source in words: its name, or for ``other`` what it holds (everything the named sources do not)."""
    if source != "other":
        return source
    *named, last = [s for s in sources if s != "other"] or ["the other stems"]
    return f"instruments other than {', '.join(named) + ' and ' if named else ''}{last}"


def _check_levels(path: Path, input_dbfs: float, stems: Mapping[str, float], sources: Sequence[str]) -> None:
    """Warn about silence: one :class:`SilentInputWarning` for a silent input (whose stems are all silent,
    which says nothing about them), else a :class:`NearSilentStemWarning` per near-silent stem.

    Args:
        path: the input.
        input_dbfs: the input's peak (dBFS).
        stems: ``{stem: peak_dbfs}`` of the written stems.
        sources: the model's sources (to say what ``other`` holds).
    """
    if input_dbfs < NEAR_SILENT_DBFS:
        warnings.warn(
            SilentInputWarning(
                f"{path}: the input is {_level(input_dbfs)}, so are its stems", peak_dbfs=input_dbfs
            ),
            stacklevel=2,
        )
        return
    for stem, dbfs in stems.items():
        if dbfs >= NEAR_SILENT_DBFS:
            continue
        if stem.startswith("no_"):
            hint = f"the track may contain nothing but {_what(stem.removeprefix('no_'), sources)}"
        else:
            hint = f"the track may have no {_what(stem, sources)}"
        warnings.warn(
            NearSilentStemWarning(f"{path}: {stem}: {_level(dbfs)}: {hint}", stem=stem, peak_dbfs=dbfs),
            stacklevel=2,
        )
