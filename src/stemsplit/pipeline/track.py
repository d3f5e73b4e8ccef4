"""One track: read → normalise → separate → select stems → write, block by block, atomically.

With ``--format stem.mp4`` the stems go into one :class:`~stemsplit.audio.StemMp4Writer` instead of a
:class:`~stemsplit.audio.TrackWriter`, and the input mix is read a third time, at the stem file's rate, as
its master track.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemsplit.audio import (
    MASTER,
    AudioReader,
    StemMp4Writer,
    TrackWriter,
    check_track_space,
    output_frames,
    read_tags,
    remove_stale_temporaries,
    stem_channels,
)
from stemsplit.errors import (
    AudioDecodeError,
    NearSilentStemWarning,
    SampleRateWarning,
    SidecarWarning,
)
from stemsplit.inference import ModelBag, separate_stream, stats_from_blocks
from stemsplit.pipeline.options import STEM_FILE, SeparationOptions, StemPlan, engine_options
from stemsplit.pipeline.outputs import TrackOutputs
from stemsplit.pipeline.results import NEAR_SILENT_DBFS, TrackResult, collect_warnings
from stemsplit.pipeline.sidecar import Provenance, write_sidecar

_BLOCK_FRAMES = 1 << 16


def _check_levels(path: Path, stems: Mapping[str, float]) -> None:
    """Warn about near-silent stems (``{stem: peak_dbfs}``) with a :class:`NearSilentStemWarning`."""
    for stem, dbfs in stems.items():
        if dbfs >= NEAR_SILENT_DBFS:
            continue
        level = (
            "silent (every sample is zero)" if dbfs == -math.inf else f"near-silent (peak {dbfs:.1f} dBFS)"
        )
        if stem.startswith("no_"):
            hint = f"the track may contain nothing but {stem.removeprefix('no_')}"
        else:
            hint = f"the track may have no {stem}"
        warnings.warn(
            NearSilentStemWarning(f"{path}: {stem}: {level}: {hint}", stem=stem, peak_dbfs=dbfs),
            stacklevel=2,
        )


class _MixQueue:
    """The input blocks between the reader and the engine's output, for ``no_<stem> = mix - stem``.

    Holds only what the engine has read but not yet emitted (about a window), not the track.
    """

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()

    def tee(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass the blocks through, keeping each until :meth:`take` consumes it."""
        for block in blocks:
            self._blocks.append(block)
            yield block

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` input samples, (C, n)."""
        parts, need = [], n
        while need:
            head = self._blocks[0]
            parts.append(head[:, :need])
            if head.shape[1] <= need:
                self._blocks.popleft()
            else:
                self._blocks[0] = head[:, need:]
            need -= parts[-1].shape[1]
        return np.concatenate(parts, axis=1)


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
    provenance: Provenance | None = None,
    progress: Callable[[float], None] | None = None,
) -> TrackResult:
    """Separate one file and write its stems (atomically) and, with ``provenance``, its sidecar.

    The :class:`~stemsplit.errors.StemsplitWarning` s issued on the way (including a
    :class:`~stemsplit.errors.NearSilentStemWarning` per stem whose peak is below :data:`NEAR_SILENT_DBFS`)
    go through :mod:`warnings` as they happen and are also kept in the result's ``warnings``.

    Raises:
        StemsplitError: unreadable input, invalid options, or a write failure; nothing is left under a
            final stem name.
    """
    with collect_warnings() as noted:
        result = run_track(bag, path, outputs, options, plan, provenance=provenance, progress=progress)
    result.warnings = tuple(noted)
    return result


def run_track(
    bag: ModelBag,
    path: Path,
    outputs: TrackOutputs,
    options: SeparationOptions,
    plan: StemPlan,
    *,
    provenance: Provenance | None,
    progress: Callable[[float], None] | None,
) -> TrackResult:
    """:func:`separate_track` without the collection of warnings (the caller collects them)."""
    started = time.perf_counter()
    reader = AudioReader(
        path, samplerate=bag.samplerate, channels=bag.audio_channels, block_frames=_BLOCK_FRAMES
    )
    info = reader.info
    write_options = options.write_options()
    out_rate = write_options.samplerate_for(options.samplerate or info.samplerate)
    remove_stale_temporaries(outputs.stems.values())  # left by a run that was killed outright
    if info.frames is not None:  # before the first pass, which takes a while on a long track
        check_track_space(
            outputs.stems.values(),
            write_options,
            samplerate=out_rate,
            channels=stem_channels(info),
            frames=output_frames(info.frames, info.samplerate, out_rate),
        )
    stats = stats_from_blocks(reader)  # first pass: exact mean/std without holding the track
    frames_in = reader.frames_in or 0
    after_stats = time.perf_counter()
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
    model_frames = output_frames(frames_in, info.samplerate, bag.samplerate)
    mix = _MixQueue()
    emitted = 0
    frames_out = output_frames(frames_in, info.samplerate, out_rate)
    writer: TrackWriter | StemMp4Writer
    if plan.stem_file:
        writer = StemMp4Writer(
            outputs.stems[STEM_FILE],
            write_options,
            sources=plan.written,
            samplerate=out_rate,
            frames=frames_out,
            tags=read_tags(path),
            title_fallback=path.stem,
            manifest=options.stem_manifest(),
        )
    else:
        writer = TrackWriter(
            dict(outputs.stems),
            write_options,
            samplerate=out_rate,
            channels=stem_channels(info),
            frames=frames_out,
            tags=read_tags(path),
            title_fallback=path.stem,
        )
    with writer:
        master = _MasterFeed(path, writer, bag.samplerate) if isinstance(writer, StemMp4Writer) else None

        def sink(block: Any) -> None:  # (S, C, n) finished stems, in track order
            nonlocal emitted
            array = block.numpy()
            writer.write_all(plan.combine(array, mix.take(array.shape[-1]) if plan.needs_mix else None))
            emitted += array.shape[-1]
            if master is not None:
                master.follow(emitted)
            if progress is not None:
                progress(emitted / bag.samplerate)

        blocks = mix.tee(reader) if plan.needs_mix else iter(reader)
        engine = separate_stream(
            bag, blocks, sink, stats=stats, options=engine_options(bag, options, plan.computed)
        )
        if emitted != model_frames:  # checked before anything is published (the writer aborts)
            raise AudioDecodeError(
                f"{path}: decoded to {emitted} samples on the second read but {model_frames} on the first "
                "(was the file changing?); run again",
                path=path,
            )
        if master is not None:
            master.finish()
        # The stems are renamed into place one by one: an old sidecar must not vouch for a set that an
        # interrupt leaves half replaced. A new one is written once every stem is in place.
        outputs.sidecar.unlink(missing_ok=True)
        written = writer.close()
    finished = time.perf_counter()
    if provenance is not None:
        _record(outputs, provenance, path, written.gain)
    _check_levels(path, {st.name: st.peak_dbfs for st in written.stems if st.name != MASTER})
    return TrackResult(
        input=path,
        status="done",
        outputs=dict(outputs.stems),
        duration_s=frames_in / info.samplerate,
        samplerate=info.samplerate,
        channels=info.channels,
        codec=info.codec,
        output_samplerate=out_rate,
        timings={
            "stats": after_stats - started,
            "separate": finished - after_stats,
            "total": finished - started,
        },
        device=str(engine.device),
        precision=str(engine.dtype).removeprefix("torch."),
        batch_size=engine.batch_size,
        gain=written.gain,
        stems={st.name: {"peak": st.peak, "rms": st.rms, "peak_dbfs": st.peak_dbfs} for st in written.stems},
    )


def _record(outputs: TrackOutputs, provenance: Provenance, path: Path, gain: float) -> None:
    """Write the sidecar; a failure only costs the skip on a re-run, so it is a warning."""
    try:
        write_sidecar(outputs.sidecar, provenance, outputs.stems, path, {"gain": gain})
    except OSError as err:
        warnings.warn(
            f"{outputs.sidecar}: could not record how the stems were made ({err.strerror or err}); "
            "a re-run will separate this track again",
            SidecarWarning,
            stacklevel=3,
        )
