"""Batches shared across tracks: fill each forward from the ready windows of several streams in flight.

A :class:`Scheduler` drives one :class:`~stemsplit.inference.runner.DeviceRunner`. Streams
(:class:`~stemsplit.inference.stream.TrackStream`, one per track) are added as their audio is ready and
removed when done; each :meth:`Scheduler.step` takes the next batch of windows for one bag member, the
oldest streams first (so tracks finish in the order they came and memory stays bounded), cuts them on the
device, queues the forward, and only then finishes the previous batch (accumulate, emit). On CUDA the
device therefore always has the next batch queued while the host accumulates and copies out the last
one. Nothing in a step makes the host wait for the device (no ``item``, no index built from host data, no
blocking copy; ``tests/test_host_syncs.py``), except, in reduced precision, the previous batch's own finite
flag, copied behind its forward and read here through an event that waits for that batch alone.

A track's output does not depend on what shares its batches: windows are computed independently per
row, every batch runs at one of the runner's fixed bucket sizes, and each stream accumulates its own
windows in its own order.

Out of memory anywhere in a step (cutting, forward, accumulation) makes the runner shrink (compiled →
eager → half the batch → the CPU) and the same windows are run again; nothing is lost or counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stemsplit.inference.runner import OOM, DeviceRunner, Launched
from stemsplit.inference.stream import TrackStream, Window

__all__ = ["Scheduler"]


@dataclass
class _Batch:
    groups: list[tuple[TrackStream, list[Window]]]  # per stream, its windows in the batch, in order
    inputs: torch.Tensor  # (n, C, size) on the runner's device
    member: int
    launched: Launched | None


class Scheduler:
    """Runs the windows of the streams it holds through one runner.

    Args:
        runner: the device runner (entered by the caller).
        members: the bag members that run, in order.
    """

    def __init__(self, runner: DeviceRunner, members: Sequence[int]) -> None:
        self.runner = runner
        self.members = tuple(members)
        self.streams: list[TrackStream] = []
        self._pending: _Batch | None = None
        self._turn = 0  # index into members: bag members take turns, so every lane advances

    def add(self, stream: TrackStream) -> None:
        """Start separating ``stream`` (its windows join the next batches)."""
        if stream.device != self.runner.device:
            stream.move(self.runner.device)
        self.streams.append(stream)

    def idle(self) -> bool:
        """Nothing queued and nothing left to run."""
        return self._pending is None and not any(s.has_work(m) for s in self.streams for m in self.members)

    def step(self, *, only_full: bool = False) -> bool:
        """Queue the next batch and finish the previous one. Returns False when nothing was run or finished.

        Args:
            only_full: while a stream's audio is still arriving, run only full batches of it (the
                streaming API's rule, so that batching does not depend on block sizes).
        """
        batch = self._next_batch(only_full=only_full)
        finished = self._pending
        self._pending = batch
        if finished is not None:
            self._finish(finished)
        self._retire()
        return batch is not None or finished is not None

    def drain(self) -> None:
        """Finish the queued batch, if any."""
        if self._pending is not None:
            finished, self._pending = self._pending, None
            self._finish(finished)
        self._retire()

    # -- one batch ----------------------------------------------------------------------------------------

    def _next_batch(self, *, only_full: bool) -> _Batch | None:
        for turn in range(len(self.members)):
            member = self.members[(self._turn + turn) % len(self.members)]
            groups = self._gather(member, only_full=only_full)
            if groups:
                self._turn = (self._turn + turn + 1) % len(self.members)
                return self._launch(member, groups)
        return None

    def _gather(self, member: int, *, only_full: bool) -> list[tuple[TrackStream, list[Window]]]:
        """The next batch's windows, per stream: one input length for all (the first window's)."""
        room = self.runner.batch_size
        groups: list[tuple[TrackStream, list[Window]]] = []
        size = None
        for stream in self.streams:
            if room == 0:
                break
            windows = stream.take(member, room, only_full=only_full, size=size)
            if windows:
                groups.append((stream, windows))
                room -= len(windows)
                size = windows[0].plan.size
        return groups

    def _launch(self, member: int, groups: list[tuple[TrackStream, list[Window]]]) -> _Batch:
        while True:
            try:
                inputs = torch.cat([stream.cut(windows) for stream, windows in groups])
                return _Batch(groups, inputs, member, self.runner.launch(member, inputs))
            except OOM:
                if not self._shrink():
                    raise
                groups = self._trim(groups, self.runner.batch_size)  # the rest is handed out again later

    def _finish(self, batch: _Batch) -> None:
        out = self._outputs(batch)
        for i, (stream, windows) in enumerate(batch.groups):
            start = sum(len(w) for _, w in batch.groups[:i])
            while True:
                try:
                    stream.accumulate(windows, out[start : start + len(windows)])
                    break
                except OOM:
                    if not self._shrink():
                        raise
                    out = out.to(self.runner.device)
        for stream, _ in batch.groups:
            stream.emit()

    def _outputs(self, batch: _Batch) -> torch.Tensor:
        """The batch's outputs: from its queued forward, or (after out of memory) run again in pieces."""
        if batch.launched is not None:
            try:
                return self.runner.result(batch.launched)
            except OOM:
                if not self._shrink():
                    raise
        inputs, outs = batch.inputs, []
        start = 0
        while start < inputs.shape[0]:
            piece = inputs[start : start + self.runner.batch_size].to(self.runner.device)
            try:
                outs.append(self.runner.result(self.runner.launch(batch.member, piece)))
            except OOM:
                if not self._shrink():
                    raise
                continue
            start += piece.shape[0]
        return torch.cat([o.to(self.runner.device) for o in outs])

    def _shrink(self) -> bool:
        """Make the runner shrink after out of memory (moving the streams if it fell back to the CPU);
        False when it has nothing left to try."""
        device = self.runner.device
        if not self.runner.shrink():
            return False
        if self.runner.device != device:
            for stream in self.streams:
                stream.move(self.runner.device)
        return True

    @staticmethod
    def _trim(
        groups: list[tuple[TrackStream, list[Window]]], size: int
    ) -> list[tuple[TrackStream, list[Window]]]:
        kept: list[tuple[TrackStream, list[Window]]] = []
        for stream, windows in groups:
            if size <= 0:
                stream.put_back(windows)
                continue
            kept.append((stream, windows[:size]))
            stream.put_back(windows[size:])
            size -= len(kept[-1][1])
        return kept

    def _retire(self) -> None:
        self.streams = [s for s in self.streams if not s.done]
