"""The separation loop: windows → batched model forwards → overlap-add → finished blocks, streamed.

One loop (:func:`separate_stream`) over a model *callable* ``model(mix (B, C, T)) -> (B, S, C, T)``. All
offsets, pads and weights come from :mod:`stemsplit.inference.planner`; this module only keeps the state:

* an input buffer holding the normalised track from the earliest sample a pending window may still read
  (at most half a window of left context before it) to the newest block,
* one *lane* per (bag member, shift): its own overlap-add accumulator and summed weights, in track
  coordinates (a lane delayed by ``d`` drops its first ``d`` output samples, as the reference does),
* a frontier: the first sample that some lane's next window may still change. Everything before it is
  combined (shift average, bag weights, de-normalisation) and handed to the sink, in order.

Peak memory therefore depends on the window, the batch size and the block size, never on the track length.
The float arithmetic per output sample is the reference's (``out += w * chunk`` in window order, ``/ Σw``,
then shifts, then bag weights), so float32 results equal ``demucs.apply.apply_model`` to rounding of the
model itself, and do not depend on the batch size or the block size beyond the model's own rounding.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch

from stemsplit.errors import CompileFallbackWarning, DeviceFallbackWarning, InvalidOptionError
from stemsplit.inference.devices import (
    Precision,
    auto_batch_size,
    autocast,
    for_device,
    note_compile_failure,
    resolve_device,
    resolve_dtype,
    set_compile_cache_dir,
    should_compile,
    thread_count,
)
from stemsplit.inference.planner import (
    WindowPlan,
    draw_shift_delays,
    plan_window,
    stride_samples,
    triangle_weights,
    window_count,
)
from stemsplit.inference.stats import TrackStats, track_stats

__all__ = [
    "BatchRunner",
    "EngineOptions",
    "ModelBag",
    "ModelFn",
    "ProgressCallback",
    "SeparationReport",
    "separate_stream",
    "separate_tensor",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]
"""A separation network: ``(B, C, T) float -> (B, S, C, T)``, T <= the model's training length."""

Block = torch.Tensor | np.ndarray

_OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class ProgressCallback(Protocol):
    """Told after every batch of windows.

    Args:
        done: windows run so far (all lanes).
        total: windows expected in all, when the track length is known (``TrackStats.frames``), else None.
    """

    def __call__(self, done: int, total: int | None) -> None: ...


@dataclass(frozen=True)
class ModelBag:
    """One model or a weighted bag of models sharing sources, rate, channels and window length.

    Attributes:
        models: the networks (callables; an :class:`torch.nn.Module` is moved to the device and set to eval).
        sources: stem names, in the order the models output them.
        samplerate: the models' rate in Hz (sets the maximum shift, half a second).
        audio_channels: channels the models expect.
        segment_samples: training window length in samples (343,980 for HT models).
        weights: per model, one weight per source (None: all 1). Stem ``k`` is
            ``Σ_m weights[m][k] · out_m[k] / Σ_m weights[m][k]``.
    """

    models: tuple[ModelFn, ...]
    sources: tuple[str, ...]
    samplerate: int
    audio_channels: int
    segment_samples: int
    weights: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a bag needs at least one model")
        if not self.sources:
            raise ValueError("a model needs at least one source")
        if self.segment_samples < 1 or self.samplerate < 1 or self.audio_channels < 1:
            raise ValueError("segment_samples, samplerate and audio_channels must be positive")
        if self.weights is not None:
            if len(self.weights) != len(self.models) or any(
                len(row) != len(self.sources) for row in self.weights
            ):
                raise ValueError(
                    f"weights must be {len(self.models)} rows of {len(self.sources)} floats, got {self.weights}"
                )

    @classmethod
    def single(cls, model: ModelFn) -> ModelBag:
        """Wrap one model that exposes ``sources``, ``samplerate``, ``audio_channels`` and ``segment_samples``."""
        return cls(
            models=(model,),
            sources=tuple(model.sources),  # type: ignore[attr-defined]
            samplerate=int(model.samplerate),  # type: ignore[attr-defined]
            audio_channels=int(model.audio_channels),  # type: ignore[attr-defined]
            segment_samples=int(model.segment_samples),  # type: ignore[attr-defined]
        )

    def weight_rows(self) -> tuple[tuple[float, ...], ...]:
        """The weight matrix, ``(models, sources)``, with None expanded to ones."""
        if self.weights is None:
            return tuple((1.0,) * len(self.sources) for _ in self.models)
        return self.weights


@dataclass(frozen=True)
class EngineOptions:
    """How to run the engine (all defaults are the reference's, ``--precision`` aside).

    Attributes:
        segment_samples: window length; None = the model's (must not exceed it: HT models are trained on
            a fixed length and pad shorter inputs themselves).
        overlap: fraction of a window shared with the next, ``[0, 1)``.
        shifts: random-delay passes to average (0 = one pass, no delay).
        seed: seeds the shift delays (``random.Random(seed)``); the same seed gives identical output.
        stems: the stems to return, in this order; None = all. Bag members that do not contribute to
            any of them are not run.
        batch_size: windows per forward; None = automatic (:func:`devices.auto_batch_size`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`.
        precision: ``auto``, ``float32`` (exact), ``bfloat16`` or ``float16`` (autocast).
        threads: CPU threads for the forward (restored afterwards); None = torch's default, one per
            physical core (every core; SMT siblings only slow the convolutions down).
        compile: ``torch.compile`` the model: True, False, or None = automatic (CUDA and long inputs).
        compile_cache_dir: where Inductor caches compiled kernels (None: Inductor's default).
        block_samples: block size used by :func:`separate_tensor` to feed the stream.
    """

    segment_samples: int | None = None
    overlap: float = 0.25
    shifts: int = 0
    seed: int = 0
    stems: tuple[str, ...] | None = None
    batch_size: int | None = None
    device: str | torch.device = "auto"
    precision: Precision = "auto"
    threads: int | None = None
    compile: bool | None = None
    compile_cache_dir: Path | None = None
    block_samples: int = 262144


@dataclass
class SeparationReport:
    """What the engine did (for logs, ``--report`` and tests).

    Attributes:
        sources: stems in the emitted blocks, in order.
        samples: samples per channel emitted.
        windows: model windows run (over all lanes).
        device: where the last batch ran (differs from the requested one after a CPU fallback).
        dtype: compute precision of the last batch.
        batch_size: windows per forward at the end (halved after out-of-memory errors).
        fell_back_to_cpu: whether an out-of-memory error moved the work to the CPU.
        compiled: whether ``torch.compile`` was used.
    """

    sources: tuple[str, ...]
    samples: int = 0
    windows: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    batch_size: int = 1
    fell_back_to_cpu: bool = False
    compiled: bool = False


class BatchRunner:
    """Runs batches of windows through the bag's models on one device, surviving out-of-memory errors.

    On ``torch.OutOfMemoryError`` the batch is split in halves (and the batch size for later batches
    halved); at batch size 1 on a non-CPU device the models move to ``fallback_device`` (the CPU) with a
    :class:`~stemsplit.errors.DeviceFallbackWarning`, and the batch is retried there. If ``torch.compile``
    fails (it compiles on the first batch), the models run uncompiled with a
    :class:`~stemsplit.errors.CompileFallbackWarning`. No window is lost.
    """

    def __init__(
        self,
        models: Sequence[ModelFn],
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        *,
        fallback_device: torch.device | None,
        fallback_dtype: torch.dtype = torch.float32,
        compile_models: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InvalidOptionError(f"batch size must be >= 1, got {batch_size}", option="--batch-size")
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.fallback_device = fallback_device
        self.fallback_dtype = fallback_dtype
        self.fell_back = False
        self.compiled = compile_models
        self._models = list(models)
        self._compiled: list[ModelFn] = []
        self._place_models()

    def _place_models(self) -> None:
        for model in self._models:
            if isinstance(model, torch.nn.Module):
                model.to(self.device).eval()
        models = self._eager()
        self._compiled = [torch.compile(m, dynamic=False) for m in models] if self.compiled else models

    def _eager(self) -> list[ModelFn]:
        """The models as run on :attr:`device`, uncompiled (on MPS with the STFT on the CPU)."""
        return [cast(ModelFn, for_device(m, self.device)) for m in self._models]

    def run(self, member: int, windows: torch.Tensor) -> torch.Tensor:
        """Separate a batch of windows with model ``member``.

        Args:
            member: index of the model in the bag.
            windows: (B, C, segment) float32, on any device.

        Returns:
            (B, S, C, segment) float32 on :attr:`device` (which may have changed to the CPU).
        """
        outputs: list[torch.Tensor] = []
        start = 0
        while start < windows.shape[0]:
            part = windows[start : start + self.batch_size]
            try:
                outputs.append(self._forward(member, part))
            except _OOM:
                if not self._shrink(part.shape[0]):
                    raise
                continue  # retry the same windows with the smaller batch, or on the fallback device
            except Exception as err:
                if not self.compiled:
                    raise
                self._uncompile(err)
                continue  # retry the same windows eagerly; an error of the model itself comes back there
            start += part.shape[0]
        device = self.device  # all parts end on the final device
        return torch.cat([o.to(device) for o in outputs]) if len(outputs) > 1 else outputs[0]

    def _forward(self, member: int, part: torch.Tensor) -> torch.Tensor:
        batch = part.to(self.device, non_blocking=True)
        if self.compiled and batch.shape[0] < self.batch_size:
            # Keep compiled shapes static: pad the last batch with silent windows, then drop them.
            filler = batch.new_zeros((self.batch_size - batch.shape[0], *batch.shape[1:]))
            batch = torch.cat([batch, filler])
        with torch.no_grad(), autocast(self.device, self.dtype):
            out = self._compiled[member](batch)
        return out[: part.shape[0]].float()

    def _uncompile(self, err: Exception) -> None:
        """Drop ``torch.compile`` after it failed (it compiles lazily, on the first batch) and go eager."""
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            f"torch.compile failed ({reason[:200]}); continuing without compiling (slower)",
            CompileFallbackWarning,
            stacklevel=4,
        )
        note_compile_failure(err)
        self.compiled = False
        self._compiled = self._eager()

    def _shrink(self, failed_batch: int) -> bool:
        """React to an out-of-memory error on a batch of ``failed_batch`` windows; False if nothing is left."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if failed_batch > 1:
            self.batch_size = max(1, failed_batch // 2)
            return True
        if self.fallback_device is None or self.fell_back:
            return False
        warnings.warn(
            f"out of memory on {self.device} even with one window per batch; "
            f"continuing on {self.fallback_device} (slower)",
            DeviceFallbackWarning,
            stacklevel=4,
        )
        self.device = self.fallback_device
        self.dtype = self.fallback_dtype
        self.fell_back = True
        self.compiled = False
        self._place_models()
        return True


class _InputBuffer:
    """The normalised track from ``start`` to ``end`` (track coordinates), CPU float32 (C, n)."""

    def __init__(self, channels: int) -> None:
        self.start = 0
        self.end = 0
        self._data = torch.zeros(channels, 0)
        self._pending: list[torch.Tensor] = []

    def append(self, block: torch.Tensor) -> None:
        self._pending.append(block)
        self.end += block.shape[-1]

    def read(self, start: int, length: int, track_end: int) -> torch.Tensor:
        """Samples ``[start, start + length)``; zeros before 0 and from ``track_end`` on. (C, length)."""
        self._flush()
        lo, hi = max(start, 0), min(start + length, track_end)
        assert lo >= self.start or lo >= hi, f"read from {lo} but the buffer starts at {self.start}"
        if lo >= hi:
            return self._data.new_zeros(self._data.shape[0], length)
        piece = self._data[:, lo - self.start : hi - self.start]
        if lo == start and hi == start + length:
            return piece
        return torch.nn.functional.pad(piece, (lo - start, start + length - hi))

    def discard_before(self, position: int) -> None:
        """Forget samples before ``position`` (they will never be read again)."""
        self._flush()
        drop = min(max(0, position - self.start), self._data.shape[-1])
        if drop:
            self._data = self._data[:, drop:].clone()
            self.start += drop

    def _flush(self) -> None:
        if self._pending:
            self._data = torch.cat([self._data, *self._pending], dim=-1)
            self._pending = []


class _Lane:
    """Overlap-add state of one (bag member, shift delay) pass, in track coordinates."""

    def __init__(self, slot: int, delay: int, start: int) -> None:
        self.slot = slot  # which running model (index into the runner's models)
        self.delay = delay
        self.next_offset = 0  # next window start, in the lane's (delayed) timeline
        self.done = False  # every window run (known only at the end of the track)
        self.acc_start = start  # track position of acc[..., 0]
        self.acc: torch.Tensor | None = None  # (S_sel, C, n) Σ w·out
        self.wsum: torch.Tensor | None = None  # (n,) Σ w

    def frontier(self, track_end: int | None) -> int:
        """Track position before which this lane's output is final."""
        if self.done:
            assert track_end is not None
            return track_end
        return self.next_offset - self.delay

    def add(self, position: int, weighted: torch.Tensor, weight: torch.Tensor) -> None:
        """Accumulate ``weighted`` (S_sel, C, n) and ``weight`` (n,) at track ``position``."""
        n = weighted.shape[-1]
        if self.acc is None or self.wsum is None:
            self.acc = weighted.new_zeros(*weighted.shape[:-1], 0)
            self.wsum = weight.new_zeros(0)
        grow = position + n - (self.acc_start + self.acc.shape[-1])
        if grow > 0:
            self.acc = torch.cat([self.acc, self.acc.new_zeros(*self.acc.shape[:-1], grow)], dim=-1)
            self.wsum = torch.cat([self.wsum, self.wsum.new_zeros(grow)])
        lo = position - self.acc_start
        assert lo >= 0, f"window at {position} is before the emitted frontier {self.acc_start}"
        self.acc[..., lo : lo + n] += weighted
        self.wsum[lo : lo + n] += weight

    def take(self, n: int) -> torch.Tensor:
        """Remove and return the first ``n`` finished samples, divided by their summed weights."""
        assert self.acc is not None and self.wsum is not None and self.acc.shape[-1] >= n
        wsum = self.wsum[:n]
        assert bool((wsum > 0).all()), "a finished sample has no window weight"
        out = self.acc[..., :n] / wsum
        self.acc, self.wsum = self.acc[..., n:], self.wsum[n:]
        self.acc_start += n
        return out

    def to(self, device: torch.device) -> None:
        if self.acc is not None and self.wsum is not None:
            self.acc, self.wsum = self.acc.to(device), self.wsum.to(device)


@dataclass(frozen=True)
class _Plan:
    """Everything fixed before the loop starts (derived from the bag and the options)."""

    segment: int
    stride: int
    source_index: tuple[int, ...]  # model output index of each returned stem
    members: tuple[int, ...]  # bag members that run
    weights: tuple[tuple[float, ...], ...]  # per member: the weight of each returned stem
    totals: tuple[float, ...]  # per returned stem: Σ of weights over the whole bag
    shift_delays: tuple[tuple[int, ...], ...]  # per running member
    shifts: int
    is_bag: bool


def _make_plan(bag: ModelBag, options: EngineOptions) -> _Plan:
    segment = bag.segment_samples if options.segment_samples is None else options.segment_samples
    if not 1 <= segment <= bag.segment_samples:
        raise InvalidOptionError(
            f"segment must be between 1 and the model's {bag.segment_samples} samples, got {segment}",
            option="--segment",
        )
    try:
        stride = stride_samples(segment, options.overlap)
    except ValueError as err:
        raise InvalidOptionError(str(err), option="--overlap") from err
    if options.shifts < 0:
        raise InvalidOptionError(f"shifts must be >= 0, got {options.shifts}", option="--shifts")
    stems = bag.sources if options.stems is None else options.stems
    unknown = [s for s in stems if s not in bag.sources]
    if unknown or not stems or len(set(stems)) != len(stems):
        raise InvalidOptionError(
            f"stems must be distinct names among {bag.sources}, got {stems}", option="--stems"
        )
    index = tuple(bag.sources.index(s) for s in stems)
    rows = bag.weight_rows()
    totals = tuple(sum(row[k] for row in rows) for k in index)
    if any(t == 0 for t in totals):
        raise InvalidOptionError(f"every stem needs a non-zero total bag weight, got {totals}")
    rng = random.Random(options.seed)
    max_shift = int(0.5 * bag.samplerate)
    # Draw for every member, in order, so a stem subset gets the same delays as a full run.
    delays = [draw_shift_delays(options.shifts, max_shift, rng) for _ in bag.models]
    members = tuple(m for m, row in enumerate(rows) if any(row[k] != 0 for k in index))
    return _Plan(
        segment=segment,
        stride=stride,
        source_index=index,
        members=members,
        weights=tuple(tuple(rows[m][k] for k in index) for m in members),
        totals=totals,
        shift_delays=tuple(delays[m] for m in members),
        shifts=options.shifts,
        is_bag=len(bag.models) > 1,
    )


def _as_tensor(block: Block, channels: int) -> torch.Tensor:
    t = (
        torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        if isinstance(block, np.ndarray)
        else block
    )
    if t.dim() != 2 or t.shape[0] != channels:
        raise ValueError(f"expected ({channels}, n) audio blocks, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32)


class _Engine:
    """State of one streamed separation (see the module docstring)."""

    def __init__(
        self,
        bag: ModelBag,
        plan: _Plan,
        runner: BatchRunner,
        stats: TrackStats | None,
        sink: Callable[[torch.Tensor], None],
        progress: ProgressCallback | None,
        report: SeparationReport,
    ) -> None:
        self.bag, self.plan, self.runner, self.stats = bag, plan, runner, stats
        self.sink, self.progress, self.report = sink, progress, report
        self.input = _InputBuffer(bag.audio_channels)
        self.lanes = [
            _Lane(slot, delay, 0) for slot, delays in enumerate(plan.shift_delays) for delay in delays
        ]
        self.weights = triangle_weights(plan.segment).to(runner.device)
        self.emitted = 0
        self.track_end: int | None = None
        self.total_windows: int | None = None
        if stats is not None:
            self.total_windows = sum(
                window_count(stats.frames + lane.delay, plan.stride) for lane in self.lanes
            )

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, block: torch.Tensor) -> None:
        if self.stats is not None:
            block = self.stats.normalise(block)
        self.input.append(block)
        self._pump()

    def finish(self) -> None:
        self.track_end = self.input.end
        self._pump()
        assert all(lane.done for lane in self.lanes)
        self._emit()

    # -- scheduling ------------------------------------------------------------------------------

    def _ready(self, lane: _Lane) -> list[WindowPlan]:
        """Windows of ``lane`` whose input is complete, from its next one on, in order."""
        plans: list[WindowPlan] = []
        offset, segment, end = lane.next_offset, self.plan.segment, self.track_end
        while True:
            if end is None:  # still streaming: only full windows can be planned
                if offset - lane.delay + segment > self.input.end:
                    return plans
                plans.append(WindowPlan(offset=offset, length=segment, read_start=offset))
            else:
                if offset >= end + lane.delay:
                    return plans
                plans.append(plan_window(offset, end + lane.delay, segment))
            offset += self.plan.stride

    def _pump(self) -> None:
        """Run every batch that is ready (full batches while streaming, all the rest at the end)."""
        while True:
            ran = False
            for slot in range(len(self.plan.members)):
                lanes = [lane for lane in self.lanes if lane.slot == slot]
                ready = sorted(
                    (
                        (p.offset - lane.delay, i, lane, p)
                        for i, lane in enumerate(lanes)
                        for p in self._ready(lane)
                    ),
                    key=lambda item: (item[0], item[1]),
                )
                if not ready or (self.track_end is None and len(ready) < self.runner.batch_size):
                    continue
                self._run_batch(slot, [(lane, p) for _, _, lane, p in ready[: self.runner.batch_size]])
                ran = True
            if self.track_end is not None:
                for lane in self.lanes:
                    lane.done = not self._ready(lane)
            self._emit()
            if not ran:
                return

    def _run_batch(self, slot: int, batch: list[tuple[_Lane, WindowPlan]]) -> None:
        end = self.input.end if self.track_end is None else self.track_end
        windows = torch.stack(
            [self.input.read(p.read_start - lane.delay, self.plan.segment, end) for lane, p in batch]
        )  # (B, C, segment)
        device_before = self.runner.device
        out = self.runner.run(slot, windows)  # (B, S, C, segment)
        if self.runner.device != device_before:
            self.weights = self.weights.to(self.runner.device)
            for lane in self.lanes:
                lane.to(self.runner.device)
        out = out[:, list(self.plan.source_index)]  # (B, S_sel, C, segment)
        for (lane, p), y in zip(batch, out, strict=True):
            assert lane.next_offset == p.offset, "windows of a lane must be accumulated in order"
            chunk = y[..., p.trim : p.trim + p.length]  # (S_sel, C, length)
            weight = self.weights[: p.length]
            position = p.offset - lane.delay
            if position < 0:  # the lane's leading delay: dropped, as the reference drops it
                chunk, weight, position = chunk[..., -position:], weight[-position:], 0
            if chunk.shape[-1]:
                lane.add(position, weight * chunk, weight)
            lane.next_offset = p.offset + self.plan.stride
        self.report.windows += len(batch)
        if self.progress is not None:
            self.progress(self.report.windows, self.total_windows)

    # -- output ----------------------------------------------------------------------------------

    def _emit(self) -> None:
        frontier = min(lane.frontier(self.track_end) for lane in self.lanes)
        n = frontier - self.emitted
        if n <= 0:
            return
        plan = self.plan
        estimate: torch.Tensor | None = None
        for slot in range(len(plan.members)):
            lanes = [lane for lane in self.lanes if lane.slot == slot]
            out = lanes[0].take(n)
            for lane in lanes[1:]:
                out = out + lane.take(n)
            if plan.shifts:
                out = out / plan.shifts
            if plan.is_bag:
                out = out * torch.tensor(plan.weights[slot], device=out.device)[:, None, None]
            estimate = out if estimate is None else estimate + out
        assert estimate is not None
        if plan.is_bag:
            estimate = estimate / torch.tensor(plan.totals, device=estimate.device)[:, None, None]
        estimate = estimate.cpu()
        if self.stats is not None:
            estimate = self.stats.denormalise(estimate)
        self.emitted = frontier
        self.report.samples = frontier
        self.sink(estimate)
        # Earliest sample a pending window may read: its start minus at most half a window of context.
        keep = min(lane.next_offset - lane.delay for lane in self.lanes) - plan.segment // 2
        self.input.discard_before(min(keep, self.emitted))


def separate_stream(
    bag: ModelBag,
    blocks: Iterable[Block],
    sink: Callable[[torch.Tensor], None],
    *,
    stats: TrackStats | None,
    options: EngineOptions | None = None,
    progress: ProgressCallback | None = None,
) -> SeparationReport:
    """Separate a track that arrives as blocks, handing finished stem blocks to ``sink`` in order.

    Args:
        bag: the model(s) and their metadata.
        blocks: the track at ``bag.samplerate``, as (C, n) float blocks (torch or numpy; any sizes,
            ``C == bag.audio_channels``). Read once.
        sink: called with each finished block, (S, C, n) float32 CPU tensors (S = the chosen stems),
            in track order; the blocks' lengths add up to the track's length.
        stats: track normalisation (from :func:`~stemsplit.inference.stats.stats_from_blocks` over a
            first pass, or :func:`~stemsplit.inference.stats.track_stats`); None feeds the model the raw
            signal (as ``apply_model`` alone does).
        options: see :class:`EngineOptions`.
        progress: told the number of windows run after each batch.

    Returns:
        A :class:`SeparationReport`.

    Raises:
        InvalidOptionError: for an invalid option or combination.
        ValueError: for blocks of the wrong shape.
        torch.OutOfMemoryError: only if even one window on the CPU does not fit.
    """
    options = options or EngineOptions()
    plan = _make_plan(bag, options)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.precision, device)
    batch_size = options.batch_size or auto_batch_size(device, dtype, plan.segment)
    seconds = None if stats is None else stats.frames / bag.samplerate * max(1, plan.shifts)
    compile_models = should_compile(options.compile, device, seconds)
    if compile_models:
        set_compile_cache_dir(options.compile_cache_dir)
    cpu = torch.device("cpu")
    runner = BatchRunner(
        [bag.models[m] for m in plan.members],
        device,
        dtype,
        batch_size,
        fallback_device=None if device.type == "cpu" else cpu,
        fallback_dtype=resolve_dtype("float32" if options.precision == "float32" else "auto", cpu),
        compile_models=compile_models,
    )
    report = SeparationReport(sources=tuple(bag.sources[k] for k in plan.source_index))
    engine = _Engine(bag, plan, runner, stats, sink, progress, report)
    previous_threads = torch.get_num_threads()
    if options.threads is not None:  # else torch's default: one thread per physical core
        torch.set_num_threads(thread_count(options.threads))
    try:
        for block in blocks:
            engine.feed(_as_tensor(block, bag.audio_channels))
        engine.finish()
    finally:
        torch.set_num_threads(previous_threads)
    report.device, report.dtype, report.batch_size = runner.device, runner.dtype, runner.batch_size
    report.fell_back_to_cpu, report.compiled = runner.fell_back, runner.compiled
    return report


def separate_tensor(
    bag: ModelBag,
    wav: torch.Tensor,
    *,
    options: EngineOptions | None = None,
    normalise: bool = True,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Separate a whole track held in memory (the convenience form of :func:`separate_stream`).

    Args:
        bag: the model(s) and their metadata.
        wav: (C, T) audio at ``bag.samplerate``.
        options: see :class:`EngineOptions`.
        normalise: apply the reference's track normalisation (:func:`track_stats`) around the models.
        progress: told the number of windows run after each batch.

    Returns:
        (S, C, T) float32 on the CPU, stems in ``options.stems`` order (default: ``bag.sources``).
    """
    options = options or EngineOptions()
    if wav.dim() != 2:
        raise ValueError(f"expected a (channels, samples) tensor, got shape {tuple(wav.shape)}")
    wav = wav.detach().to("cpu", torch.float32)
    stats = track_stats(wav) if normalise else None
    step = max(1, options.block_samples)
    pieces: list[torch.Tensor] = []
    report = separate_stream(
        bag,
        (wav[:, i : i + step] for i in range(0, wav.shape[-1], step)),
        pieces.append,
        stats=stats,
        options=options,
        progress=progress,
    )
    if not pieces:
        return wav.new_zeros(len(report.sources), wav.shape[0], wav.shape[-1])
    return torch.cat(pieces, dim=-1)
