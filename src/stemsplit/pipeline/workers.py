"""Running a batch: decoding ahead, the device(s) kept busy, encoding behind, results as they come.

Threads, and why threads: the decoders (libsndfile, FFmpeg through PyAV), soxr, numpy, the encoders and
torch all release the GIL in their heavy calls, so threads overlap them without copying audio between
processes (``benchmarks/bench_folder.py`` measures the overlap as ``device_busy``).

* one **decoder** thread decodes the inputs in order, each once, into memory (or a temporary file past the
  run's memory budget), with their statistics, as far ahead as the in-flight bound allows;
* one **device** thread per device (``-d cuda:0,cuda:1``) owns a :class:`~stemsplit.inference.DeviceRunner`
  and a :class:`~stemsplit.inference.Scheduler`, takes decoded tracks as it has room and runs batches filled
  from all of them;
* one **writer** thread per track in flight turns its finished blocks into stem files (atomically) and its
  sidecar, then reports the result;
* the calling thread hands progress and results to the reporter as they happen, and answers Ctrl-C: every
  worker stops within a block or a window, writers delete their temporaries, nothing is left under a final
  name.

Queues are bounded: at most ``in_flight`` tracks are decoded or being separated at once, and a writer's queue
holds at most :data:`WRITER_QUEUE_BLOCKS` blocks (the device thread waits for a writer that is behind), so
memory does not grow with the number of tracks or their length.

A device thread makes its device the thread's current CUDA device first (``torch.cuda.set_device``), so
everything it queues without naming a device goes there; the process-wide CUDA settings (cuDNN autotuning,
TF32) are applied once, in the calling thread, before the device threads start, and restored after they end.
"""

from __future__ import annotations

import copy
import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stemsplit.errors import AcceleratorError, InvalidOptionError, StemsplitError
from stemsplit.inference import (
    DeviceRunner,
    HostBlock,
    ModelBag,
    Scheduler,
    TrackStream,
    make_runner,
)
from stemsplit.inference.compute import Compute
from stemsplit.inference.devices import cuda_tuning
from stemsplit.inference.stream import BagPlan
from stemsplit.pipeline.inputs import failure_message, unexpected_error
from stemsplit.pipeline.options import SeparationOptions, StemPlan, run_plan
from stemsplit.pipeline.outputs import TrackOutputs, folders_removed_unless_finished
from stemsplit.pipeline.results import (
    BatchReporter,
    TrackNotes,
    TrackResult,
    noting,
    tell,
)
from stemsplit.pipeline.sidecar import Provenance
from stemsplit.pipeline.track import MEMORY_SECONDS, DecodedTrack, StemSink, decode_track

__all__ = ["Job", "run_jobs"]

STOP_WAIT_S = 2.0
"""How long Ctrl-C waits for the workers to stop before the batch gives up on them (they are daemons)."""

WRITER_QUEUE_BLOCKS = 4
"""Finished blocks (a batch's worth of stems each) that may wait for one track's writer."""


@dataclass
class Job:
    """One track to separate: its place in the batch, its input and its planned outputs."""

    index: int
    path: Path
    outputs: TrackOutputs
    duration_s: float | None = None
    notes: TrackNotes = field(default_factory=TrackNotes)


@dataclass
class _Live:
    """A decoded track on its way through a device and a writer."""

    job: Job
    track: DecodedTrack
    device: int  # index of the device thread it was given to
    blocks: queue.Queue[HostBlock | _End | BaseException] = field(
        default_factory=lambda: queue.Queue(WRITER_QUEUE_BLOCKS)
    )
    stream: TrackStream | None = None
    closed: threading.Event = field(default_factory=threading.Event)  # the writer has ended


@dataclass(frozen=True)
class _End:
    runner: DeviceRunner  # where the track ran (for its result)


class _Stop(Exception):
    """Raised inside a worker when the batch is stopping."""


class _Run:
    """The shared state of one batch run (see the module docstring)."""

    def __init__(
        self,
        bag: ModelBag,
        options: SeparationOptions,
        plan: StemPlan,
        compute: Compute,
        provenance: Provenance,
        jobs: Sequence[Job],
    ) -> None:
        self.bag, self.options, self.plan, self.compute, self.provenance = (
            bag,
            options,
            plan,
            compute,
            provenance,
        )
        self.devices: list[torch.device] = list(compute.devices)
        self.jobs = list(jobs)
        self.bag_plan: BagPlan = run_plan(bag, options, plan.computed)
        single = (compute.batch_size or 1) == 1 and self.devices[0].type == "cpu"
        self.per_device = 1 if single else 4
        self.in_flight = threading.Semaphore(len(self.devices) * self.per_device + 1)
        self.budget = _Budget(int(MEMORY_SECONDS * bag.samplerate))
        self.ready: list[queue.Queue[_Live | None]] = [queue.Queue() for _ in self.devices]
        self.assigned = [0] * len(self.devices)  # tracks given to each device and not yet written
        self._next_device = 0
        self._assign_lock = threading.Lock()
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.settings = ExitStack()  # the process-wide CUDA settings, for the whole run

    # -- threads ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        models = [self.bag.models]
        for _ in self.devices[1:]:  # a second device needs its own copy of the networks
            models.append(tuple(copy.deepcopy(m) for m in self.bag.models))
        for i, (device, nets) in enumerate(zip(self.devices, models, strict=True)):
            bag = ModelBag(
                nets, self.bag.sources, self.bag.samplerate, self.bag.audio_channels,
                self.bag.segment_samples, self.bag.weights, self.bag.fixed_window,
            )  # fmt: skip
            runner = make_runner(bag, self.bag_plan, self.compute, device=device)
            self.settings.enter_context(cuda_tuning(runner.device, exact=runner.dtype == torch.float32))
            self._spawn(f"stemsplit-device-{i}-{device}", self._device_loop, runner, self.ready[i])
        self._spawn("stemsplit-decoder", self._decode_loop)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(target, *args), name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except _Stop:
            pass
        except KeyboardInterrupt:  # raised in a worker (by a callback): the whole batch is interrupted
            self.events.put(("interrupt", None))
        except BaseException as err:  # a bug in a worker must reach the caller, not vanish with the thread
            self.events.put(("fatal", err))

    # -- decoding -------------------------------------------------------------------------------------------

    def _decode_loop(self) -> None:
        for job in self.jobs:
            while not self.in_flight.acquire(timeout=0.1):
                self._check_stop()
            self._check_stop()
            self.events.put(("started", job))
            try:
                with noting(job.notes):
                    track = decode_track(
                        self.bag, job.path, job.outputs, self.options,
                        memory_frames=self.budget.take(), stop=self.stop.is_set,
                    )  # fmt: skip
            except KeyboardInterrupt:
                if self.stop.is_set():
                    raise _Stop from None
                raise
            except BaseException as err:
                self.budget.give_back()
                self.in_flight.release()
                self._fail(job, err)
                continue
            self.budget.settle(track.audio)
            live = _Live(job, track, self._assign())
            self._spawn(f"stemsplit-writer-{job.index}", self._write_loop, live)
            self.ready[live.device].put(live)
        for ready in self.ready:
            ready.put(None)  # no more tracks

    def _assign(self) -> int:
        """The device for the next track: the one with the fewest tracks outstanding (in turn on a tie)."""
        n = len(self.devices)
        with self._assign_lock:
            device = min(range(n), key=lambda d: (self.assigned[d], (d - self._next_device) % n))
            self.assigned[device] += 1
            self._next_device = (device + 1) % n
            return device

    # -- the device(s) ---------------------------------------------------------------------------------------

    def _device_loop(self, runner: DeviceRunner, ready: queue.Queue[_Live | None]) -> None:
        bind_thread(runner.device)
        scheduler = Scheduler(runner, self.bag_plan.members)
        active: list[_Live] = []
        more = True
        with runner:
            runner.prepare(lambda line: self.events.put(("note", line)))
            while True:
                self._check_stop()
                more = self._admit(scheduler, active, runner, ready) if more else False
                if not active:
                    if not more:
                        return
                    continue
                try:
                    with noting(*(live.job.notes for live in active)):
                        if not scheduler.step():
                            scheduler.drain()
                except _Stop:
                    raise
                except Exception as err:  # the model failed on these tracks: they fail, the batch goes on
                    for live in active:
                        self._send(live, err)
                    active.clear()
                    scheduler = Scheduler(runner, self.bag_plan.members)
                    continue
                for live in [a for a in active if a.stream is not None and a.stream.done]:
                    self._send(live, _End(runner))
                    active.remove(live)

    def _admit(
        self,
        scheduler: Scheduler,
        active: list[_Live],
        runner: DeviceRunner,
        ready: queue.Queue[_Live | None],
    ) -> bool:
        """Take decoded tracks while there is room (waiting only when idle); False once there are no more."""
        while len(active) < self.per_device:
            try:
                live = ready.get_nowait() if active else ready.get(timeout=0.1)
            except queue.Empty:
                return True
            if live is None:
                return False
            live.stream = TrackStream(
                self.bag_plan,
                live.track.audio,
                live.track.stats,
                functools.partial(self._send, live),
                runner.device,
            )
            scheduler.add(live.stream)
            active.append(live)
        return True

    def _send(self, live: _Live, item: HostBlock | _End | BaseException) -> None:
        """Hand ``item`` to the track's writer, waiting while its queue is full; dropped once it has ended."""
        while not live.closed.is_set():
            try:
                live.blocks.put(item, timeout=0.1)
                return
            except queue.Full:
                self._check_stop()

    # -- writing ------------------------------------------------------------------------------------------

    def _write_loop(self, live: _Live) -> None:
        job = live.job
        try:
            with noting(job.notes), folders_removed_unless_finished(job.outputs):
                result = self._write(live)
            result.warnings = tuple(job.notes.records)
            self.events.put(("finished", (job, result)))
        except (_Stop, KeyboardInterrupt):
            raise
        except BaseException as err:
            self._fail(job, err)
        finally:
            live.closed.set()
            self.budget.release(live.track.audio)
            with self._assign_lock:
                self.assigned[live.device] -= 1
            self.in_flight.release()

    def _write(self, live: _Live) -> TrackResult:
        """Write one track's stems as its blocks arrive; on any exception, nothing of it stays on disk."""
        job = live.job
        try:
            sink = StemSink(
                live.track, self.options, self.plan, samplerate=self.bag.samplerate,
                sources=self.bag.sources, provenance=self.provenance,
                progress=lambda seconds: self.events.put(("progress", (job.index, seconds))),
            )  # fmt: skip
        except BaseException:
            live.track.audio.close()
            raise
        try:
            while True:
                try:
                    item = live.blocks.get(timeout=0.1)
                except queue.Empty:
                    self._check_stop()
                    continue
                self._check_stop()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _End):
                    return sink.finish(item.runner)
                sink.write(item)
        except BaseException:
            sink.abort()  # before the folders it created are removed
            raise

    # -- results -------------------------------------------------------------------------------------------

    def _fail(self, job: Job, err: BaseException) -> None:
        if isinstance(err, InvalidOptionError) or (
            isinstance(err, AcceleratorError) and self.compute.cpu_fallback  # the batch goes on on the CPU
        ):
            self.events.put(("fatal", err))  # the same for every track: stop and say so once
            return
        self.events.put(("finished", (job, failed_result(job.path, err, job.notes))))

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stop

    def shutdown(self) -> None:
        """Stop every worker (they abandon their work and delete temporaries) and wait a little for them."""
        self.stop.set()
        for ready in self.ready:
            ready.put(None)
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.settings.close()


def bind_thread(device: torch.device) -> None:
    """Make ``device`` the calling thread's current CUDA device (nothing elsewhere): streams, events and
    kernels queued without naming a device then go to it, not to ``cuda:0``."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


class _Budget:
    """Decoded audio frames that may be held in memory across the tracks in flight (the rest spills)."""

    def __init__(self, frames: int) -> None:
        self._free = frames
        self._lock = threading.Lock()
        self._lent = 0
        self._held: dict[int, int] = {}

    def take(self) -> int:
        """Frames the next track may keep in memory (lent until :meth:`settle` or :meth:`give_back`)."""
        with self._lock:
            self._lent = self._free
            return self._lent

    def settle(self, audio: Any) -> None:
        """The track decoded: keep what it really holds in memory, return the rest of the loan."""
        with self._lock:
            used = 0 if audio.spilled else audio.end
            self._held[id(audio)] = used
            self._free -= used
            self._lent = 0

    def give_back(self) -> None:
        with self._lock:
            self._lent = 0

    def release(self, audio: Any) -> None:
        """The track is done: its memory is free for the next ones."""
        with self._lock:
            self._free += self._held.pop(id(audio), 0)


def failed_result(path: Path, err: BaseException, notes: TrackNotes | None = None) -> TrackResult:
    """The ``failed`` result of a track that raised ``err`` (an unexpected error names its type and says how
    to get its traceback)."""
    error = err if isinstance(err, StemsplitError) else unexpected_error(path, err, "separating")
    result = TrackResult(path, "failed", error=failure_message(error))
    if notes is not None:
        result.warnings = tuple(notes.records)
    return result


def run_jobs(
    bag: ModelBag,
    jobs: Sequence[Job],
    options: SeparationOptions,
    plan: StemPlan,
    compute: Compute,
    provenance: Provenance,
    reporter: BatchReporter,
    *,
    total_tracks: int | None = None,
    on_result: Callable[[Job, TrackResult], None],
) -> None:
    """Separate ``jobs`` on ``devices``, calling ``on_result`` (in this thread) as each track ends.

    Args:
        bag: the loaded model.
        jobs: the tracks to separate, in the batch's order.
        options, plan, provenance: the run's settings, stems and sidecar record.
        compute: how the batch computes (one device thread per device of ``compute.devices``).
        reporter: told when a track starts and how far it is (in this thread).
        total_tracks: the batch's size, for the reporter (default: the number of jobs).
        on_result: called once per job, in the order the tracks end.

    Raises:
        InvalidOptionError: an option that fails for every track (raised once, the batch stops).
        AcceleratorError: the GPU failed and ``compute.cpu_fallback`` (``--device auto``) lets the caller
            go on on the CPU (tracks that had not ended got no result).
        KeyboardInterrupt: after stopping every worker (tracks that had not ended got no result).
    """
    if not jobs:
        return
    run = _Run(bag, options, plan, compute, provenance, jobs)
    remaining = len(jobs)
    total_tracks = total_tracks or len(jobs)
    try:
        run.start()
        while remaining:
            try:
                kind, payload = run.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "started":
                job = payload
                reporter.track_started(job.index, total_tracks, job.path, job.duration_s)
            elif kind == "progress":
                reporter.track_progress(*payload)
            elif kind == "note":
                tell(reporter, payload)
            elif kind == "finished":
                job, result = payload
                remaining -= 1
                on_result(job, result)
            elif kind == "interrupt":
                raise KeyboardInterrupt
            elif kind == "fatal":
                raise payload
    except BaseException:
        run.shutdown()
        raise
    run.shutdown()
