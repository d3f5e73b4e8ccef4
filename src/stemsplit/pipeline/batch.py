"""A whole batch: plan it (device, model, inputs, probes, output names) before any work, then run it.

A failing track is recorded and the batch goes on; only a model that cannot be obtained stops it. With
``--model auto`` each track gets its model at planning time, from its probed duration
(:func:`stemsplit.weights.registry.pick_auto`); the tracks of each model then run together.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from stemsplit.audio import (
    AudioInfo,
    check_supported,
    probe,
)
from stemsplit.errors import (
    AcceleratorError,
    AudioFileNotFoundError,
    DeviceFallbackWarning,
    SlowPrecisionWarning,
    StemsplitError,
)
from stemsplit.inference import ModelBag
from stemsplit.inference.compute import Compute
from stemsplit.pipeline.inputs import discover_inputs, failure_message, missing_reason, unexpected_error
from stemsplit.pipeline.options import (
    SeparationOptions,
    StemPlan,
    check_segment,
    compute_for,
    model_cache,
    plan_stems,
    plan_track_outputs,
)
from stemsplit.pipeline.outputs import TrackOutputs, check_writable_folder
from stemsplit.pipeline.results import (
    BatchInterrupted,
    BatchReporter,
    NullBatchReporter,
    TrackResult,
    TrackWarning,
    show_stage,
    tell,
)
from stemsplit.pipeline.sidecar import (
    Provenance,
    changed_settings,
    derivable_subset,
    is_complete,
    keep_subset,
    made_from_other_input,
    recorded_facts,
)
from stemsplit.pipeline.workers import Job, run_jobs
from stemsplit.weights.download import DownloadReporter
from stemsplit.weights.loading import ModelInfo, describe_model, load_model, weights_identity
from stemsplit.weights.registry import AUTO, auto_models, pick_auto

# --- a batch -----------------------------------------------------------------------------------------


def warn_compute(compute: Compute) -> None:
    """Issue the warnings of a batch's compute, once per run: a :class:`SlowPrecisionWarning` for an explicit
    precision this device emulates, a :class:`DeviceFallbackWarning` for a GPU that cannot run this torch."""
    if compute.precision.slow is not None:
        warnings.warn(SlowPrecisionWarning(compute.precision.slow), stacklevel=2)
    if compute.note is not None:
        warnings.warn(DeviceFallbackWarning(compute.note), stacklevel=2)


@dataclass
class Batch:
    """A planned batch: inputs, their probes and output paths (what ``--dry-run`` shows).

    Attributes:
        models: the models as described before loading: the one ``--model`` names, or with ``--model auto``
            those its rule picks from.
        plan: the stems computed and written (the same for every model of the batch).
        tracks: per input, its probe (or the error probing it) and its planned outputs.
        compute: how the run computes (devices, precision, compile, CPU backend), resolved once.
        picks: per input, the index in ``models`` of the model it gets.
    """

    models: tuple[ModelInfo, ...]
    plan: StemPlan
    tracks: list[tuple[Path, AudioInfo | StemsplitError, TrackOutputs | None]]
    compute: Compute
    picks: list[int]

    def model_of(self, index: int) -> ModelInfo:
        """The model of input ``index``."""
        return self.models[self.picks[index]]


def plan_batch(arguments: Sequence[str], options: SeparationOptions, *, dry_run: bool = False) -> Batch:
    """Discover inputs, probe them and plan outputs, without loading the model's weights.

    A local model file is read and hashed here (a bad file stops the run before any work); with
    ``dry_run`` only its header is read (see :func:`stemsplit.weights.loading.describe_model`).

    Output folders holding another input's stems (per their ``stemsplit.json``) are not reused.

    Everything that can be checked without the inputs is checked first, cheapest first: the device, the
    output folder, then the model(s).

    Raises:
        UnknownModelError, CheckpointError: the model cannot be identified.
        InvalidOptionError: an unavailable device (with the reason), an output folder that cannot be
            written, a stem the model does not have, or a ``--segment`` longer than a model's window
            when that is known before loading (registry entries, local files).
    """
    compute = compute_for(options)
    check_writable_folder(options.out_dir, option="--out")
    names = auto_models() if options.model == AUTO else (options.model,)
    models = tuple(describe_model(name, load=not dry_run) for name in names)
    plan = plan_stems(models[0].sources, options)  # auto's models share their stems
    for model in models:
        if model.max_segment is not None:
            check_segment(options.segment, model.max_segment, model.name)
    inputs = discover_inputs(arguments, options.out_dir)
    probes: list[tuple[Path, AudioInfo | StemsplitError]] = []
    for item in inputs:
        if item.missing:
            probes.append((item.path, AudioFileNotFoundError(missing_reason(item), path=item.path)))
        else:
            probes.append((item.path, probe_input(item.path)))
    picks = [_pick(options.model, models, probed) for _, probed in probes]
    readable = [
        (p, pick) for (p, probed), pick in zip(probes, picks, strict=True) if isinstance(probed, AudioInfo)
    ]
    paths = plan_track_outputs(
        [p for p, _ in readable], [models[pick].name for _, pick in readable], options, plan
    )
    planned = dict(zip([p for p, _ in readable], paths, strict=True))
    tracks = [(p, probed, planned.get(p)) for p, probed in probes]
    seconds = sum(probed.duration_s or 0.0 for _, probed in probes if isinstance(probed, AudioInfo))
    return Batch(models, plan, tracks, compute.for_audio(seconds * max(1, options.shifts)), picks)


def probe_input(path: Path) -> AudioInfo | StemsplitError:
    """``path``'s probe, checked as the run will check it, or the error that makes it fail alone: whatever
    one file raises (an unexpected error included, as an ``InputError`` naming its type) is its own.
    """
    try:
        info = probe(path)
        check_supported(info)
    except StemsplitError as err:
        return err
    except Exception as err:  # a bug or a library's surprise on this file must not end the batch
        return unexpected_error(path, err, "probing")
    return info


def _pick(requested: str, models: Sequence[ModelInfo], probed: AudioInfo | StemsplitError) -> int:
    """The index in ``models`` of a track's model: the only one, or ``--model auto``'s pick by duration."""
    if requested != AUTO:
        return 0
    duration = probed.duration_s if isinstance(probed, AudioInfo) else None
    return [m.name for m in models].index(pick_auto(duration))


def separate_batch(
    batch: Batch,
    options: SeparationOptions,
    *,
    reporter: BatchReporter | None = None,
    download_reporter: DownloadReporter | None = None,
    loader: Callable[[ModelInfo], ModelBag] | None = None,
    devices: Sequence[torch.device] | None = None,
) -> list[TrackResult]:
    """Run a planned batch: skip complete tracks, separate the rest, record failures and go on.

    Tracks are decoded ahead, separated several at a time (their windows share the device's batches) and
    written behind (:mod:`~stemsplit.pipeline.workers`); the reporter hears of each as it starts, progresses
    and ends, in the order that happens.

    Args:
        batch: from :func:`plan_batch`.
        options: the run's settings.
        reporter: progress and results, as they happen.
        download_reporter: download progress (model obtained on first need).
        loader: builds a model of ``batch.models`` (default: :func:`stemsplit.weights.loading.load_model`);
            called at most once per model, and not for a model whose tracks are all skipped or fail before
            separation. The tracks of one model run together, then those of the next.
        devices: where to run (default: ``batch.compute.devices``), one runner each.

    Returns:
        One result per input, in input order, each naming the model of its track (``TrackResult.model``).

    Warns:
        DeviceFallbackWarning: with ``--device auto``, the GPU failed (an :class:`AcceleratorError`); the
            tracks it had not finished run again on the CPU.

    Raises:
        ModelUnavailableError: the model could not be obtained (the batch stops: nothing could be done).
        BatchInterrupted: Ctrl-C; every worker stopped, and the exception carries every input's result, the
            unfinished ones ``interrupted`` (each also passed to ``reporter.track_finished``). A track stopped
            half-way leaves no file under a final name, and no folder it created.
    """
    reporter = reporter or NullBatchReporter()
    warn_compute(batch.compute)  # once per run, not once per track
    compute = replace(batch.compute, devices=tuple(devices)) if devices else batch.compute
    results: dict[int, TrackResult] = {}  # by input index: tracks may finish in any order
    total = len(batch.tracks)

    def finished(index: int, result: TrackResult) -> None:
        result = with_model(batch, index, result)
        results[index] = result
        reporter.track_finished(result)

    try:
        for group in triage(batch, options, reporter, finished):
            if not group.jobs:
                continue
            model, provenance, model_jobs = group.model, group.provenance, group.jobs
            show_stage(reporter, f"loading {model.name}")
            bag = loader(model) if loader else load_model(model, model_cache(options, download_reporter))
            jobs = model_jobs
            while jobs:
                try:
                    run_jobs(
                        bag, jobs, options, batch.plan, compute, provenance, reporter,
                        total_tracks=total, on_result=lambda job, result: finished(job.index, result),
                    )  # fmt: skip
                    jobs = []
                except AcceleratorError as err:  # only with --device auto: the rest of the batch on the CPU
                    warnings.warn(
                        DeviceFallbackWarning(f"{err}; continuing on the CPU (slower)"), stacklevel=2
                    )
                    compute = compute.on_cpu()
                    jobs = [job for job in jobs if job.index not in results]
            del bag  # one model in memory at a time
    except KeyboardInterrupt:
        raise interrupted(batch, results, reporter) from None
    return [results[i] for i in range(total)]


@dataclass(frozen=True)
class ModelGroup:
    """The tracks of one model of a batch that need separating.

    Attributes:
        model: the model (one of ``Batch.models``).
        settings: the run's output settings (as recorded in ``stemsplit.json``).
        jobs: its tracks to separate, in the batch's order (may be empty).
    """

    model: ModelInfo
    settings: dict[str, Any]
    jobs: list[Job]

    @cached_property
    def provenance(self) -> Provenance:
        """The sidecar record of the stems it makes (a local model file not yet hashed is hashed now).

        Raises:
            CheckpointError, OSError: a local model file can no longer be read to compute its identity.
        """
        return Provenance(self.model.name, weights_identity(self.model), self.settings)


def triage(
    batch: Batch,
    options: SeparationOptions,
    reporter: BatchReporter,
    finished: Callable[[int, TrackResult], None],
    *,
    derive: bool = True,
) -> list[ModelGroup]:
    """Settle the tracks that need no separation and group the others by model (local and Ray runs alike).

    An input that could not be probed (or got no output paths) is ``failed``; one whose stems are complete
    for its model (per its sidecar, unless ``options.overwrite``) is ``skipped``, with the facts and warnings
    its sidecar recorded. Each is announced to ``reporter`` and passed to ``finished(index, result)`` here.
    Tracks whose stems were made with other settings are told to ``reporter`` as a note (which settings,
    old → new), one per distinct change. With ``derive``, a track whose ``--stems`` now asks for some of the
    stems already on disk, all else equal (:func:`~stemsplit.pipeline.sidecar.derivable_subset`), is settled
    here too: its sidecar is rewritten for those stems, the others removed, and it is ``skipped``; without
    ``derive`` (a dry run writes nothing) it is grouped for separating.

    Returns:
        One group per model of ``batch.models``, in that order.

    Raises:
        CheckpointError, OSError: a local model file can no longer be read to compute its identity (here
            when a sidecar needs it, else when a group's ``provenance`` is first used).
    """
    groups = [ModelGroup(m, options.output_settings(), []) for m in batch.models]
    total = len(batch.tracks)
    changed: dict[str, list[Path]] = {}  # a setting changed since the stems were made: its tracks
    kept: dict[str, list[Path]] = {}  # only --stems changed, to fewer stems already on disk: its tracks
    for index, (path, probed, outputs) in enumerate(batch.tracks):
        duration = probed.duration_s if isinstance(probed, AudioInfo) else None
        group = groups[batch.picks[index]]
        if isinstance(probed, StemsplitError) or outputs is None:
            reporter.track_started(index, total, path, duration)
            error = failure_message(probed) if isinstance(probed, StemsplitError) else "no output paths"
            finished(index, TrackResult(path, "failed", error=error))
        elif (
            not options.overwrite
            and outputs.sidecar.is_file()  # else no need for the provenance (a dry run hashes no model for it)
            and is_complete(outputs.sidecar, group.provenance, outputs.stems, path)
        ):
            reporter.track_started(index, total, path, duration)
            finished(index, skipped_result(path, probed, outputs))
        elif (
            derive
            and not options.overwrite
            and outputs.sidecar.is_file()
            and derivable_subset(outputs.sidecar, group.provenance, outputs.stems, path)
        ):
            changes = ", ".join(changed_settings(outputs.sidecar, group.provenance))
            keep_subset(outputs.sidecar, group.provenance, outputs.stems, path)
            kept.setdefault(changes, []).append(path)
            reporter.track_started(index, total, path, duration)
            finished(index, skipped_result(path, probed, outputs))
        else:
            if outputs.sidecar.is_file() and not made_from_other_input(outputs.sidecar, path):
                changes = ", ".join(changed_settings(outputs.sidecar, group.provenance))
                if changes:
                    changed.setdefault(changes, []).append(path)
            group.jobs.append(Job(index, path, outputs, duration))
    for notes, outcome in (
        (kept, "kept from the stems on disk, nothing to separate"),
        (changed, "separating again (what the new settings do not write is removed)"),
    ):
        for changes, paths in notes.items():
            which = f"{paths[0].name}'s" if len(paths) == 1 else f"{len(paths)} tracks'"
            tell(reporter, f"{changes} since {which} stems were made: {outcome}")
    return groups


def skipped_result(path: Path, probed: AudioInfo, outputs: TrackOutputs) -> TrackResult:
    """A complete track's result: its stems, and the facts and warnings of the run that made them (from
    its sidecar; the probe's where the sidecar predates them)."""
    facts = recorded_facts(outputs.sidecar)
    notes = tuple(
        TrackWarning(str(w.get("kind")), str(w.get("message")))
        for w in facts.get("warnings") or ()
        if isinstance(w, dict)
    )
    return TrackResult(
        path, "skipped", outputs=dict(outputs.stems),
        duration_s=facts.get("duration_s", probed.duration_s),
        samplerate=facts.get("samplerate", probed.samplerate),
        channels=facts.get("channels", probed.channels),
        codec=facts.get("codec", probed.codec),
        output_samplerate=facts.get("output_samplerate"),
        warnings=notes,
    )  # fmt: skip


def with_model(batch: Batch, index: int, result: TrackResult) -> TrackResult:
    """``result`` naming the model of input ``index`` (a track that could not be probed got none)."""
    if isinstance(batch.tracks[index][1], AudioInfo):
        return replace(result, model=batch.model_of(index).name)
    return result


def interrupted(
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
