"""The Ray driver's dispatch loop against a scripted stand-in for Ray: which worker is lost or unreachable, and
when, is decided by the test, so the fault paths run the same way on every machine and in milliseconds.

The stand-in implements the few calls the driver makes (``remote``, ``wait``, ``get``, ``kill``) and raises
Ray's own exception classes; the real cluster runs in ``test_distributed.py``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray.exceptions

from stemsplit.distributed import driver
from stemsplit.distributed.cluster import ClusterOptions, WorkerShape
from stemsplit.distributed.driver import _Dispatch
from stemsplit.distributed.worker import Outcome, Ready
from stemsplit.errors import WorkerLostWarning
from stemsplit.pipeline import NullBatchReporter, SeparationOptions, TrackResult
from stemsplit.pipeline.outputs import TrackOutputs
from stemsplit.pipeline.workers import Job

# What a worker does with a track: (worker number, track path, retry) → an Outcome, or raises a Ray error.
Script = Callable[[int, Path, bool], Outcome]


@dataclass(eq=False)  # hashed by identity, as Ray's ObjectRefs
class _Ref:
    answer: Callable[[], Any]
    waits: int = 0  # calls of wait() before it is ready


@dataclass
class _Handle:
    number: int
    fake: FakeRay
    killed: bool = False

    @property
    def load(self) -> Any:
        ready = Ready(f"node{self.number}", "cpu", "float32")
        return _Method(lambda: _Ref(lambda: ready, waits=self.fake.load_waits))

    @property
    def separate(self) -> Any:
        def call(path: Path, outputs: TrackOutputs, duration_s: float | None, retry: bool) -> _Ref:
            self.fake.calls.append((self.number, path.name, retry))
            return self.fake.ref(lambda: self.fake.script(self.number, path, retry))

        return _Method(call)


@dataclass
class _Method:
    remote: Callable[..., _Ref]


@dataclass
class FakeRay:
    """Enough of the ``ray`` module for :class:`_Dispatch`; every answer is ready at once."""

    script: Script
    load_waits: int = 0  # calls of wait() before a worker's load answers
    exceptions: Any = ray.exceptions
    calls: list[tuple[int, str, bool]] = field(default_factory=list)
    started: list[_Handle] = field(default_factory=list)
    _numbers: Any = field(default_factory=itertools.count)

    def ref(self, answer: Callable[[], Any]) -> _Ref:
        return _Ref(answer)

    def remote(self, **resources: float) -> Callable[[type], Any]:
        def actor_class(cls: type) -> Any:
            def start(spec: object) -> _Handle:
                handle = _Handle(next(self._numbers), self)
                self.started.append(handle)
                return handle

            return _Method(start)

        return actor_class

    def wait(self, refs: list[_Ref], num_returns: int, timeout: float) -> tuple[list[_Ref], list[_Ref]]:
        for ref in refs:
            ref.waits -= 1
        done = [r for r in refs if r.waits < 0][:num_returns]
        return done, [r for r in refs if r not in done]

    def get(self, ref: _Ref) -> Any:
        return ref.answer()

    def kill(self, handle: _Handle) -> None:
        handle.killed = True


@dataclass
class _Spec:
    options: SeparationOptions = field(default_factory=SeparationOptions)


def _dispatch(
    fake: FakeRay, tmp_path: Path, tracks: int, workers: int, reporter: object = None
) -> tuple[_Dispatch, dict[int, TrackResult]]:
    jobs = [
        Job(
            i,
            tmp_path / f"song{i}.wav",
            TrackOutputs(f"song{i}", {}, tmp_path / f"song{i}" / "stemsplit.json"),
        )
        for i in range(tracks)
    ]
    results: dict[int, TrackResult] = {}

    shape = WorkerShape(workers, "cpu", {"num_cpus": 1}, 1)
    dispatch = _Dispatch(
        fake,  # type: ignore[arg-type]
        _Spec(),  # type: ignore[arg-type]
        shape,
        ClusterOptions(),
        jobs,
        reporter or NullBatchReporter(),  # type: ignore[arg-type]
        tracks,
        results.__setitem__,
    )
    return dispatch, results


def _done(path: Path) -> Outcome:
    return Outcome(TrackResult(path, "done"))


def test_the_last_track_of_a_one_worker_run_is_retried_on_a_replacement(tmp_path: Path) -> None:
    def script(worker: int, path: Path, retry: bool) -> Outcome:
        if worker == 0 and path.name == "song1.wav":  # the first worker dies on the last track
            raise ray.exceptions.ActorDiedError()
        return _done(path)

    fake = FakeRay(script)
    dispatch, results = _dispatch(fake, tmp_path, tracks=2, workers=1)
    with pytest.warns(WorkerLostWarning, match="song1.wav: the Ray worker on node0 was lost"):
        dispatch.run()
    assert [results[i].status for i in range(2)] == ["done", "done"]
    assert fake.calls[-1] == (1, "song1.wav", True)  # a replacement worker, told it is a retry
    assert fake.started[0].killed


def test_a_track_whose_workers_keep_dying_fails_after_the_last_attempt(tmp_path: Path) -> None:
    def script(worker: int, path: Path, retry: bool) -> Outcome:
        raise ray.exceptions.ActorDiedError()

    fake = FakeRay(script)
    dispatch, results = _dispatch(fake, tmp_path, tracks=1, workers=1)
    with pytest.warns(WorkerLostWarning):
        dispatch.run()
    assert results[0].status == "failed"
    assert "3 Ray workers were lost while they had this track" in (results[0].error or "")
    assert len(fake.calls) == ClusterOptions().max_attempts


def test_an_unreachable_worker_s_track_fails_rather_than_go_to_a_second_writer(tmp_path: Path) -> None:
    def script(worker: int, path: Path, retry: bool) -> Outcome:
        if worker == 0 and path.name == "song0.wav":
            raise ray.exceptions.ActorUnavailableError("unreachable", None)
        return _done(path)

    fake = FakeRay(script)
    dispatch, results = _dispatch(fake, tmp_path, tracks=3, workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a retry: no worker-lost warning
        dispatch.run()
    assert results[0].status == "failed"
    assert results[0].error == (
        f"{tmp_path / 'song0.wav'}: the Ray worker on node0 stopped answering while it had this track "
        "(it may still finish it); run the same command again to resume"
    )
    assert [c for c in fake.calls if c[1] == "song0.wav"] == [(0, "song0.wav", False)]  # one writer only
    assert [results[i].status for i in (1, 2)] == ["done", "done"]  # the rest go on, on a replacement
    assert fake.started[0].killed and len(fake.started) == 2


def test_a_call_ray_could_not_run_fails_its_track_in_one_line(tmp_path: Path) -> None:
    def script(worker: int, path: Path, retry: bool) -> Outcome:
        if path.name == "song0.wav":
            raise ray.exceptions.RayError(
                "the result could not be pickled\nTraceback (most recent call last):\n  …"
            )
        return _done(path)

    fake = FakeRay(script)
    dispatch, results = _dispatch(fake, tmp_path, tracks=2, workers=1)
    dispatch.run()
    assert results[0].error == (
        f"{tmp_path / 'song0.wav'}: the Ray worker could not run this track "
        "(RayError: the result could not be pickled)"
    )
    assert results[1].status == "done" and len(fake.started) == 1  # the worker goes on


class _Notes(NullBatchReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_workers_slow_to_start_are_explained_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "SLOW_START_S", 0.0)
    fake = FakeRay(lambda worker, path, retry: _done(path), load_waits=5)
    reporter = _Notes()
    dispatch, results = _dispatch(fake, tmp_path, tracks=3, workers=2, reporter=reporter)
    dispatch.run()
    assert reporter.notes == [
        "no Ray worker is ready after 0 s (2 starting): they may be loading or downloading the model, or "
        "waiting for resources other jobs hold (`ray status` shows them)"
    ]
    assert [results[i].status for i in range(3)] == ["done"] * 3


def test_workers_that_start_in_time_are_not_commented(tmp_path: Path) -> None:
    fake = FakeRay(lambda worker, path, retry: _done(path), load_waits=5)  # well under a minute
    reporter = _Notes()
    dispatch, results = _dispatch(fake, tmp_path, tracks=3, workers=2, reporter=reporter)
    dispatch.run()
    assert reporter.notes == []
    assert [results[i].status for i in range(3)] == ["done"] * 3
