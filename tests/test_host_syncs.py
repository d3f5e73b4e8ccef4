"""The steady-state batch loop never makes the host wait for the device.

A multi-track, multi-batch separation (the scheduler, the runner, the streams: the code that runs on CUDA)
runs on the CPU under a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that records every operation
that would block the host on a GPU:

* ``aten._local_scalar_dense`` (``item``, ``bool``, ``int``, ``float`` of a tensor, a Python-list index
  turned into a tensor and back);
* ``Tensor.tolist`` (patched, since it reads memory without going through the dispatcher);
* ``aten.lift_fresh`` (a tensor built from Python data: on CUDA, ``torch.tensor(..., device=cuda)`` is a
  blocking upload) and indexing a tensor with a Python list (it is turned into such a tensor);
* a copy between devices that is not ``non_blocking``;
* operations whose output size depends on the data (``nonzero``, ``masked_select``, ``unique``, indexing
  by a boolean mask): CUDA must copy a count to the host before it can allocate their output.

The first batch may make any of them (weights, caches); every later one must make none, also when a new
track joins. What a CPU cannot see: the copy stream's uploads and downloads
(:mod:`stemsplit.inference.transfer` copies nothing on the CPU), the events the host waits on (the finite
flag of the batch it finishes, a staging buffer from two copies ago: CUDA API calls, not tensor operations)
and syncs made inside CUDA libraries (cuDNN autotuning on the first batch of each shape).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from separation_helpers import OneThread, make_tiny_th
from stemsplit.inference import (
    EngineOptions,
    HostBlock,
    ModelBag,
    Scheduler,
    TrackStream,
    bag_plan,
    make_runner,
    track_stats,
)
from stemsplit.inference.stream import InputBuffer
from stemsplit.weights.loading import describe_model, load_model

CPU = torch.device("cpu")
aten = torch.ops.aten

BLOCKING = {
    aten._local_scalar_dense.default,
    aten.lift_fresh.default,
    aten.lift_fresh_copy.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
    aten.repeat_interleave.Tensor,
}


class HostSyncs(TorchDispatchMode):
    """Records, per batch, the operations that would block the host on a GPU (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch = 0
        self.seen: dict[int, list[str]] = {}

    def note(self, what: str) -> None:
        """Record ``what``, with the innermost stemsplit line that made it."""
        where = [f for f in traceback.extract_stack() if "/stemsplit/" in f.filename]
        at = f" at {Path(where[-1].filename).name}:{where[-1].lineno}" if where else ""
        self.seen.setdefault(self.batch, []).append(what + at)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in BLOCKING:
            self.note(str(func))
        elif func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.note(f"{func} by a boolean mask")
        elif func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst_device = args[0].device if func is aten.copy_.default else kwargs.get("device", src.device)
            non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
            if dst_device is not None and torch.device(dst_device) != src.device and not non_blocking:
                self.note(f"{func} {src.device} -> {dst_device}")
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> ModelBag:
    return load_model(describe_model(str(make_tiny_th(tmp_path_factory.mktemp("model")))))


def _complete(wav: torch.Tensor) -> InputBuffer:
    audio = InputBuffer(wav.shape[0])
    audio.append(wav)
    audio.close()
    return audio


def _run(
    bag: ModelBag, options: EngineOptions, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[int, list[str]], int, list[torch.Tensor]]:
    """Three tracks (one joining after the first batches) through one runner at batch size 4 under
    :class:`HostSyncs`; the recorded operations per batch, the number of batches and the outputs."""
    window = bag.segment_samples
    g = torch.Generator().manual_seed(5)
    wavs = [0.3 * torch.randn(2, n, generator=g) for n in (3 * window + 11, 2 * window - 7, 4 * window + 3)]
    plan = bag_plan(bag, options)
    runner = make_runner(bag, plan, options.compute(None))
    outs: list[list[torch.Tensor]] = [[] for _ in wavs]

    def sink(out: list[torch.Tensor]) -> Callable[[HostBlock], None]:
        return lambda block: out.append(block.get())

    def stream(i: int) -> TrackStream:
        return TrackStream(plan, _complete(wavs[i]), track_stats(wavs[i]), sink(outs[i]), runner.device)

    mode = HostSyncs()
    real_tolist = torch.Tensor.tolist

    def tolist(self: torch.Tensor) -> Any:
        mode.note("Tensor.tolist")
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    scheduler = Scheduler(runner, plan.members)
    with OneThread(), runner, mode:
        scheduler.add(stream(0))
        scheduler.add(stream(1))
        while scheduler.step():
            mode.batch += 1
            if mode.batch == 3:
                scheduler.add(stream(2))  # a track joining the steady state
        scheduler.drain()
    monkeypatch.setattr(torch.Tensor, "tolist", real_tolist)
    return mode.seen, mode.batch, [torch.cat(o, dim=-1) for o in outs]


@pytest.mark.parametrize(
    ("precision", "stems", "shifts"),
    [("float32", None, 0), ("bfloat16", None, 0), ("float32", ("vocals", "bass"), 2)],
)
def test_steady_state_batches_make_no_host_sync(
    bag: ModelBag,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    stems: tuple[str, ...] | None,
    shifts: int,
) -> None:
    """bfloat16 has the finite check; a stem subset selects stems; shifts put several lanes in a batch."""
    options = EngineOptions(
        device="cpu", precision=precision, batch_size=4, stems=stems, shifts=shifts, cpu_backend="torch"
    )
    seen, batches, outs = _run(bag, options, monkeypatch)
    assert batches >= 6, f"only {batches} batches: the test needs a steady state"
    assert all(o.isfinite().all() for o in outs)
    steady = {batch: ops for batch, ops in seen.items() if batch >= 1}
    assert steady == {}, f"host syncs after the first batch: {steady}"


def test_the_recorder_sees_each_kind_of_sync() -> None:
    """The hook is not blind: each kind of operation it must catch is recorded."""
    mode = HostSyncs()
    x = torch.ones(3)
    with mode:
        bool(x.all())
        torch.tensor([0, 2])
        x[[0, 2]]
        x.to("meta")
        x.to("meta", non_blocking=True)
        x[x > 0.5]
        torch.nonzero(x)
    assert any("_local_scalar_dense" in op for op in mode.seen[0])
    assert sum("lift_fresh" in op for op in mode.seen[0]) >= 2
    assert sum("cpu -> meta" in op for op in mode.seen[0]) == 1
    assert any("boolean mask" in op for op in mode.seen[0]) and any("nonzero" in op for op in mode.seen[0])
