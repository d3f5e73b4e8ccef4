"""Everything the command line shows a person: Rich consoles, progress, and errors as short messages.

Results go to stdout (:data:`stdout`); progress, warnings and errors go to stderr (:data:`stderr`), so
``stemsplit … | xargs`` only ever sees results. Rich renders progress live on a terminal and prints
nothing of it elsewhere. Only modules under ``stemsplit.cli`` import Rich or Typer.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from stemsplit import errors, settings

stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    stderr.print(Text.assemble(("Warning:", "yellow"), " ", message), emoji=False)


def info(message: str) -> None:
    """Print a notice on stderr (suppressed by the caller in quiet mode)."""
    stderr.print(message, markup=False, emoji=False)


def print_section(title: str, rows: Sequence[tuple[str, str]], *, console: Console | None = None) -> None:
    """Print a bold title, then one aligned ``label  value`` line per row (values never wrap or parse markup)."""
    out = console or stdout
    out.print(Text(title, style="bold"))
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        out.print(Text(f"  {label:<{width}}  {value}"))


_SEVERITY_STYLES = {"ok": "green", "warning": "yellow", "problem": "bold red"}


def print_finding(
    severity: str, message: str, fix: str | None = None, *, console: Console | None = None
) -> None:
    """Print one diagnosis as ``[severity] message`` with an indented ``fix:`` line when there is one."""
    out = console or stdout
    out.print(Text.assemble("  ", (f"[{severity}]", _SEVERITY_STYLES.get(severity, "")), " ", message))
    if fix:
        out.print(Text(f"      fix: {fix}"))


HELP_OPTION_NAMES = ("-h", "--help")


def typer_app(**settings: Any) -> typer.Typer:
    """A Typer app with the settings every stemsplit command shares (no shell completion, no locals in
    tracebacks, plain help text, ``-h`` as well as ``--help``); ``settings`` adds or overrides, and a
    ``context_settings`` mapping is merged with the shared one.

    Click's contexts inherit the help option names from their parent, so setting them on an app covers
    its subcommands and the apps added to it with ``add_typer``.
    """
    defaults: dict[str, Any] = {
        "add_completion": False,
        "pretty_exceptions_show_locals": False,
        "rich_markup_mode": None,
    }
    context = {"help_option_names": list(HELP_OPTION_NAMES), **settings.pop("context_settings", {})}
    return typer.Typer(**{**defaults, **settings, "context_settings": context})


def version_callback(value: bool) -> None:
    """Typer callback of ``--version``: print the version and exit."""
    if value:
        from stemsplit._version import __version__

        typer.echo(f"stemsplit {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version", "-V", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never use the network (also STEMSPLIT_OFFLINE=1).")
]


# --- errors ------------------------------------------------------------------------------------

# Exit codes of the design's CLI contract.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MODEL_UNAVAILABLE = 3


# Ordered: the first matching type wins, so subclasses come before their parents.
ERROR_TABLE: tuple[tuple[type[BaseException], Callable[[BaseException], str], int], ...] = (
    (errors.ModelUnavailableError, lambda e: str(e), EXIT_MODEL_UNAVAILABLE),
    (errors.UnknownModelError, lambda e: str(e), EXIT_USAGE),
    (errors.InvalidOptionError, lambda e: str(e), EXIT_USAGE),
    (errors.CheckpointError, lambda e: str(e), EXIT_MODEL_UNAVAILABLE),  # the model could not be had
    (errors.StemsplitError, lambda e: str(e), EXIT_FAILED),
    (OSError, lambda e: _os_error(e), EXIT_FAILED),  # disk full, permissions … (a traceback helps nobody)
    (KeyboardInterrupt, lambda e: "interrupted; nothing half-written was left under a final name", 130),
)


def _os_error(err: BaseException) -> str:
    assert isinstance(err, OSError)
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}; check the path, its permissions and the free disk space"


def describe_error(err: BaseException) -> tuple[str, int] | None:
    """The message and exit code for a known error, or ``None`` for an unknown one.

    Messages are one line, except the model-download ones, whose first line is the summary and whose
    indented lines give the URL, the cache path and the ways out.
    """
    for kind, render, code in ERROR_TABLE:
        if isinstance(err, kind):
            return render(err), code
    return None


@contextmanager
def error_boundary() -> Iterator[None]:
    """Turn known errors into ``Error: …`` on stderr and an exit code; let unknown ones through.

    With ``STEMSPLIT_DEBUG=1`` the traceback of a known error is printed too; without it, errors of
    exit code 1 (file system and other runtime failures) point at that variable.
    """
    try:
        yield
    except typer.Exit:
        raise
    except BaseException as err:
        described = describe_error(err)
        if described is None:
            raise
        message, code = described
        if settings.debug():
            stderr.print("".join(traceback.format_exception(err)), markup=False, end="")
        stderr.print(Text.assemble(("Error:", "bold red"), " ", message), emoji=False)
        if not settings.debug() and code == 1:  # usage (2), model (3) and Ctrl-C messages say it all
            stderr.print("[dim](set STEMSPLIT_DEBUG=1 for the full traceback)[/dim]", markup=True)
        raise typer.Exit(code) from None


# --- download progress ---------------------------------------------------------------------------


class DownloadProgress:
    """A :class:`stemsplit.weights.download.DownloadReporter` that draws a Rich bar (size, speed, ETA) on stderr.

    Rich draws nothing live when stderr is not a terminal; ``quiet`` turns the bar off entirely.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def download_started(self, url: str, dest: Path, total_bytes: int | None) -> None:
        if self.quiet:
            return
        self._progress = Progress(
            TextColumn("[bold]Downloading[/bold] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(dest.name, total=total_bytes)

    def download_advanced(self, done_bytes: int, total_bytes: int | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done_bytes, total=total_bytes)

    def download_retrying(self, attempt: int, max_attempts: int, reason: str, delay_s: float) -> None:
        if not self.quiet:
            warn(f"download interrupted ({reason}); retry {attempt}/{max_attempts} in {delay_s:.0f} s")

    def download_finished(self, dest: Path, ok: bool) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if ok and not self.quiet:
            info(f"Downloaded {dest.name} to {dest.parent}")


# --- separation progress --------------------------------------------------------------------------


class BatchProgress:
    """A :class:`stemsplit.pipeline.BatchReporter` drawing Rich bars on stderr, in audio seconds.

    One bar per track in flight (several are separated at once on a GPU) and one for the batch (tracks done
    / total, audio processed, ETA). Nothing is drawn when ``quiet`` or when stderr is not a terminal (Rich's
    own rule).
    """

    def __init__(self, total_tracks: int, total_seconds: float, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._done_before = 0.0
        self._tracks_done = 0
        self._total_tracks = total_tracks
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>7.1f}/{task.total:.1f} s of audio"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
            disable=quiet,
        )
        self._batch = self._progress.add_task(self._batch_label(), total=max(total_seconds, 1e-9))
        self._tracks: dict[int, TaskID] = {}
        self._index: dict[Path, int] = {}
        self._done_s: dict[int, float] = {}

    def _batch_label(self) -> str:
        return f"[bold]batch[/bold] {self._tracks_done}/{self._total_tracks} tracks"

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        # The column renders markup: a file name's brackets must stay text.
        self._tracks[index] = self._progress.add_task(
            escape(path.name[:40]), total=max(duration_s or 0.0, 1e-9)
        )
        self._index[path] = index
        self._done_s[index] = 0.0

    def track_progress(self, index: int, done_s: float) -> None:
        task = self._tracks.get(index)
        if task is not None:
            self._done_s[index] = done_s
            self._progress.update(task, completed=done_s)
            self._progress.update(self._batch, completed=self._done_before + sum(self._done_s.values()))

    def track_finished(self, result: object) -> None:
        index = self._index.pop(getattr(result, "input", Path()), None)
        if index is not None and index in self._tracks:
            self._progress.remove_task(self._tracks.pop(index))
            self._done_s.pop(index, None)
        self._done_before += getattr(result, "duration_s", None) or 0.0
        self._tracks_done += 1
        completed = self._done_before + sum(self._done_s.values())
        self._progress.update(self._batch, completed=completed, description=self._batch_label())
