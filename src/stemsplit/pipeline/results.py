"""What happened to each track (:class:`TrackResult`, its warnings) and how progress is reported.

The pipeline never prints. It reports through :class:`BatchReporter` (the CLI draws Rich progress from
it) and returns :class:`TrackResult` records (the CLI prints paths, a summary and ``--report`` JSON).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from stemsplit.errors import WARNING_SINK, StemsplitWarning

# --- results and progress -------------------------------------------------------------------------

Status = Literal["done", "skipped", "failed", "interrupted"]

NEAR_SILENT_DBFS = -60.0
"""An input whose peak is below this level (dBFS) gets a :class:`SilentInputWarning`; in any other
input, a written stem whose peak is below it gets a :class:`NearSilentStemWarning`.

-60 dBFS is about the noise floor of a quiet room recording and far below any audible part of a mixed
source, so a stem under it is, for listening purposes, empty (an instrumental's vocals).
"""


@dataclass(frozen=True)
class TrackWarning:
    """A warning issued while one track was processed, as kept in its :class:`TrackResult`.

    Attributes:
        kind: a short name from the warning's class: ``truncated_audio``, ``downmix``, ``tag_copy``,
            ``silent_input``, ``near_silent_stem``, ``sidecar``, ``device_fallback``, ``compile_fallback`` ...
        message: the text shown to people (it names the file).
    """

    kind: str
    message: str


def warning_kind(category: type[Warning]) -> str:
    """The :attr:`TrackWarning.kind` of a warning class: its name without ``Warning``, in snake case."""
    if category is StemsplitWarning:
        return "warning"
    name = category.__name__.removesuffix("Warning") or category.__name__
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class TrackNotes:
    """The stemsplit warnings issued for one track, in order, each distinct message once (thread-safe)."""

    def __init__(self) -> None:
        self.records: list[TrackWarning] = []
        self._seen: set[tuple[type[Warning], str]] = set()
        self._lock = threading.Lock()

    def add(self, category: type[Warning], message: str) -> bool:
        """Note a warning; False when this track already has the same one."""
        with self._lock:
            key = (category, message)
            if key in self._seen:
                return False
            self._seen.add(key)
            self.records.append(TrackWarning(warning_kind(category), message))
            return True


_CURRENT: ContextVar[tuple[TrackNotes, ...]] = ContextVar("stemsplit_track_notes", default=())


@contextmanager
def noting(*notes: TrackNotes) -> Iterator[None]:
    """File the stemsplit warnings that this thread makes inside under these tracks (a device step that
    serves several tracks notes its warnings in each), whatever the warning filters then do with them.

    Nothing global is replaced: a :class:`StemsplitWarning` files itself when it is made
    (:data:`stemsplit.errors.WARNING_SINK`, this thread's own), and is shown, raised or dropped by the
    caller's filters and ``warnings.showwarning`` as any warning is.
    """

    def file(warning: StemsplitWarning) -> None:
        for n in notes:
            n.add(type(warning), str(warning))

    token, sink = _CURRENT.set(notes), WARNING_SINK.set(file)
    try:
        yield
    finally:
        WARNING_SINK.reset(sink)
        _CURRENT.reset(token)


def noted_so_far() -> tuple[TrackWarning, ...]:
    """The warnings filed so far under the one track this thread works on (:func:`noting`); empty when it
    works on none, or on several at once."""
    notes = _CURRENT.get()
    return tuple(notes[0].records) if len(notes) == 1 else ()


@contextmanager
def collect_warnings() -> Iterator[list[TrackWarning]]:
    """Record the :class:`StemsplitWarning` s made inside (in this thread), whatever the filters say, while
    they are shown as usual; for one track worked on by the calling thread."""
    notes = TrackNotes()
    with noting(notes):
        yield notes.records


@dataclass
class TrackResult:
    """What happened to one input (one row of the summary and of ``--report``).

    Attributes:
        input: the input path.
        status: ``done``, ``skipped`` (already complete), ``failed``, or ``interrupted`` (the run was
            stopped, by Ctrl-C, before this track finished; nothing of it was left under a final name).
        error: one-line reason when failed.
        outputs: written (or existing, when skipped) stem files; empty when failed or interrupted.
        duration_s, samplerate, channels, codec: the input, when it could be probed.
        output_samplerate: the stems' rate.
        timings: seconds spent per stage (``stats``, ``separate``, ``total``).
        model: the model of the track (the one ``--model`` names, or ``--model auto``'s pick for its duration);
            None when the input could not be probed.
        device, precision, batch_size: where and how the model ran.
        node: the Ray node whose worker ran the model, as ``host (ip)`` (``--ray``); None for a local run.
        gain: the shared clip-protection gain applied (1.0 = none).
        stems: per stem ``{"peak": …, "rms": …, "peak_dbfs": …}``, before the gain (``peak_dbfs`` is
            ``-inf`` for a silent stem; None in :meth:`to_dict`, as JSON has no infinity).
        warnings: the stemsplit warnings issued while the track was processed (input truncated,
            channels downmixed, tags not copied, a stem near-silent, a device fallback …), in order. A
            ``done`` track with warnings is still done; these say what to check.
    """

    input: Path
    status: Status
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    duration_s: float | None = None
    samplerate: int | None = None
    channels: int | None = None
    codec: str | None = None
    output_samplerate: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    device: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    node: str | None = None
    gain: float | None = None
    stems: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: tuple[TrackWarning, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as strings; non-finite numbers, such as a silent stem's dBFS, as None)."""
        data = asdict(self)
        data["input"] = str(self.input)
        data["outputs"] = {k: str(v) for k, v in self.outputs.items()}
        data["stems"] = {
            stem: {k: v if math.isfinite(v) else None for k, v in values.items()}
            for stem, values in self.stems.items()
        }
        data["warnings"] = [asdict(w) for w in self.warnings]
        return data


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batch: what became of every input, the unfinished ones ``interrupted``.

    A ``KeyboardInterrupt``, so a caller that does not look for it stops as on any Ctrl-C.

    Attributes:
        results: one :class:`TrackResult` per input, in input order: the finished tracks' results as
            they were, every other track ``interrupted``.
    """

    def __init__(self, results: Sequence[TrackResult]) -> None:
        super().__init__()
        self.results = list(results)


class BatchReporter(Protocol):
    """Progress of a batch, for a user interface. Every method is optional in spirit: implement no-ops.

    Several tracks may be in flight at once: each call names its track by its index in the batch (or, for
    :meth:`track_finished`, by the result's ``input``), and tracks may end in another order than they
    started. :meth:`track_finished` is called once per input with its final result, as soon as it is known
    (including ``interrupted`` results when Ctrl-C stops the batch). All calls come from the thread that runs
    the batch.
    """

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None: ...

    def track_progress(self, index: int, done_s: float) -> None: ...

    def track_finished(self, result: TrackResult) -> None: ...

    def note(self, message: str) -> None:
        """A one-line notice for people about the run, not about a track: a one-time preparation that takes
        a while (the OpenVINO export of a model's network). Optional: a reporter without it is not told."""

    def stage(self, message: str) -> None:
        """What the batch is doing now, before its tracks move (``loading htdemucs``, ``starting Ray``): shown
        until the next stage or the tracks' progress. Optional: a reporter without it is not told."""


class NullBatchReporter:
    """A reporter that shows nothing (the library default)."""

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        pass

    def track_progress(self, index: int, done_s: float) -> None:
        pass

    def track_finished(self, result: TrackResult) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stage(self, message: str) -> None:
        pass


def show_stage(reporter: BatchReporter, message: str) -> None:
    """Pass ``message`` to ``reporter.stage``, when the reporter has it (see :func:`tell`)."""
    stage = getattr(reporter, "stage", None)
    if stage is not None:
        stage(message)


def tell(reporter: BatchReporter, message: str) -> None:
    """Pass ``message`` to ``reporter.note``; a reporter written before :meth:`BatchReporter.note` existed,
    without it, is not told."""
    note = getattr(reporter, "note", None)
    if note is not None:
        note(message)


def summarise(results: Sequence[TrackResult]) -> Mapping[str, int]:
    """Counts per status, and ``done_with_warnings``: the done tracks (counted in ``done``) with warnings."""
    counts = {"done": 0, "skipped": 0, "failed": 0, "interrupted": 0, "done_with_warnings": 0}
    for r in results:
        counts[r.status] += 1
        if r.status == "done" and r.warnings:
            counts["done_with_warnings"] += 1
    return counts
