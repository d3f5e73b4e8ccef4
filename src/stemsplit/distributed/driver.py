"""The driver of a Ray run: plan as a local run does, hand tracks to long-lived workers, collect results.

The driver plans with the local planner (:func:`~stemsplit.pipeline.plan_batch`: inputs, probes, output
names and their collisions) and settles failed and complete tracks with the local triage
(:func:`~stemsplit.pipeline.batch.triage`); only the tracks left are sent to workers. It keeps at most
``max_in_flight`` tracks with workers, the least busy worker first, and reports each result as it comes.

Faults:

* a worker lost with tracks in hand (its process or node died): the worker is replaced (at most twice
  the number of workers for each model of the run: with ``--model auto``, each model's workers start
  afresh) and each of those tracks goes to a worker again, at most ``max_attempts`` times in all; a retried track whose stems the lost worker had finished is not written again;
* a worker that stops answering but may be alive (Ray's ``ActorUnavailableError``): its tracks fail
  rather than go to a second writer, and it is replaced; a rerun resumes them;
* a track that fails (a bad input) is ``failed`` and the rest go on; an option that fails everywhere
  stops the run, as locally;
* a worker that cannot load the model stops the run with a :class:`~stemsplit.errors.WorkerModelError`
  naming its node;
* Ctrl-C kills the workers at once and raises :class:`~stemsplit.pipeline.BatchInterrupted`. A track
  cut off leaves only hidden temporaries (never a file under a final name); a rerun redoes it and skips
  the finished ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from stemsplit.distributed.cluster import (
    INSTALL_HINT,
    ClusterOptions,
    WorkerShape,
    check_device,
    connected,
    import_ray,
    node_resources,
    worker_shape,
)
from stemsplit.distributed.worker import LoadFailed, Outcome, Ready, TrackWorker, WorkerSpec
from stemsplit.errors import (
    ClusterError,
    InvalidOptionError,
    StemsplitWarning,
    WorkerLostWarning,
    WorkerModelError,
    first_line,
)
from stemsplit.inference import ModelBag
from stemsplit.pipeline import (
    Batch,
    BatchReporter,
    NullBatchReporter,
    SeparationOptions,
    TrackResult,
    TrackWarning,
    plan_batch,
)
from stemsplit.pipeline.batch import interrupted, triage, with_model
from stemsplit.pipeline.outputs import TrackOutputs
from stemsplit.pipeline.results import show_stage, tell, warning_kind
from stemsplit.pipeline.workers import Job
from stemsplit.weights.loading import ModelInfo

WAIT_S = 0.2
"""How long the driver waits for a result before looking at its workers again (s)."""

SLOW_START_S = 60.0
"""After this long with no worker ready, the driver says why nothing moves (s)."""


def plan(paths: Sequence[str], options: SeparationOptions, *, dry_run: bool = False) -> Batch:
    """Plan a Ray run on the driver, exactly as a local run is planned (no cluster needed).

    The device is the workers' business (each gets a GPU or CPU slots), so it is only checked for a value
    a Ray run can honour and the driver plans as on a CPU.

    Raises:
        InvalidOptionError, UnknownModelError, CheckpointError: as :func:`~stemsplit.pipeline.plan_batch`,
            and a ``--device`` that names a device (``cuda:1``, ``mps``).
    """
    check_device(options.device)
    return plan_batch(paths, dataclasses.replace(options, device="cpu"), dry_run=dry_run)


def separate(
    paths: Sequence[str],
    out_dir: str | Path,
    options: SeparationOptions | None = None,
    cluster: ClusterOptions | None = None,
    *,
    reporter: BatchReporter | None = None,
) -> list[TrackResult]:
    """Separate files, folders and globs on a Ray cluster; the stems go under ``out_dir``.

    Args:
        paths: inputs, as on the command line (every node must see them at the same paths).
        out_dir: the output root (replaces ``options.out_dir``; every node must see it).
        options: what to compute and write (as a local run).
        cluster: which cluster and how many workers (default: a private local cluster).
        reporter: progress and results, as they happen.

    Returns:
        One result per input, in input order (each done track with the ``node`` that ran it).

    Raises:
        InvalidOptionError: an invalid option, or Ray is not installed.
        ClusterError: the cluster cannot be started or joined, or has no room for a worker.
        WorkerModelError: a worker could not load the model (the error names its node).
        BatchInterrupted: Ctrl-C (with every input's result).
    """
    options = dataclasses.replace(options or SeparationOptions(), out_dir=Path(out_dir))
    cluster = cluster or ClusterOptions()
    import_ray()  # before any work
    return run_batch(plan(paths, options), options, cluster, reporter=reporter)


def run_batch(
    batch: Batch,
    options: SeparationOptions,
    cluster: ClusterOptions,
    *,
    reporter: BatchReporter | None = None,
    loader: Callable[[ModelInfo], ModelBag] | None = None,
) -> list[TrackResult]:
    """Run a batch planned by :func:`plan` on Ray workers (see the module docstring).

    Args:
        batch, options: the planned batch and the run's settings.
        cluster: which cluster and how many workers.
        reporter: told of each track as it is handed out and as it ends (in this thread).
        loader: builds a model of the batch on each worker in place of
            :func:`~stemsplit.weights.loading.load_model` (picklable; benchmarks and tests).

    Returns:
        One result per input, in input order.

    Raises:
        As :func:`separate`. No cluster is started or joined when every track is settled by the planner.
    """
    reporter = reporter or NullBatchReporter()
    import_ray()
    results: dict[int, TrackResult] = {}

    def finished(index: int, result: TrackResult) -> None:
        result = with_model(batch, index, result)
        results[index] = result
        reporter.track_finished(result)

    try:
        groups = [g for g in triage(batch, options, reporter, finished) if g.jobs]
        if groups:
            local = cluster.address == "local"
            show_stage(reporter, "starting Ray" if local else f"joining the Ray cluster ({cluster.address})")
            with connected(cluster.address) as ray:
                shape = worker_shape(node_resources(ray), cluster, options.device)
                for group in groups:  # with --model auto, the workers of one model, then the next's
                    seconds = sum(j.duration_s or 0.0 for j in group.jobs) * max(1, options.shifts)
                    spec = WorkerSpec(
                        model=dataclasses.replace(
                            group.model,
                            path=group.model.path.resolve() if group.model.path else None,
                            # each worker reads a local file itself: no weights through the store
                            members=None if group.model.path else group.model.members,
                        ),
                        options=dataclasses.replace(
                            options, device=shape.device, jobs=options.jobs or shape.threads
                        ),
                        plan=batch.plan,
                        provenance=group.provenance,
                        seconds=seconds / shape.count,
                        loader=loader,
                    )
                    dispatch = _Dispatch(
                        ray, spec, shape, cluster, group.jobs, reporter, len(batch.tracks), finished
                    )
                    dispatch.run()
    except KeyboardInterrupt:
        raise interrupted(batch, results, reporter) from None
    return [results[i] for i in range(len(batch.tracks))]


@dataclass
class _Worker:
    """A worker as the driver sees it."""

    handle: Any
    loading: Any  # the ObjectRef of its load(), until it answers
    ready: Ready | None = None
    busy: int = 0  # tracks handed to it and not answered
    lost: bool = False


@dataclass
class _Task:
    """A track on its way through the workers."""

    job: Job
    attempts: int = 0  # workers lost while they had it
    notes: list[TrackWarning] = field(default_factory=list)


class _Dispatch:
    """The driver's loop: start workers, keep them fed, collect answers, replace lost workers."""

    def __init__(
        self,
        ray: ModuleType,
        spec: WorkerSpec,
        shape: WorkerShape,
        cluster: ClusterOptions,
        jobs: Sequence[Job],
        reporter: BatchReporter,
        total: int,
        finished: Callable[[int, TrackResult], None],
    ) -> None:
        self.ray, self.spec, self.shape, self.cluster = ray, spec, shape, cluster
        self.reporter, self.total, self.finished = reporter, total, finished
        self.pending = deque(_Task(job) for job in jobs)
        self.max_in_flight = cluster.max_in_flight or 2 * shape.count
        self.per_worker = max(1, math.ceil(self.max_in_flight / shape.count))
        self.replacements = 2 * shape.count
        self.remote = ray.remote(**shape.resources)(TrackWorker)
        self.workers: list[_Worker] = []
        self.running: dict[Any, tuple[_Task, _Worker]] = {}  # ObjectRef → its track and worker

    def run(self) -> None:
        try:
            for _ in range(min(self.shape.count, len(self.pending))):
                self._start_worker()
            started = time.monotonic()
            waited = False  # said that no worker is ready yet
            while self.pending or self.running:
                self._hand_out()
                if not waited and time.monotonic() - started > SLOW_START_S:
                    waited = self._note_slow_start()
                loading = {w.loading: w for w in self.workers if w.loading is not None and not w.lost}
                waiting = [*self.running, *loading]
                if not waiting:  # every worker lost, none left to start
                    self._give_up()
                    return
                done, _ = self.ray.wait(waiting, num_returns=1, timeout=WAIT_S)
                for ref in done:
                    if ref in loading:
                        self._loaded(loading[ref], ref)
                    else:
                        self._answered(ref)
        finally:
            for worker in self.workers:
                self.ray.kill(worker.handle)

    # -- workers ------------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        handle = self.remote.remote(self.spec)
        self.workers.append(_Worker(handle, handle.load.remote()))

    def _note_slow_start(self) -> bool:
        """Tell the reporter, once, why nothing moves when no worker is ready after a while; True once said
        (or when a worker is ready: then there is nothing to say)."""
        if any(w.ready is not None for w in self.workers):
            return True
        tell(
            self.reporter,
            f"no Ray worker is ready after {SLOW_START_S:.0f} s ({len(self.workers)} starting): they may be "
            "loading or downloading the model, or waiting for resources other jobs hold (`ray status` shows "
            "them)",
        )
        return True

    def _loaded(self, worker: _Worker, ref: Any) -> None:
        worker.loading = None
        try:
            answer: Ready | LoadFailed = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            if getattr(err, "actor_init_failed", False):  # it could not even start (stemsplit missing there?)
                raise _start_failure(err) from None
            self._lose(worker)
            return
        if isinstance(answer, LoadFailed):
            if answer.kind == "option":
                raise InvalidOptionError(answer.message)
            raise WorkerModelError(
                f"the model could not be loaded on node {answer.node}: {answer.message}", node=answer.node
            )
        worker.ready = answer

    def _lose(self, worker: _Worker) -> None:
        """A worker died: make sure it stays dead and start another in its place, while allowed."""
        if worker.lost:
            return
        worker.lost = True
        self.ray.kill(worker.handle)
        if self.replacements > 0 and (self.pending or self.running):
            self.replacements -= 1
            self._start_worker()

    # -- tracks ---------------------------------------------------------------------------------------

    def _hand_out(self) -> None:
        while self.pending and len(self.running) < self.max_in_flight:
            ready = [
                w for w in self.workers if w.ready is not None and not w.lost and w.busy < self.per_worker
            ]
            if not ready:
                return
            worker = min(ready, key=lambda w: w.busy)
            task = self.pending.popleft()
            job = task.job
            if task.attempts == 0:
                self.reporter.track_started(job.index, self.total, job.path, job.duration_s)
                if self.spec.options.overwrite:  # so that a retry can tell this run's stems from older ones
                    job.outputs.sidecar.unlink(missing_ok=True)
            ref = worker.handle.separate.remote(
                job.path.absolute(), _absolute(job.outputs), job.duration_s, task.attempts > 0
            )
            worker.busy += 1
            self.running[ref] = (task, worker)

    def _answered(self, ref: Any) -> None:
        task, worker = self.running.pop(ref)
        worker.busy -= 1
        job = task.job
        try:
            outcome: Outcome = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            self._unreachable(task, worker)
            return
        except self.ray.exceptions.RayActorError:  # it died: its process or its node
            self._retry(task, worker)
            return
        except self.ray.exceptions.RayError as err:  # Ray could not run the call (the worker's own errors
            # come back as failed results): this track fails, in one line (the remote traceback is Ray's log's)
            message = (
                f"{job.path}: the Ray worker could not run this track ({first_line(err, with_type=True)})"
            )
            self._finish(task, TrackResult(job.path, "failed", error=message))
            return
        if outcome.fatal:
            raise InvalidOptionError(outcome.result.error or "an option failed on a worker")
        self._finish(task, outcome.result)

    def _retry(self, task: _Task, worker: _Worker) -> None:
        """The worker holding ``task`` died: give the track to another worker, or give up on it.

        The track is queued again before the worker is replaced, so that the last track of a run still
        gets a replacement worker.
        """
        node = _node_of(worker)
        task.attempts += 1
        job = task.job
        if task.attempts >= self.cluster.max_attempts:
            self._lose(worker)
            message = (
                f"{job.path}: {task.attempts} Ray workers were lost while they had this track (does it "
                "exhaust their memory, or crash the decoder?); it was not separated"
            )
            self._finish(task, TrackResult(job.path, "failed", error=message))
            return
        message = (
            f"{job.path}: the Ray worker on {node} was lost while it had this track; given to another "
            f"worker (attempt {task.attempts + 1} of {self.cluster.max_attempts})"
        )
        task.notes.append(TrackWarning(warning_kind(WorkerLostWarning), message))
        warnings.warn(WorkerLostWarning(message), stacklevel=2)
        self.pending.appendleft(task)
        self._lose(worker)

    def _unreachable(self, task: _Task, worker: _Worker) -> None:
        """The worker holding ``task`` cannot be reached but may be alive and still writing the track: the
        track fails rather than go to a second writer, and the worker is given up (and replaced)."""
        self._lose(worker)
        message = (
            f"{task.job.path}: the Ray worker on {_node_of(worker)} stopped answering while it had this track "
            "(it may still finish it); run the same command again to resume"
        )
        self._finish(task, TrackResult(task.job.path, "failed", error=message))

    def _finish(self, task: _Task, result: TrackResult) -> None:
        job = task.job
        for note in result.warnings:  # issued on the worker, where nobody sees them
            warnings.warn(note.message, StemsplitWarning, stacklevel=2)
        result.warnings = (*task.notes, *result.warnings)
        result.input = job.path  # as the user named it (the worker saw it absolute)
        if result.outputs:
            result.outputs = dict(job.outputs.stems)
        self.finished(job.index, result)

    def _give_up(self) -> None:
        """No worker is left: every track not finished fails, saying why."""
        lost = sum(w.lost for w in self.workers)
        while self.pending:
            task = self.pending.popleft()
            message = f"{task.job.path}: every Ray worker was lost ({lost} in all); not separated"
            if task.attempts == 0:
                self.reporter.track_started(task.job.index, self.total, task.job.path, task.job.duration_s)
            self._finish(task, TrackResult(task.job.path, "failed", error=message))


def _node_of(worker: _Worker) -> str:
    return worker.ready.node if worker.ready else "its node"


def _absolute(outputs: TrackOutputs) -> TrackOutputs:
    """``outputs`` with absolute paths, as a worker whose working folder is elsewhere needs them."""
    stems = {stem: path.absolute() for stem, path in outputs.stems.items()}
    return TrackOutputs(outputs.track, stems, outputs.sidecar.absolute())


def _start_failure(err: BaseException) -> ClusterError:
    """A worker whose process could not be set up: the cause's last line, and its node's address."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    node = re.search(r"\bip=([0-9A-Fa-f.:]+)", str(err))
    where = f" on node {node.group(1)}" if node else ""
    return ClusterError(
        f"a Ray worker could not start{where} ({lines[-1] if lines else type(err).__name__}); every node needs "
        f"stemsplit with its [ray] extra installed, the same versions as here ({INSTALL_HINT})"
    )
