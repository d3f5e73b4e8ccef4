"""One track or a whole batch: read → normalise → separate → select stems → write, block by block.

The pipeline never prints. It reports through :class:`BatchReporter` (the CLI draws Rich progress from
it) and returns :class:`TrackResult` records (the CLI prints paths, a summary and ``--report`` JSON).
A failing track is recorded and the batch goes on; only a model that cannot be obtained stops it.
"""

from __future__ import annotations

import math
import re
import sys
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import numpy as np

from stemsplit import settings
from stemsplit.audio import (
    AudioInfo,
    AudioReader,
    BitDepth,
    ClipMode,
    Container,
    TrackWriter,
    WriteOptions,
    check_track_space,
    output_frames,
    probe,
    read_tags,
    remove_stale_temporaries,
    stem_channels,
)
from stemsplit.download import DownloadReporter
from stemsplit.errors import (
    AudioDecodeError,
    InvalidOptionError,
    NearSilentStemWarning,
    SampleRateWarning,
    SidecarWarning,
    SlowPrecisionWarning,
    StemsplitError,
    StemsplitWarning,
)
from stemsplit.inference import EngineOptions, ModelBag, Precision, separate_stream, stats_from_blocks
from stemsplit.inference.devices import PrecisionChoice, choose_precision, resolve_device
from stemsplit.inputs import discover_inputs, missing_reason
from stemsplit.loading import ModelInfo, describe_model, load_model, weights_identity
from stemsplit.models import DEFAULT_MODEL
from stemsplit.outputs import DEFAULT_TEMPLATE, TrackOutputs, check_template, plan_outputs
from stemsplit.sidecar import Provenance, is_complete, made_from_other_input, write_sidecar

OtherMethod = Literal["add", "minus", "none"]
_BLOCK_FRAMES = 1 << 16


# --- options -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeparationOptions:
    """Every setting of a separation run (the CLI's options; defaults are the CLI's).

    Attributes:
        model: registry name or path to a ``.th`` / ``.safetensors`` / bag ``.yaml``.
        out_dir: output root (``--out``).
        filename: output path template below ``out_dir`` (see :mod:`stemsplit.outputs`).
        stems: keep only these stems (``--stems``); None = all.
        two_stems: write this stem and ``no_<stem>`` (``--two-stems``).
        other_method: how ``no_<stem>`` is made: ``add`` (sum of the other stems), ``minus``
            (mix − stem), ``none`` (not written).
        format, bit_depth, mp3_bitrate, clip: encoding (see :class:`stemsplit.audio.WriteOptions`).
        samplerate: output rate in Hz; None = the input's. mp3 has only the MPEG rates
            (:data:`~stemsplit.audio.writer.MP3_SAMPLERATES`): another explicit rate is refused, and an
            input at another rate gives 44100 Hz stems with a :class:`~stemsplit.errors.SampleRateWarning`.
        device, precision, batch_size, jobs: compute (see :class:`stemsplit.inference.EngineOptions`).
        segment: window in seconds, at most the model's (7.8 s for HT models); None = the model's.
        overlap, shifts, seed: overlap-add and the random-shift trick.
        overwrite: redo tracks whose stems are complete (default: skip them).
        offline: never download (None: ``STEMSPLIT_OFFLINE``).
    """

    model: str = DEFAULT_MODEL
    out_dir: Path = Path("separated")
    filename: str = DEFAULT_TEMPLATE
    stems: tuple[str, ...] | None = None
    two_stems: str | None = None
    other_method: OtherMethod = "add"
    format: Container = "wav"
    bit_depth: BitDepth = "16"
    mp3_bitrate: int = 320
    samplerate: int | None = None
    clip: ClipMode = "rescale"
    device: str = "auto"
    precision: Precision = "auto"
    batch_size: int | None = None
    jobs: int | None = None
    segment: float | None = None
    overlap: float = 0.25
    shifts: int = 0
    seed: int = 0
    overwrite: bool = False
    offline: bool | None = None

    def __post_init__(self) -> None:
        check_template(self.filename)
        write = self.write_options()  # validates format / bit depth / bitrate / clip
        if self.samplerate is not None:
            write.check_samplerate(self.samplerate)  # mp3 at 96 kHz: refused, not silently changed
        if self.stems is not None and self.two_stems is not None:
            raise InvalidOptionError("use either --stems or --two-stems, not both", option="--stems")
        if self.other_method not in ("add", "minus", "none"):
            raise InvalidOptionError(f"--other-method must be add, minus or none, got {self.other_method!r}")
        checks = (
            (
                self.samplerate is None or 8000 <= self.samplerate <= 384000,
                "--sample-rate",
                "between 8000 and 384000 Hz",
            ),
            (0 <= self.overlap < 1, "--overlap", "at least 0 and below 1"),
            (self.shifts >= 0, "--shifts", "0 or more"),
            (self.segment is None or self.segment > 0, "--segment", "more than 0 seconds"),
            (self.batch_size is None or self.batch_size >= 1, "--batch-size", "1 or more"),
            (self.jobs is None or self.jobs >= 1, "--jobs", "1 or more"),
        )
        for ok, option, rule in checks:
            if not ok:
                raise InvalidOptionError(f"{option} must be {rule}", option=option)

    def write_options(self) -> WriteOptions:
        """The encoder settings."""
        return WriteOptions(
            format=self.format, bit_depth=self.bit_depth, mp3_bitrate=self.mp3_bitrate, clip=self.clip
        )

    def output_settings(self) -> dict[str, Any]:
        """The settings that change the written files (recorded in ``stemsplit.json``)."""
        keys = ("stems", "two_stems", "other_method", "format", "bit_depth", "samplerate", "clip", "segment",
                "overlap", "shifts", "seed")  # fmt: skip
        values = {k: getattr(self, k) for k in keys}
        # Settings that cannot change the files in this combination are recorded as None, so that
        # changing them does not make finished tracks look stale.
        values["other_method"] = self.other_method if self.two_stems else None
        values["seed"] = self.seed if self.shifts else None
        values["bit_depth"] = None if self.format == "mp3" else self.bit_depth
        values["mp3_bitrate"] = self.mp3_bitrate if self.format == "mp3" else None
        values["precision"] = self.precision  # reduced precision changes the stems slightly
        values["stems"] = list(self.stems) if self.stems else None
        return values


# --- which stems are computed and written --------------------------------------------------------


@dataclass(frozen=True)
class StemPlan:
    """Which stems the engine computes and which files are written from them.

    Attributes:
        computed: stems the engine returns, in order.
        written: output names, in order (``no_<stem>`` included for ``--two-stems``).
        needs_mix: ``no_<stem>`` is made as mix − stem, so the input must be kept until then.
    """

    computed: tuple[str, ...]
    written: tuple[str, ...]
    needs_mix: bool = False

    def combine(self, block: np.ndarray, mix: np.ndarray | None) -> dict[str, np.ndarray]:
        """Engine output (S, C, n) (+ the input (C, n) if needed) → {written stem: (C, n)}."""
        if len(self.written) == len(self.computed) and self.written == self.computed:
            return {stem: block[i] for i, stem in enumerate(self.computed)}
        kept = self.written[0]
        stem = block[self.computed.index(kept)]
        out = {kept: stem}
        if len(self.written) == 2:
            if self.needs_mix:
                assert mix is not None
                out[self.written[1]] = mix - stem
            else:
                out[self.written[1]] = (
                    block.sum(axis=0) - stem if len(self.computed) > 1 else np.zeros_like(stem)
                )
        return out


def plan_stems(sources: Sequence[str], options: SeparationOptions) -> StemPlan:
    """Resolve ``--stems`` / ``--two-stems`` / ``--other-method`` against the model's sources.

    Raises:
        InvalidOptionError: a stem the model does not produce (the error lists the ones it does).
    """
    sources = tuple(sources)

    def check(names: Sequence[str], option: str) -> None:
        for name in names:
            if name not in sources:
                raise InvalidOptionError(
                    f"{option} {name!r}: this model's stems are {', '.join(sources)}", option=option
                )

    if options.two_stems is not None:
        stem = options.two_stems
        check([stem], "--two-stems")
        if options.other_method == "add":
            return StemPlan(sources, (stem, f"no_{stem}"))
        if options.other_method == "minus":
            return StemPlan((stem,), (stem, f"no_{stem}"), needs_mix=True)
        return StemPlan((stem,), (stem,))
    if options.stems is not None:
        check(options.stems, "--stems")
        chosen = tuple(dict.fromkeys(options.stems))
        return StemPlan(chosen, chosen)
    return StemPlan(sources, sources)


# --- results and progress -------------------------------------------------------------------------

Status = Literal["done", "skipped", "failed"]

NEAR_SILENT_DBFS = -60.0
"""A written stem whose peak is below this level (dBFS) gets a :class:`NearSilentStemWarning`.

-60 dBFS is about the noise floor of a quiet room recording and far below any audible part of a mixed
source, so a stem under it is, for listening purposes, empty (an instrumental's vocals).
"""


@dataclass(frozen=True)
class TrackWarning:
    """A warning issued while one track was processed, as kept in its :class:`TrackResult`.

    Attributes:
        kind: a short name from the warning's class: ``truncated_audio``, ``downmix``, ``tag_copy``,
            ``near_silent_stem``, ``sidecar``, ``device_fallback``, ``compile_fallback`` ...
        message: the text shown to people (it names the file).
    """

    kind: str
    message: str


def warning_kind(category: type[Warning]) -> str:
    """The :attr:`TrackWarning.kind` of a warning class: its name without ``Warning``, in snake case."""
    if category is StemsplitWarning:
        return "warning"
    name = category.__name__.removesuffix("Warning") or category.__name__
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


@contextmanager
def collect_warnings() -> Iterator[list[TrackWarning]]:
    """Record the :class:`StemsplitWarning` s issued inside, while still showing them as they happen.

    Every stemsplit warning is recorded in the yielded list (once per distinct message), whatever the
    filters say, and is passed on at once through the caller's own filters and ``warnings.showwarning``:
    shown, raised (``error``) or dropped (``ignore``) exactly as without this block. Other warnings are
    not touched.
    """
    records: list[TrackWarning] = []
    seen: set[tuple[type[Warning], str]] = set()
    outer_filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("always", StemsplitWarning)  # so that every one reaches ``keep``
        outer_show = warnings.showwarning

        def keep(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if not issubclass(category, StemsplitWarning):
                outer_show(message, category, filename, lineno, file, line)
                return
            key = (category, str(message))
            if key in seen:
                return
            seen.add(key)
            records.append(TrackWarning(warning_kind(category), str(message)))
            with warnings.catch_warnings():  # the caller's filters decide what happens to it
                warnings.filters[:] = outer_filters  # type: ignore[index]
                warnings.showwarning = outer_show
                warnings.warn_explicit(
                    message, category, filename, lineno, module=_module_name(filename), registry={}
                )

        warnings.showwarning = keep
        yield records


def _module_name(filename: str) -> str | None:
    """The imported module defined in ``filename`` (for filters by module), if any."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return None


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


@dataclass
class TrackResult:
    """What happened to one input (one row of the summary and of ``--report``).

    Attributes:
        input: the input path.
        status: ``done``, ``skipped`` (already complete) or ``failed``.
        error: one-line reason when failed.
        outputs: written (or existing, when skipped) stem files.
        duration_s, samplerate, channels, codec: the input, when it could be probed.
        output_samplerate: the stems' rate.
        timings: seconds spent per stage (``stats``, ``separate``, ``total``).
        device, precision, batch_size: where and how the model ran.
        gain: the shared clip-protection gain applied (1.0 = none).
        stems: per stem ``{"peak": …, "rms": …, "peak_dbfs": …}``, before the gain (``peak_dbfs`` is
            ``-inf`` for a silent stem; None in :meth:`to_dict`, as JSON has no infinity).
        warnings: the stemsplit warnings issued while the track was processed (input truncated,
            channels downmixed, tags not copied, a stem near-silent, a device fallback …), in order. A
            ``done`` track with warnings is still done; these say what to check.
    """

    input: Path
    status: Status
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    duration_s: float | None = None
    samplerate: int | None = None
    channels: int | None = None
    codec: str | None = None
    output_samplerate: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    device: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    gain: float | None = None
    stems: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: tuple[TrackWarning, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as strings; non-finite numbers, such as a silent stem's dBFS, as None)."""
        data = asdict(self)
        data["input"] = str(self.input)
        data["outputs"] = {k: str(v) for k, v in self.outputs.items()}
        data["stems"] = {
            stem: {k: v if math.isfinite(v) else None for k, v in values.items()}
            for stem, values in self.stems.items()
        }
        data["warnings"] = [asdict(w) for w in self.warnings]
        return data


class BatchReporter(Protocol):
    """Progress of a batch, for a user interface. Every method is optional in spirit: implement no-ops."""

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None: ...

    def track_progress(self, done_s: float) -> None: ...

    def track_finished(self, result: TrackResult) -> None: ...


class NullBatchReporter:
    """A reporter that shows nothing (the library default)."""

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        pass

    def track_progress(self, done_s: float) -> None:
        pass

    def track_finished(self, result: TrackResult) -> None:
        pass


# --- one track ---------------------------------------------------------------------------------------


def check_segment(segment: float | None, limit: Fraction) -> None:
    """Refuse a ``--segment`` (seconds) longer than the model's window ``limit`` (seconds).

    Raises:
        InvalidOptionError: it is longer; the message names the limit.
    """
    # As typed (shortest repr): 7.8 must not fail for being 7.8000000000000001 in binary.
    if segment is not None and Fraction(repr(float(segment))) > limit:
        most = math.floor(limit * 100) / 100  # rounded down: the value suggested must be accepted
        raise InvalidOptionError(
            f"--segment {segment:g} is longer than the model's {float(limit):.3g} s window (transformer "
            f"models cannot use more context than they were trained with); use {most:g} or less",
            option="--segment",
        )


def engine_options(bag: ModelBag, options: SeparationOptions, stems: Sequence[str]) -> EngineOptions:
    """Engine settings for a run.

    Raises:
        InvalidOptionError: ``--segment`` longer than the model's window (checked here, on the loaded
            weights, whatever :func:`plan_batch` could check before).
    """
    segment = None
    if options.segment is not None:
        check_segment(options.segment, Fraction(bag.segment_samples, bag.samplerate))
        segment = int(options.segment * bag.samplerate)
    return EngineOptions(
        segment_samples=segment,
        overlap=options.overlap,
        shifts=options.shifts,
        seed=options.seed,
        stems=tuple(stems),
        batch_size=options.batch_size,
        device=options.device,
        precision=options.precision,
        threads=options.jobs,
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
        result = _separate_track(bag, path, outputs, options, plan, provenance=provenance, progress=progress)
    result.warnings = tuple(noted)
    return result


def _separate_track(
    bag: ModelBag,
    path: Path,
    outputs: TrackOutputs,
    options: SeparationOptions,
    plan: StemPlan,
    *,
    provenance: Provenance | None,
    progress: Callable[[float], None] | None,
) -> TrackResult:
    """:func:`separate_track` without the collection of warnings."""
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
    _check_levels(path, {st.name: st.peak_dbfs for st in written.stems})
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


# --- a batch -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """Where and in what precision a run computes (resolved before any input is read).

    Attributes:
        device: the resolved device (``cpu``, ``cuda:0`` ...).
        precision: the dtype ``--precision`` resolves to there, and why.
    """

    device: str
    precision: PrecisionChoice

    def describe(self) -> str:
        """One line for ``-v``: ``cpu, float32 (float32: no AMX ...)``."""
        dtype = str(self.precision.dtype).removeprefix("torch.")
        return f"{self.device}, {dtype} ({self.precision.why})"


def resolve_compute(options: SeparationOptions) -> Compute:
    """Resolve ``--device`` and ``--precision`` (cheap: no model, no input).

    Raises:
        InvalidOptionError: an unknown or unavailable device, or an unknown precision.
    """
    device = resolve_device(options.device)
    return Compute(str(device), choose_precision(options.precision, device))


def warn_slow_precision(compute: Compute) -> None:
    """Issue the :class:`SlowPrecisionWarning` of an explicit precision this device emulates, if any."""
    if compute.precision.slow is not None:
        warnings.warn(SlowPrecisionWarning(compute.precision.slow), stacklevel=2)


@dataclass
class Batch:
    """A planned batch: inputs, their probes and output paths (what ``--dry-run`` shows).

    Attributes:
        model: the model as described before loading.
        plan: the stems computed and written.
        tracks: per input, its probe (or the error probing it) and its planned outputs.
        compute: the device and precision the run will use.
    """

    model: ModelInfo
    plan: StemPlan
    tracks: list[tuple[Path, AudioInfo | StemsplitError, TrackOutputs | None]]
    compute: Compute


def plan_batch(arguments: Sequence[str], options: SeparationOptions, *, dry_run: bool = False) -> Batch:
    """Discover inputs, probe them and plan outputs, without loading the model's weights.

    A local model file is read and hashed here (a bad file stops the run before any work); with
    ``dry_run`` only its header is read (see :func:`stemsplit.loading.describe_model`).

    Output folders holding another input's stems (per their ``stemsplit.json``) are not reused.

    Raises:
        UnknownModelError, CheckpointError: the model cannot be identified.
        InvalidOptionError: an unavailable device, a stem the model does not have, or a ``--segment``
            longer than the model's window when that is known before loading (registry entries, local
            files).
    """
    compute = resolve_compute(options)
    model = describe_model(options.model, load=not dry_run)
    plan = plan_stems(model.sources, options)
    if model.max_segment is not None:
        check_segment(options.segment, model.max_segment)
    inputs = discover_inputs(arguments, options.out_dir)
    probes: list[tuple[Path, AudioInfo | StemsplitError]] = []
    for item in inputs:
        if item.missing:
            from stemsplit.errors import AudioFileNotFoundError

            probes.append((item.path, AudioFileNotFoundError(missing_reason(item), path=item.path)))
            continue
        try:
            probes.append((item.path, probe(item.path)))
        except StemsplitError as err:
            probes.append((item.path, err))
    readable = [p for p, probed in probes if isinstance(probed, AudioInfo)]
    paths = plan_outputs(
        readable,
        out_dir=options.out_dir,
        template=options.filename,
        model=model.name,
        stems=plan.written,
        ext=options.write_options().extension,
        owned_by_other=made_from_other_input,
    )
    planned = dict(zip(readable, paths, strict=True))
    return Batch(model, plan, [(p, probed, planned.get(p)) for p, probed in probes], compute)


def separate_batch(
    batch: Batch,
    options: SeparationOptions,
    *,
    reporter: BatchReporter | None = None,
    download_reporter: DownloadReporter | None = None,
    loader: Callable[[], ModelBag] | None = None,
) -> list[TrackResult]:
    """Run a planned batch: skip complete tracks, separate the rest, record failures and go on.

    Args:
        batch: from :func:`plan_batch`.
        options: the run's settings.
        reporter: progress.
        download_reporter: download progress (model obtained on first need).
        loader: builds the model (default: :func:`stemsplit.loading.load_model`); called at most once,
            and not at all when every track is skipped or fails before separation.

    Raises:
        ModelUnavailableError: the model could not be obtained (the batch stops: nothing could be done).
    """
    reporter = reporter or NullBatchReporter()
    warn_slow_precision(batch.compute)  # once per run, not once per track
    provenance = Provenance(batch.model.name, weights_identity(batch.model), options.output_settings())
    bag: ModelBag | None = None
    results = []
    total = len(batch.tracks)
    for index, (path, probed, outputs) in enumerate(batch.tracks):
        duration = probed.duration_s if isinstance(probed, AudioInfo) else None
        reporter.track_started(index, total, path, duration)
        if isinstance(probed, StemsplitError) or outputs is None:
            result = TrackResult(path, "failed", error=str(probed))
        elif not options.overwrite and is_complete(outputs.sidecar, provenance, outputs.stems, path):
            result = TrackResult(
                path, "skipped", outputs=dict(outputs.stems), duration_s=duration,
                samplerate=probed.samplerate, channels=probed.channels, codec=probed.codec,
            )  # fmt: skip
        else:
            if bag is None:
                bag = (
                    loader()
                    if loader
                    else load_model(batch.model, offline=options.offline, reporter=download_reporter)
                )
            result = _guarded_track(bag, path, outputs, options, batch.plan, provenance, reporter)
        reporter.track_finished(result)
        results.append(result)
    return results


def _guarded_track(
    bag: ModelBag,
    path: Path,
    outputs: TrackOutputs,
    options: SeparationOptions,
    plan: StemPlan,
    provenance: Provenance,
    reporter: BatchReporter,
) -> TrackResult:
    """:func:`separate_track`, with any failure turned into a ``failed`` result (the batch goes on).

    Warnings issued before a failure are kept in the failed result too.
    """
    with collect_warnings() as noted:
        try:
            result = _separate_track(
                bag, path, outputs, options, plan, provenance=provenance, progress=reporter.track_progress
            )
        except InvalidOptionError:
            raise  # the same for every track: stop and say so once
        except StemsplitError as err:
            result = TrackResult(path, "failed", error=str(err))
        except Exception as err:  # an unexpected bug must not cost the rest of the batch
            detail = "".join(traceback.format_exception(err)) if settings.debug() else ""
            message = f"{path}: internal error {type(err).__name__}: {err}"
            result = TrackResult(
                path,
                "failed",
                error=message + (f"\n{detail}" if detail else " (set STEMSPLIT_DEBUG=1 for the traceback)"),
            )
    result.warnings = tuple(noted)
    return result


def summarise(results: Sequence[TrackResult]) -> Mapping[str, int]:
    """Counts per status, and ``done_with_warnings``: the done tracks (counted in ``done``) with warnings."""
    counts = {"done": 0, "skipped": 0, "failed": 0, "done_with_warnings": 0}
    for r in results:
        counts[r.status] += 1
        if r.status == "done" and r.warnings:
            counts["done_with_warnings"] += 1
    return counts
