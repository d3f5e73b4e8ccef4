"""One track: read → normalise → separate → select stems → write, block by block, atomically."""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemsplit.audio import (
    AudioReader,
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
    SilentInputWarning,
)
from stemsplit.inference import ModelBag, separate_stream, stats_from_blocks
from stemsplit.pipeline.options import SeparationOptions, StemPlan, engine_options
from stemsplit.pipeline.outputs import TrackOutputs, folders_removed_unless_finished
from stemsplit.pipeline.results import NEAR_SILENT_DBFS, TrackResult, collect_warnings
from stemsplit.pipeline.sidecar import Provenance, write_sidecar

_BLOCK_FRAMES = 1 << 16


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


class _PeakMeter:
    """The peak of the blocks passed through :meth:`measure`, in dBFS (``-inf`` while all are zero)."""

    def __init__(self) -> None:
        self._peak = 0.0

    def measure(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass the blocks through, noting their peak."""
        for block in blocks:
            if block.size:
                self._peak = max(self._peak, float(np.abs(block).max()))
            yield block

    @property
    def dbfs(self) -> float:
        return 20 * math.log10(self._peak) if self._peak > 0 else -math.inf


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
    :class:`~stemsplit.errors.SilentInputWarning` for an input whose peak is below :data:`NEAR_SILENT_DBFS`,
    or else a :class:`~stemsplit.errors.NearSilentStemWarning` per stem whose peak is below it)
    go through :mod:`warnings` as they happen and are also kept in the result's ``warnings``.

    Raises:
        StemsplitError: unreadable input, invalid options, or a write failure; nothing is left under a
            final stem name, and no folder that the track's files created.
    """
    with collect_warnings() as noted, folders_removed_unless_finished(outputs):
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
    meter = _PeakMeter()
    stats = stats_from_blocks(meter.measure(reader))  # first pass: exact mean/std without holding the track
    frames_in = reader.frames_in or 0
    after_stats = time.perf_counter()
    if out_rate != info.samplerate and options.samplerate is None:  # only mp3 changes the input's rate
        warnings.warn(
            SampleRateWarning(
                f"{path}: {write_options.format.upper()} cannot store the input's {info.samplerate} Hz; the stems "
                f"are written at {out_rate} Hz (use --format flac or wav to keep {info.samplerate} Hz)",
                requested=info.samplerate,
                written=out_rate,
            ),
            stacklevel=2,
        )
    model_frames = output_frames(frames_in, info.samplerate, bag.samplerate)
    mix = _MixQueue()
    emitted = 0
    with TrackWriter(
        dict(outputs.stems),
        write_options,
        samplerate=out_rate,
        channels=stem_channels(info),
        frames=output_frames(frames_in, info.samplerate, out_rate),
        tags=read_tags(path),
        title_fallback=path.stem,
    ) as writer:

        def sink(block: Any) -> None:  # (S, C, n) finished stems, in track order
            nonlocal emitted
            array = block.numpy()
            writer.write_all(plan.combine(array, mix.take(array.shape[-1]) if plan.needs_mix else None))
            emitted += array.shape[-1]
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
        # The stems are renamed into place one by one: an old sidecar must not vouch for a set that an
        # interrupt leaves half replaced. A new one is written once every stem is in place.
        outputs.sidecar.unlink(missing_ok=True)
        written = writer.close()
    finished = time.perf_counter()
    if provenance is not None:
        _record(outputs, provenance, path, written.gain)
    _check_levels(path, meter.dbfs, {st.name: st.peak_dbfs for st in written.stems}, bag.sources)
    return TrackResult(
        input=path,
        status="done",
        outputs={st.name: st.path for st in written.stems},
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
