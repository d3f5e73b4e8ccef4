"""A whole batch: plan it (inputs, probes, output names, device) before any work, then run it track by track.

A failing track is recorded and the batch goes on; only a model that cannot be obtained stops it.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stemsplit import settings
from stemsplit.audio import (
    AudioInfo,
    probe,
)
from stemsplit.errors import (
    InvalidOptionError,
    SlowPrecisionWarning,
    StemsplitError,
)
from stemsplit.inference import ModelBag
from stemsplit.inference.devices import PrecisionChoice, choose_precision, resolve_device
from stemsplit.pipeline.inputs import discover_inputs, missing_reason
from stemsplit.pipeline.options import SeparationOptions, StemPlan, check_segment, model_cache, plan_stems
from stemsplit.pipeline.outputs import (
    TrackOutputs,
    check_writable_folder,
    folders_removed_unless_finished,
    plan_outputs,
)
from stemsplit.pipeline.results import (
    BatchInterrupted,
    BatchReporter,
    NullBatchReporter,
    TrackResult,
    collect_warnings,
)
from stemsplit.pipeline.sidecar import Provenance, is_complete, made_from_other_input
from stemsplit.pipeline.track import run_track
from stemsplit.weights.download import DownloadReporter
from stemsplit.weights.loading import ModelInfo, describe_model, load_model, weights_identity

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
    ``dry_run`` only its header is read (see :func:`stemsplit.weights.loading.describe_model`).

    Output folders holding another input's stems (per their ``stemsplit.json``) are not reused.

    Everything that can be checked without the inputs is checked first, cheapest first: the device, the
    output folder, then the model.

    Raises:
        UnknownModelError, CheckpointError: the model cannot be identified.
        InvalidOptionError: an unavailable device (with the reason), an output folder that cannot be
            written, a stem the model does not have, or a ``--segment`` longer than the model's window
            when that is known before loading (registry entries, local files).
    """
    compute = resolve_compute(options)
    check_writable_folder(options.out_dir, option="--out")
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
        loader: builds the model (default: :func:`stemsplit.weights.loading.load_model`); called at most once,
            and not at all when every track is skipped or fails before separation.

    Returns:
        One result per input, in input order.

    Raises:
        ModelUnavailableError: the model could not be obtained (the batch stops: nothing could be done).
        BatchInterrupted: Ctrl-C; it carries every input's result, the unfinished ones ``interrupted``
            (each also passed to ``reporter.track_finished``). A track stopped half-way leaves no file
            under a final name, and no folder it created.
    """
    reporter = reporter or NullBatchReporter()
    warn_slow_precision(batch.compute)  # once per run, not once per track
    bag: ModelBag | None = None
    finished: dict[int, TrackResult] = {}  # by input index: tracks may finish in any order
    total = len(batch.tracks)
    cache = model_cache(options, download_reporter)
    try:
        provenance = Provenance(batch.model.name, weights_identity(batch.model), options.output_settings())
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
                    bag = loader() if loader else load_model(batch.model, cache)
                result = _guarded_track(bag, path, outputs, options, batch.plan, provenance, reporter)
            finished[index] = result
            reporter.track_finished(result)
    except KeyboardInterrupt:
        raise _interrupted(batch, finished, reporter) from None
    return [finished[index] for index in range(total)]


def _interrupted(
    batch: Batch, finished: Mapping[int, TrackResult], reporter: BatchReporter
) -> BatchInterrupted:
    """Ctrl-C: every track not finished is reported ``interrupted``; the finished ones keep their results."""
    results = []
    for index, (path, probed, _) in enumerate(batch.tracks):
        result = finished.get(index)
        if result is None:
            duration = probed.duration_s if isinstance(probed, AudioInfo) else None
            result = TrackResult(path, "interrupted", duration_s=duration)
            reporter.track_finished(result)
        results.append(result)
    return BatchInterrupted(results)


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

    Warnings issued before a failure are kept in the failed result too. A track that does not finish
    (it fails, or Ctrl-C stops it) leaves none of the folders it created.
    """
    with collect_warnings() as noted:
        try:
            with folders_removed_unless_finished(outputs):
                result = run_track(
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
