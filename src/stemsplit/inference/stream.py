"""One track's windows and overlap-add state, on the device, independent of what shares its batches.

A :class:`TrackStream` holds a track (raw audio, appended in blocks or all at once), hands out its
windows in order (:meth:`TrackStream.take`), cuts them on the device from one upload of the span they
cover (:meth:`TrackStream.cut`), accumulates the model's output for them (:meth:`TrackStream.accumulate`)
and hands finished blocks to its sink in track order (:meth:`TrackStream.emit`). It never calls a model:
the :mod:`~stemsplit.inference.scheduler` does, for several streams at once.

State, as in the reference's ``apply_model`` (spec §4.1):

* one *lane* per (bag member, shift delay): its own accumulator and summed weights in track coordinates
  (a lane delayed by ``d`` drops its first ``d`` output samples, as the reference does);
* a frontier: the first sample that a window not yet accumulated may still change. Everything before it is
  combined (shift average, bag weights, de-normalisation) on the device and handed on, in order.

Arithmetic per output sample is the reference's: ``out += w * chunk`` per window, ``/ Σw``, then shifts, then
bag weights; normalisation ``(x - mean) / std`` before the windows are cut (zero padding is zero in the
normalised signal) and ``y * std + mean`` after. Regular windows of a lane are accumulated in two strided
operations per batch (even and odd windows, which do not overlap) when every output sample sums at most two
windows (overlap ≤ 0.5, the default 0.25 included): IEEE addition commutes, so the result is the same as one
window at a time. With more overlap, windows are accumulated one by one in order.

Peak memory depends on the window, the batch size and the block size, never on the track length (the
input is read through :class:`TrackAudio`, which may hold the whole track or only what is still needed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch

from stemsplit.errors import InvalidOptionError
from stemsplit.inference.planner import (
    WindowPlan,
    draw_shift_delays,
    plan_window,
    stride_samples,
    triangle_weights,
    window_count,
)
from stemsplit.inference.stats import TrackStats
from stemsplit.inference.transfer import HostBlock, transfers_for

__all__ = ["BagPlan", "HostBlock", "InputBuffer", "TrackAudio", "TrackStream", "Window", "make_plan"]


@dataclass(frozen=True)
class BagPlan:
    """What to run and how to combine it, fixed before any window (from the bag and the options).

    Attributes:
        segment: window length in samples; stride: hop between window starts.
        fixed_window: the models always see ``segment`` samples (else a short window runs at its own length).
        source_index: model output index of each returned stem.
        members: bag members that run (those contributing to a returned stem), in bag order.
        weights: per running member, the weight of each returned stem.
        totals: per returned stem, the sum of its weights over the whole bag.
        shift_delays: per running member, the delay (samples) of each shifted pass.
        shifts: number of shifted passes (0: one pass, no delay); is_bag: more than one model.
    """

    segment: int
    stride: int
    fixed_window: bool
    source_index: tuple[int, ...]
    members: tuple[int, ...]
    weights: tuple[tuple[float, ...], ...]
    totals: tuple[float, ...]
    shift_delays: tuple[tuple[int, ...], ...]
    shifts: int
    is_bag: bool


def make_plan(
    sources: Sequence[str],
    weight_rows: Sequence[Sequence[float]],
    samplerate: int,
    max_segment: int,
    *,
    segment: int | None,
    overlap: float,
    shifts: int,
    seed: int,
    stems: Sequence[str] | None,
    fixed_window: bool = True,
) -> BagPlan:
    """Check the options against the bag and plan the run (``fixed_window``: see :class:`BagPlan`).

    Raises:
        InvalidOptionError: a segment outside ``[1, max_segment]``, an overlap that leaves no stride,
            negative shifts, stems the bag does not have, or a stem no member contributes to.
    """
    segment = max_segment if segment is None else segment
    if not 1 <= segment <= max_segment:
        raise InvalidOptionError(
            f"segment must be between 1 and the model's {max_segment} samples, got {segment}",
            option="--segment",
        )
    try:
        stride = stride_samples(segment, overlap)
    except ValueError as err:
        raise InvalidOptionError(str(err), option="--overlap") from err
    if shifts < 0:
        raise InvalidOptionError(f"shifts must be >= 0, got {shifts}", option="--shifts")
    chosen = tuple(sources) if stems is None else tuple(stems)
    if any(s not in sources for s in chosen) or not chosen or len(set(chosen)) != len(chosen):
        raise InvalidOptionError(
            f"stems must be distinct names among {tuple(sources)}, got {chosen}", option="--stems"
        )
    index = tuple(list(sources).index(s) for s in chosen)
    totals = tuple(sum(row[k] for row in weight_rows) for k in index)
    if any(t == 0 for t in totals):
        raise InvalidOptionError(f"every stem needs a non-zero total bag weight, got {totals}")
    rng = random.Random(seed)
    max_shift = int(0.5 * samplerate)
    # Draw for every member, in order, so a stem subset gets the same delays as a full run.
    delays = [draw_shift_delays(shifts, max_shift, rng) for _ in weight_rows]
    members = tuple(m for m, row in enumerate(weight_rows) if any(row[k] != 0 for k in index))
    return BagPlan(
        segment=segment,
        stride=stride,
        fixed_window=fixed_window,
        source_index=index,
        members=members,
        weights=tuple(tuple(weight_rows[m][k] for k in index) for m in members),
        totals=totals,
        shift_delays=tuple(delays[m] for m in members),
        shifts=shifts,
        is_bag=len(weight_rows) > 1,
    )


# --- input ---------------------------------------------------------------------------------------------


class TrackAudio(Protocol):
    """A track's raw audio as the engine reads it (the pipeline's decoded track, or a stream of blocks).

    ``start`` and ``end`` bound what can be read now (``start`` grows as old samples are discarded, ``end`` as
    blocks arrive); ``frames`` is the track's length once known (None while blocks still arrive).
    """

    channels: int

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def frames(self) -> int | None: ...

    def read(self, lo: int, hi: int) -> torch.Tensor | np.ndarray:
        """Samples ``[lo, hi)`` (``start <= lo <= hi <= end``), (C, hi - lo) float32 on the CPU."""
        ...

    def discard_before(self, position: int) -> None:
        """Samples before ``position`` will not be read again (a buffer may free them)."""
        ...


class InputBuffer:
    """A track that arrives in blocks: keeps only from the earliest sample still needed to the newest.

    ``frames`` becomes known when :meth:`close` is called.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._start = 0
        self._end = 0
        self._frames: int | None = None
        self._data = torch.zeros(channels, 0)
        self._pending: list[torch.Tensor] = []

    @property
    def start(self) -> int:
        return self._start

    @property
    def end(self) -> int:
        return self._end

    @property
    def frames(self) -> int | None:
        return self._frames

    def append(self, block: torch.Tensor) -> None:
        """Add a (C, n) float32 CPU block at the end."""
        self._pending.append(block)
        self._end += block.shape[-1]

    def close(self) -> None:
        """No more blocks: the track is ``end`` samples long."""
        self._frames = self._end

    def read(self, lo: int, hi: int) -> torch.Tensor:
        self._flush()
        assert self._start <= lo <= hi <= self._end, f"read [{lo}, {hi}) outside [{self._start}, {self._end})"
        return self._data[:, lo - self._start : hi - self._start]

    def discard_before(self, position: int) -> None:
        self._flush()
        drop = min(max(0, position - self._start), self._data.shape[-1])
        if drop:
            self._data = self._data[:, drop:].clone()
            self._start += drop

    def _flush(self) -> None:
        if self._pending:
            self._data = torch.cat([self._data, *self._pending], dim=-1)
            self._pending = []


# --- lanes and windows --------------------------------------------------------------------------------------


class _Lane:
    """Overlap-add state of one (bag member, shift delay) pass, in track coordinates, on the device."""

    def __init__(self, member: int, slot: int, delay: int) -> None:
        self.member = member  # index of the network in the bag
        self.slot = slot  # index among the running members (for the plan's weights)
        self.delay = delay
        self.next_offset = 0  # next window to hand out, in the lane's (delayed) timeline
        self.done_offset = 0  # next window to accumulate
        self.acc_start = 0  # track position of acc[..., 0]
        self.used = 0  # samples of acc in use
        self.acc: torch.Tensor | None = None  # (S_sel, C, capacity) Σ w·out
        self.wsum: torch.Tensor | None = None  # (capacity,) Σ w

    def frontier(self, track_end: int | None) -> int:
        """Track position before which this lane's output is final."""
        if track_end is not None and self.done_offset >= track_end + self.delay:
            return track_end
        return self.done_offset - self.delay

    def reserve(self, end: int, shape: tuple[int, int], device: torch.device) -> None:
        """Make the accumulator reach track position ``end`` (growing by doubling, so rarely)."""
        need = end - self.acc_start
        if self.acc is not None and self.wsum is not None and need <= self.acc.shape[-1]:
            self.used = max(self.used, need)
            return
        capacity = max(need, 2 * (self.acc.shape[-1] if self.acc is not None else 0))
        acc = torch.zeros(*shape, capacity, device=device)
        wsum = torch.zeros(capacity, device=device)
        if self.acc is not None and self.wsum is not None:
            acc[..., : self.used] = self.acc[..., : self.used]
            wsum[: self.used] = self.wsum[: self.used]
        self.acc, self.wsum = acc, wsum
        self.used = max(self.used, need)

    def take(self, n: int) -> torch.Tensor:
        """Remove the first ``n`` finished samples, divided by their summed weights; (S_sel, C, n)."""
        assert self.acc is not None and self.wsum is not None and self.used >= n
        out = self.acc[..., :n] / self.wsum[:n]
        rest = self.used - n
        if rest:  # shift the rest to the front (one copy), then clear the freed tail
            self.acc[..., :rest] = self.acc[..., n : self.used].clone()
            self.wsum[:rest] = self.wsum[n : self.used].clone()
        self.acc[..., rest : self.used].zero_()  # not ``= 0``: a Python number is a host tensor on the way
        self.wsum[rest : self.used].zero_()
        self.used = rest
        self.acc_start += n
        return out

    def to(self, device: torch.device) -> None:
        if self.acc is not None and self.wsum is not None:
            self.acc, self.wsum = self.acc.to(device), self.wsum.to(device)


@dataclass(frozen=True)
class Window:
    """One window of one lane of one stream, as handed to the scheduler."""

    stream: TrackStream
    lane: _Lane
    plan: WindowPlan

    @property
    def member(self) -> int:
        """The bag member that runs it."""
        return self.lane.member


# --- the stream ------------------------------------------------------------------------------------------


class TrackStream:
    """One track's windows, accumulators and emission (see the module docstring).

    Args:
        plan: from :func:`make_plan`.
        audio: the track's raw audio (:class:`InputBuffer` for blocks, or a decoded track).
        stats: normalisation statistics (None: the model sees the raw signal, as ``apply_model`` alone).
        sink: called with each finished block, in track order; the blocks' lengths add up to the track's.
        device: where windows are cut and accumulated (the runner's device).
    """

    def __init__(
        self,
        plan: BagPlan,
        audio: TrackAudio,
        stats: TrackStats | None,
        sink: Callable[[HostBlock], None],
        device: torch.device,
    ) -> None:
        self.plan, self.audio, self.stats, self.sink = plan, audio, stats, sink
        self.device = device
        self.lanes = [
            _Lane(member, slot, delay)
            for slot, (member, delays) in enumerate(zip(plan.members, plan.shift_delays, strict=True))
            for delay in delays
        ]
        self.emitted = 0
        self.windows_done = 0
        self._phased = 2 * plan.stride >= plan.segment  # every sample sums at most two windows
        self._place(device)

    def _place(self, device: torch.device) -> None:
        self.device = device
        self._const = _constants(self.plan, device)
        if self.stats is not None:
            transfers = transfers_for(device)
            self._mean, self._std = transfers.upload(self.stats.mean), transfers.upload(self.stats.std)
        for lane in self.lanes:
            lane.to(device)

    def windows_for(self, frames: int) -> int:
        """Windows over all lanes for a track of ``frames`` samples (a progress total)."""
        return sum(window_count(frames + lane.delay, self.plan.stride) for lane in self.lanes)

    @property
    def done(self) -> bool:
        """Every sample has been handed to the sink."""
        return self.audio.frames is not None and self.emitted >= self.audio.frames

    # -- handing out windows -----------------------------------------------------------------------------

    def take(self, member: int, limit: int, *, only_full: bool, size: int | None = None) -> list[Window]:
        """Hand out up to ``limit`` ready windows of bag member ``member``, earliest track position first.

        A window is ready when its input has arrived. While the track still streams in, only full windows
        can be planned; ``only_full`` returns nothing unless ``limit`` of them are ready (full batches while
        streaming). The windows handed out together all have one input length (one batch): ``size``, or
        that of the earliest ready window (they differ only for a short last window of a model that takes
        any length).
        """
        end = self.audio.frames
        candidates: list[tuple[int, int, _Lane, WindowPlan]] = []
        for i, lane in enumerate(self.lanes):
            if lane.member != member:
                continue
            offset = lane.next_offset
            for _ in range(limit):
                if end is None:
                    if offset - lane.delay + self.plan.segment > self.audio.end:
                        break
                    seg = self.plan.segment
                    plan = WindowPlan(offset=offset, length=seg, read_start=offset, size=seg)
                else:
                    if offset >= end + lane.delay:
                        break
                    plan = plan_window(
                        offset, end + lane.delay, self.plan.segment, fixed=self.plan.fixed_window
                    )
                candidates.append((offset - lane.delay, i, lane, plan))
                offset += self.plan.stride
        candidates.sort(key=lambda c: (c[0], c[1]))
        if candidates:  # a lane's short window is its last, so this keeps each lane's windows in order
            size = candidates[0][3].size if size is None else size
            candidates = [c for c in candidates if c[3].size == size]
        chosen = candidates[:limit]
        if only_full and end is None and len(chosen) < limit:
            return []
        for _, _, lane, plan in chosen:
            assert lane.next_offset == plan.offset, "windows of a lane must be handed out in order"
            lane.next_offset = plan.offset + self.plan.stride
        return [Window(self, lane, plan) for _, _, lane, plan in chosen]

    def put_back(self, windows: Sequence[Window]) -> None:
        """Return windows handed out but not run (their batch failed), so they are handed out again."""
        for w in windows:
            w.lane.next_offset = min(w.lane.next_offset, w.plan.offset)

    def has_work(self, member: int) -> bool:
        """Whether ``member`` still has windows to hand out (now or once more input arrives)."""
        end = self.audio.frames
        return any(
            lane.member == member and (end is None or lane.next_offset < end + lane.delay)
            for lane in self.lanes
        )

    # -- cutting windows on the device ------------------------------------------------------------------------

    def cut(self, windows: Sequence[Window]) -> torch.Tensor:
        """The model inputs of ``windows`` (of this stream, of one input length), (n, C, size) on the device.

        The span they cover is read once, uploaded once (:mod:`~stemsplit.inference.transfer`, without a host
        wait), normalised there and zero-padded past the track's ends; the windows are views of it, gathered
        in one operation.
        """
        seg = windows[0].plan.size
        starts = [w.plan.read_start - w.lane.delay for w in windows]  # track coordinates
        lo, hi = min(starts), max(starts) + seg
        end = self.audio.frames if self.audio.frames is not None else self.audio.end
        valid_lo, valid_hi = max(lo, 0), min(hi, end)
        span = torch.zeros(self.audio.channels, hi - lo, device=self.device)
        if valid_lo < valid_hi:
            raw = transfers_for(self.device).upload(torch.as_tensor(self.audio.read(valid_lo, valid_hi)))
            span[:, valid_lo - lo : valid_hi - lo] = (
                raw if self.stats is None else (raw - self._mean) / self._std
            )
        # Views of the span stacked in one copy: no index tensor to build from host data.
        return torch.stack([span[:, s - lo : s - lo + seg] for s in starts])  # (n, C, size)

    # -- accumulating ---------------------------------------------------------------------------------------

    def accumulate(self, windows: Sequence[Window], out: torch.Tensor) -> None:
        """Add the model's output for ``windows`` (in the order handed out) to their lanes.

        Args:
            windows: this stream's windows of one batch, in the order :meth:`take` handed them out.
            out: (n, S, C, size) float32 on the device, the model's outputs for them.
        """
        out = self._const.select(out)  # (n, S_sel, C, segment)
        by_lane: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_lane.setdefault(id(w.lane), []).append(i)
        for rows in by_lane.values():
            lane = windows[rows[0]].lane
            contiguous = rows == list(range(rows[0], rows[-1] + 1))
            lane_out = out[rows[0] : rows[-1] + 1] if contiguous else torch.stack([out[i] for i in rows])
            self._accumulate_lane(lane, [windows[i].plan for i in rows], lane_out)
        self.windows_done += len(windows)

    def _accumulate_lane(self, lane: _Lane, plans: list[WindowPlan], out: torch.Tensor) -> None:
        """Add one lane's windows: every temporary is computed first, then the in-place adds (which allocate
        nothing), so an out-of-memory error leaves the lane as it was and the step can be retried."""
        assert plans[0].offset == lane.done_offset, "windows of a lane must be accumulated in order"
        last = plans[-1]
        lane.reserve(
            max(last.offset + last.length - lane.delay, 0),
            (int(out.shape[1]), int(out.shape[2])),
            self.device,
        )
        seg = self.plan.segment
        regular = [
            i for i, p in enumerate(plans) if p.length == seg and p.trim == 0 and p.offset >= lane.delay
        ]
        phased = self._phased and len(regular) > 1 and regular == list(range(regular[0], regular[-1] + 1))
        adds = self._regular_adds(lane, plans, out, regular) if phased else []
        single = [i for i in range(len(plans)) if not phased or i not in regular]
        adds += [add for i in single for add in self._one_add(lane, plans[i], out[i])]
        for target, value in adds:
            target += value
        lane.done_offset = last.offset + self.plan.stride

    def _regular_adds(
        self, lane: _Lane, plans: list[WindowPlan], out: torch.Tensor, rows: list[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Full windows at consecutive offsets: the even ones, then the odd ones, each in one strided add."""
        assert lane.acc is not None and lane.wsum is not None
        seg, stride = self.plan.segment, self.plan.stride
        base = plans[rows[0]].offset - lane.delay - lane.acc_start
        acc, wsum = lane.acc, lane.wsum
        adds = []
        for phase in (0, 1):
            picked = rows[phase::2]
            if not picked:
                continue
            start = base + (picked[0] - rows[0]) * stride
            k = len(picked)
            view = acc.as_strided(
                (acc.shape[0], acc.shape[1], k, seg),
                (acc.stride(0), acc.stride(1), 2 * stride, 1),
                acc.storage_offset() + start,
            )  # (S_sel, C, k, seg), no two windows overlapping
            chunks = out[picked[0] : picked[-1] + 1 : 2]  # (k, S_sel, C, seg)
            adds.append((view, (self._const.weights * chunks).permute(1, 2, 0, 3)))
            wview = wsum.as_strided((k, seg), (2 * stride, 1), wsum.storage_offset() + start)
            adds.append((wview, self._const.weights.expand(k, seg)))
        return adds

    def _one_add(
        self, lane: _Lane, p: WindowPlan, y: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert lane.acc is not None and lane.wsum is not None
        chunk = y[..., p.trim : p.trim + p.length]  # (S_sel, C, length)
        weight = self._const.weights[: p.length]
        position = p.offset - lane.delay
        if position < 0:  # the lane's leading delay: dropped, as the reference drops it
            chunk, weight, position = chunk[..., -position:], weight[-position:], 0
        n = chunk.shape[-1]
        if not n:
            return []
        lo = position - lane.acc_start
        assert lo >= 0, f"window at {position} is before the emitted frontier {lane.acc_start}"
        return [(lane.acc[..., lo : lo + n], weight * chunk), (lane.wsum[lo : lo + n], weight)]

    # -- emitting -------------------------------------------------------------------------------------------

    def emit(self) -> None:
        """Hand every finished sample to the sink (combined, de-normalised, copied to the host)."""
        end = self.audio.frames
        frontier = min(lane.frontier(end) for lane in self.lanes)
        n = frontier - self.emitted
        if n > 0:
            estimate = self._combine(n)
            self.emitted = frontier
            self.sink(transfers_for(self.device).download(estimate))
        # Earliest sample a window still to hand out may read: its start minus at most half a window.
        keep = min(lane.next_offset - lane.delay for lane in self.lanes) - self.plan.segment // 2
        self.audio.discard_before(min(keep, self.emitted))

    def _combine(self, n: int) -> torch.Tensor:
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
                out = out * self._const.member_weights[slot]
            estimate = out if estimate is None else estimate + out
        assert estimate is not None
        if plan.is_bag:
            estimate = estimate / self._const.totals
        if self.stats is not None:
            estimate = estimate * self._std + self._mean
        return estimate

    def move(self, device: torch.device) -> None:
        """Continue on ``device`` (after the runner fell back to the CPU)."""
        self._place(device)


@dataclass(frozen=True)
class _Constants:
    """A plan's constant tensors on one device, made once per process (a new track builds none)."""

    weights: torch.Tensor  # (segment,) the cross-fade
    member_weights: tuple[torch.Tensor, ...]  # per running member, (S_sel, 1, 1)
    totals: torch.Tensor  # (S_sel, 1, 1)
    first: int  # the model output of the first returned stem
    count: int  # returned stems
    index: torch.Tensor | None  # their model outputs when not consecutive (else None: a slice)

    def select(self, out: torch.Tensor) -> torch.Tensor:
        """The returned stems of ``out`` (n, S, C, T): a view (all of it when every stem is kept, in order)
        or one gather by a device index; never an index made from host data."""
        if self.index is None:
            return out.narrow(1, self.first, self.count)
        return out.index_select(1, self.index)


@lru_cache(maxsize=16)
def _constants(plan: BagPlan, device: torch.device) -> _Constants:
    index = plan.source_index
    consecutive = index == tuple(range(index[0], index[0] + len(index)))
    return _Constants(
        weights=triangle_weights(plan.segment).to(device),
        member_weights=tuple(torch.tensor(w, device=device)[:, None, None] for w in plan.weights),
        totals=torch.tensor(plan.totals, device=device)[:, None, None],
        first=index[0],
        count=len(index),
        index=None if consecutive else torch.tensor(index, device=device),
    )
