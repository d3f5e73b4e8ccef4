"""Render a balance of a track's stems: gains, mute and solo, tempo and key, a range; streamed.

The mix is ``Σ gain × stem`` over the audible stems: every stem but the muted ones, or with a solo only
the soloed ones (a muted stem stays silent even when soloed). With tempo 1 and key 0 that sum is all
there is, in float32, stem by stem in set order. Otherwise the audible pitched stems are summed, then
time-stretched and pitch-shifted together by Signalsmith Stretch (``python-stretch``); the unpitched ones
(drums) likewise but only time-stretched, never pitch-shifted. Tempo ``t`` makes the mix last ``1/t`` as
long with the pitch kept; key ``n`` moves the pitch by ``2^(n/12)`` with the duration kept.

Memory is bounded: stems are read in blocks, and the stretch works on segments of
:data:`SEGMENT_S` seconds (each read with :data:`MARGIN_S` of context on both sides, the joins
cross-faded over :data:`CROSSFADE_S`), so a 60-minute set costs what a minute does.

``stemsplit mix`` and the player's Download mix both render through :func:`render_mix` and
:func:`write_mix`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import python_stretch.Signalsmith as signalsmith

from stemsplit.audio._common import DEFAULT_BLOCK_FRAMES, MODEL_CHANNELS, FloatArray
from stemsplit.audio.stemset import StemSet
from stemsplit.audio.writer import TrackWriter, TrackWriteReport, WriteOptions
from stemsplit.errors import InvalidOptionError

TEMPO_RANGE = (0.5, 1.5)
"""Accepted tempo factors (1 = as recorded)."""

KEY_RANGE = (-12, 12)
"""Accepted key changes (semitones)."""

MAX_GAIN = 16.0
"""The largest linear gain accepted (≈ +24 dB)."""

SEGMENT_S = 60.0
"""Input seconds stretched per call."""

MARGIN_S = 1.0
"""Context read on each side of a segment, so its edges are stretched as in the middle (s)."""

CROSSFADE_S = 0.05
"""Length of the linear cross-fade between two stretched segments (s, output time)."""

JOIN_SEARCH_S = 0.005
"""How far a stretched segment may move to match the one before it at a join (s, output time)."""

_GAIN = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(dB)?\s*$", re.IGNORECASE)


def parse_gain(text: str) -> tuple[str, float]:
    """Parse ``STEM=VALUE``: a linear factor (``0.5``) or decibels (``-6dB``).

    Returns:
        The stem name and the linear gain.

    Raises:
        InvalidOptionError: not ``STEM=VALUE``, an unreadable or negative value, or above :data:`MAX_GAIN`.
    """
    stem, sep, value = text.partition("=")
    match = _GAIN.match(value)
    if not sep or not stem.strip() or match is None:
        raise InvalidOptionError.bad_value("--gain", text, "STEM=VALUE, such as vocals=0.5 or bass=-6dB")
    number = float(match.group(1))
    gain = 10.0 ** (number / 20.0) if match.group(2) else number
    if not 0.0 <= gain <= MAX_GAIN:
        raise InvalidOptionError.bad_value(
            "--gain", text, f"a linear gain from 0 to {MAX_GAIN:g} (or up to +24dB)"
        )
    return stem.strip(), gain


@dataclass(frozen=True, slots=True)
class MixSettings:
    """A balance of stems and how to play it.

    Attributes:
        gains: linear gain by stem name (missing stems: 1).
        mute: stems left out.
        solo: if not empty, only these stems are heard (muted ones still not).
        tempo: speed factor in :data:`TEMPO_RANGE`, pitch kept.
        key: semitones in :data:`KEY_RANGE`, tempo kept; unpitched stems (drums) are not shifted.
        start_s: where the mix starts in the track (seconds of the original).
        end_s: where it ends (seconds of the original); ``None``: the track's end.
    """

    gains: Mapping[str, float] = field(default_factory=dict)
    mute: frozenset[str] = frozenset()
    solo: frozenset[str] = frozenset()
    tempo: float = 1.0
    key: float = 0.0
    start_s: float = 0.0
    end_s: float | None = None

    def check(self, stems: StemSet) -> None:
        """Refuse what ``stems`` cannot render, naming the option.

        Raises:
            InvalidOptionError: an unknown stem, a value out of range, or an empty or inverted range.
        """
        known = ", ".join(stems.names)
        for option, names in (("--gain", self.gains.keys()), ("--mute", self.mute), ("--solo", self.solo)):
            for name in names:
                if name not in stems.names:
                    raise InvalidOptionError(
                        f"{option}: {stems.source} has no stem {name!r}; its stems are {known}", option=option
                    )
        for name, gain in self.gains.items():
            if not 0.0 <= gain <= MAX_GAIN:
                raise InvalidOptionError.bad_value(
                    "--gain", f"{name}={gain:g}", f"a linear gain from 0 to {MAX_GAIN:g}"
                )
        if not TEMPO_RANGE[0] <= self.tempo <= TEMPO_RANGE[1]:
            raise InvalidOptionError.bad_value("--tempo", self.tempo, "a factor from 0.5 to 1.5")
        if not KEY_RANGE[0] <= self.key <= KEY_RANGE[1]:
            raise InvalidOptionError.bad_value("--key", self.key, "semitones from -12 to 12")
        end = stems.duration_s if self.end_s is None else self.end_s
        if not 0.0 <= self.start_s < stems.duration_s:
            raise InvalidOptionError.bad_value(
                "--start",
                self.start_s,
                f"seconds from 0 to below the track's length ({stems.duration_s:.2f} s)",
            )
        if not self.start_s < end <= stems.duration_s + 1e-9:
            raise InvalidOptionError.bad_value(
                "--end",
                end,
                f"seconds after --start and at most the track's length ({stems.duration_s:.2f} s)",
            )

    def stem_gains(self, names: Sequence[str]) -> tuple[float, ...]:
        """Each stem's effective gain: 0 when muted or not soloed, else its gain (default 1)."""
        return tuple(
            0.0
            if name in self.mute or (self.solo and name not in self.solo)
            else float(self.gains.get(name, 1.0))
            for name in names
        )

    def frame_range(self, stems: StemSet) -> tuple[int, int]:
        """The ``[start, end)`` range in frames of ``stems``."""
        start = round(self.start_s * stems.samplerate)
        end = stems.frames if self.end_s is None else min(round(self.end_s * stems.samplerate), stems.frames)
        return start, end

    def output_frames(self, stems: StemSet) -> int:
        """The mix's length in frames at the set's rate."""
        start, end = self.frame_range(stems)
        return round((end - start) / self.tempo)


def render_mix(
    stems: StemSet, settings: MixSettings, *, block_frames: int = DEFAULT_BLOCK_FRAMES
) -> Iterator[FloatArray]:
    """Render the mix as float32 ``(2, n)`` blocks at ``stems.samplerate``.

    The blocks hold :meth:`MixSettings.output_frames` frames in all. ``settings`` should have passed
    :meth:`MixSettings.check`.

    Raises:
        AudioDecodeError: a stem could not be decoded.
    """
    gains = settings.stem_gains(stems.names)
    start, end = settings.frame_range(stems)
    total = settings.output_frames(stems)
    blocks = stems.blocks(start, end, block_frames)
    if settings.tempo == 1.0 and settings.key == 0.0:
        for parts in blocks:
            yield _weighted_sum(parts, gains)
        return
    weights: list[list[float]] = []
    semitones: list[float] = []
    for pitched in (True, False):
        group = [g if stem.pitched == pitched else 0.0 for stem, g in zip(stems.stems, gains, strict=True)]
        if any(group):
            weights.append(group)
            semitones.append(settings.key if pitched else 0.0)
    if not weights:
        yield from _silence(total, block_frames)
        return
    stretch = _SegmentStretch(stems.samplerate, settings.tempo, semitones, end - start)
    queue = _Fifo()
    for parts in blocks:
        queue.push(stretch.push([_weighted_sum(parts, w) for w in weights]))
        yield from queue.pop_blocks(block_frames)
    queue.push(stretch.finish())
    yield from queue.pop_blocks(block_frames, last=True)


def write_mix(
    stems: StemSet,
    settings: MixSettings,
    path: Path,
    options: WriteOptions,
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
) -> TrackWriteReport:
    """Render the mix into ``path`` (wav, flac or mp3 by ``options``), atomically, at the set's rate.

    Raises:
        AudioWriteError: the file could not be written (nothing is left under ``path``).
        AudioDecodeError: a stem could not be decoded.
    """
    with TrackWriter(
        {"mix": path},
        options,
        samplerate=stems.samplerate,
        channels=MODEL_CHANNELS,
        frames=settings.output_frames(stems),
        title_fallback=path.name,
        samplerate_in=stems.samplerate,
    ) as writer:
        for block in render_mix(stems, settings, block_frames=block_frames):
            writer.write("mix", block)
    assert writer.report is not None
    return writer.report


def _weighted_sum(parts: Sequence[FloatArray], gains: Sequence[float]) -> FloatArray:
    out = np.zeros_like(parts[0])
    for part, gain in zip(parts, gains, strict=True):
        if gain == 1.0:
            out += part
        elif gain:
            out += np.float32(gain) * part
    return out


def _silence(frames: int, block_frames: int) -> Iterator[FloatArray]:
    for i in range(0, frames, block_frames):
        yield np.zeros((MODEL_CHANNELS, min(block_frames, frames - i)), dtype=np.float32)


class _Fifo:
    """Frames in, fixed-size ``(2, n)`` blocks out."""

    def __init__(self) -> None:
        self._parts: list[FloatArray] = []
        self._count = 0

    def push(self, x: FloatArray) -> None:
        if x.shape[1]:
            self._parts.append(x)
            self._count += x.shape[1]

    def pop_blocks(self, block_frames: int, *, last: bool = False) -> Iterator[FloatArray]:
        if self._count < block_frames and not (last and self._count):
            return
        joined = np.concatenate(self._parts, axis=1) if len(self._parts) > 1 else self._parts[0]
        whole = self._count if last else (self._count // block_frames) * block_frames
        for i in range(0, whole, block_frames):
            yield np.ascontiguousarray(joined[:, i : min(i + block_frames, whole)])
        rest = joined[:, whole:]
        self._parts = [rest] if rest.shape[1] else []
        self._count = rest.shape[1]


class _SegmentStretch:
    """Stretch groups of a stream by ``tempo``, each shifted by its semitones, and return their sum.

    The input comes as one float32 ``(2, n)`` block per group (the same ``n``); the output totals
    ``round(frames / tempo)`` frames. Segments are stretched whole; at each join the new segment is
    moved by up to :data:`JOIN_SEARCH_S` (not more: the time error never grows) to the lag where it
    best matches the end of the previous one, then cross-faded, so a held note does not dip. Every
    group takes the same lag, so the groups stay in step.
    """

    def __init__(self, samplerate: int, tempo: float, semitones: Sequence[float], frames: int) -> None:
        self.rate = samplerate
        self.tempo = tempo
        self.semitones = tuple(semitones)
        self.frames = frames
        self.segment = max(1, round(SEGMENT_S * samplerate))
        self.margin = round(MARGIN_S * samplerate)
        self.fade = round(CROSSFADE_S * samplerate)
        self.search = round(JOIN_SEARCH_S * samplerate)
        self.total_out = round(frames / tempo)
        self._bufs: list[FloatArray] = [np.zeros((MODEL_CHANNELS, 0), np.float32) for _ in self.semitones]
        self._buf_start = 0  # input frame of each buffer's first column
        self._received = 0
        self._next = 0  # index of the next segment
        self._tail: FloatArray | None = None  # the previous segment's output past its core, to fade from

    def push(self, xs: Sequence[FloatArray]) -> FloatArray:
        """Feed one block per group; return the output now final (maybe empty)."""
        self._bufs = [np.concatenate([buf, x], axis=1) for buf, x in zip(self._bufs, xs, strict=True)]
        self._received += xs[0].shape[1]
        out: list[FloatArray] = []
        while self._next * self.segment < self.frames:
            core_end = min((self._next + 1) * self.segment, self.frames)
            if self._received < min(core_end + self.margin, self.frames):
                break
            out.append(self._segment_output())
        return np.concatenate(out, axis=1) if out else np.zeros((MODEL_CHANNELS, 0), dtype=np.float32)

    def finish(self) -> FloatArray:
        """Flush: the rest of the output (the input must have reached ``frames``)."""
        self._received = max(self._received, self.frames)
        return self.push([np.zeros((MODEL_CHANNELS, 0), np.float32) for _ in self.semitones])

    def _segment_output(self) -> FloatArray:
        k = self._next
        core_start, core_end = k * self.segment, min((k + 1) * self.segment, self.frames)
        seg_start = max(core_start - self.margin, 0)
        seg_end = min(core_end + self.margin, self.frames)
        last = core_end == self.frames
        out_start = round(core_start / self.tempo)
        out_end = self.total_out if last else round(core_end / self.tempo)
        core = out_end - out_start
        need = core + (0 if last else self.fade)
        base = out_start - round(seg_start / self.tempo)  # out_start's index in this segment's output
        lo, hi = seg_start - self._buf_start, seg_end - self._buf_start
        y = self._stretch_sum([buf[:, lo:hi] for buf in self._bufs], base + need + self.search)
        lag = 0 if self._tail is None else self._best_lag(y, base)
        piece = np.ascontiguousarray(y[:, base + lag : base + lag + need])
        if self._tail is not None:
            n = min(self._tail.shape[1], piece.shape[1])  # a last segment may be shorter than the fade
            ramp = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1]
            piece[:, :n] = self._tail[:, :n] * (1.0 - ramp) + piece[:, :n] * ramp
        self._tail = None if last else np.ascontiguousarray(piece[:, core:])
        self._next += 1
        drop = max(0, (k + 1) * self.segment - self.margin - self._buf_start)
        self._bufs = [buf[:, drop:] for buf in self._bufs]
        self._buf_start += drop
        return np.ascontiguousarray(piece[:, :core])

    def _best_lag(self, y: FloatArray, base: int) -> int:
        """The lag in ``[-search, search]`` at which ``y`` from ``base`` best continues the previous tail."""
        assert self._tail is not None
        n = self._tail.shape[1]
        lo = max(base - self.search, 0)
        window = y[:, lo : base + self.search + n].sum(axis=0)
        if window.shape[0] <= n:
            return 0
        score = np.correlate(window, self._tail.sum(axis=0), mode="valid")
        return int(np.argmax(score)) + lo - base

    def _stretch_sum(self, segs: Sequence[FloatArray], frames: int) -> FloatArray:
        """Each group's segment stretched (and shifted), summed: float32 ``(2, frames)``, zero-padded."""
        out = np.zeros((MODEL_CHANNELS, frames), dtype=np.float32)
        pad = np.zeros((MODEL_CHANNELS, round(self.margin * max(self.tempo, 1.0)) + 1), np.float32)
        for seg, semitones in zip(segs, self.semitones, strict=True):
            if self.tempo == 1.0 and semitones == 0.0:
                y = seg
            else:
                stretch = signalsmith.Stretch()
                stretch.preset(MODEL_CHANNELS, float(self.rate))
                stretch.setTimeFactor(self.tempo)
                if semitones:
                    stretch.setTransposeSemitones(semitones)
                # The zeros after the segment let the stretcher finish its last frames.
                y = np.asarray(stretch.process(np.concatenate([seg, pad], axis=1)), dtype=np.float32)
            n = min(frames, y.shape[1])
            out[:, :n] += y[:, :n]
        return out


def parse_names(values: Iterable[str]) -> frozenset[str]:
    """Stem names from repeatable, comma-separated options (``--mute bass,drums``)."""
    return frozenset(name.strip() for value in values for name in value.split(",") if name.strip())
