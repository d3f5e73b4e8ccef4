"""Everything the command line shows a person: Rich consoles, progress, and errors as short messages.

Results go to stdout (:data:`stdout`); progress, warnings and errors go to stderr (:data:`stderr`), so
``stemsplit … | xargs`` only ever sees results. Rich renders progress live on a terminal and prints
nothing of it elsewhere. Only modules under ``stemsplit.cli`` import Rich or Typer.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.cells import cell_len
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
from rich.table import Table
from rich.text import Text
from typer import _click as click  # Typer carries its own Click: its commands take these types

from stemsplit import errors, settings

stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    stderr.print(Text.assemble(("Warning:", "yellow"), " ", message), emoji=False)


def info(message: str) -> None:
    """Print a notice on stderr (suppressed by the caller in quiet mode)."""
    stderr.print(message, markup=False, emoji=False)


def emit(text: str, *, end: str = "\n") -> None:
    """Write one result (a path, a JSON line) to stdout, verbatim, and flush it, so that a pipe gets it
    at once rather than when the run ends."""
    stdout.file.write(text + end)
    stdout.file.flush()


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str | Text]],
    *,
    console: Console,
    fold: Collection[str] = (),
) -> None:
    """Print a table with a header row.

    On a terminal, Rich lays it out in the terminal's full width; only the ``fold`` columns (paths and
    other long values) fold when a row is wider than that, the others never wrap. Elsewhere (a file, a
    pipe, a CI log, where there is no width to fit) each row is one line, columns aligned with spaces,
    nothing wrapped or cut, no colours.

    Args:
        columns: the header of each column.
        rows: the cells; a :class:`~rich.text.Text` keeps its style on a terminal. Plain strings are
            shown as they are (never read as markup).
        console: where to print.
        fold: the columns that may fold on a terminal.
    """
    if console.is_terminal:
        table = Table(box=None, header_style="bold")
        for column in columns:
            table.add_column(column, no_wrap=column not in fold, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in row))
        console.print(table)
        return
    lines = [
        list(columns),
        *([cell if isinstance(cell, str) else cell.plain for cell in row] for row in rows),
    ]
    widths = [max(cell_len(line[k]) for line in lines) for k in range(len(columns))]
    for line in lines:
        padded = "  ".join(
            cell + " " * (width - cell_len(cell)) for cell, width in zip(line, widths, strict=True)
        )
        console.print(Text(padded.rstrip()), soft_wrap=True, emoji=False)


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


class PanelledCommand(typer.core.TyperCommand):
    """A command whose plain-text help lists its options under headings, and names its arguments as
    people write them.

    Each option's heading is its ``rich_help_panel`` (options without one go under "Options", after the
    others), in the order the headings first appear. The usage line and the arguments show the metavar
    alone (``PATHS...``), never Typer's type names (``{PATHS}``, ``<list[str]>``).
    """

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p) for p in self.get_params(ctx) if _is_argument(p)]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        arguments: list[tuple[str, str]] = []
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            if _is_argument(param):
                arguments.append((_argument_name(param), getattr(param, "help", None) or ""))
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                panel = getattr(param, "rich_help_panel", None) or "Options"
                panels.setdefault(panel, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        rest = panels.pop("Options", [])
        for title, records in [*panels.items(), ("Options", rest)]:
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _is_argument(param: click.Parameter) -> bool:
    return param.param_type_name == "argument"  # Typer's arguments are no click.Argument


def _argument_name(param: click.Parameter) -> str:
    name = param.metavar or (param.name or "").upper()
    return f"{name}..." if param.nargs != 1 else name


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
EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, what a shell reports for a tool that SIGINT stopped."""
EXIT_BROKEN_PIPE = 141
"""The exit code when stdout's reader went away (128 + SIGPIPE, what a shell reports for such a tool)."""


# Ordered: the first matching type wins, so subclasses come before their parents. The last field says
# whether the message points at STEMSPLIT_DEBUG: only for failures that a traceback may explain. Our own
# errors (usage, models, files) say everything in their message.
ERROR_TABLE: tuple[tuple[type[BaseException], Callable[[BaseException], str], int, bool], ...] = (
    (errors.ModelUnavailableError, lambda e: str(e), EXIT_MODEL_UNAVAILABLE, False),
    (errors.UnknownModelError, lambda e: str(e), EXIT_USAGE, False),
    (errors.InvalidOptionError, lambda e: str(e), EXIT_USAGE, False),
    (errors.CheckpointError, lambda e: str(e), EXIT_MODEL_UNAVAILABLE, False),  # the model could not be had
    (errors.StemsplitError, lambda e: errors.one_line(str(e)), EXIT_FAILED, False),
    (OSError, lambda e: _os_error(e), EXIT_FAILED, True),  # disk full, permissions … raised from anywhere
    (
        KeyboardInterrupt,
        lambda e: (
            "interrupted; nothing half-written was left under a final name; "
            "run the same command again to resume (finished tracks are skipped)"
        ),
        EXIT_INTERRUPTED,
        False,
    ),
)


def failure_text(message: str) -> str:
    """A failure's message as shown: one line whatever the file names in it hold; under
    ``STEMSPLIT_DEBUG=1`` the traceback an unexpected error carries stays on the lines after it."""
    if settings.debug():
        first, _, rest = message.partition("\n")
        return errors.one_line(first) + (f"\n{rest}" if rest else "")
    return errors.one_line(message)


def _os_error(err: BaseException) -> str:
    assert isinstance(err, OSError)
    where = f"{err.filename}: " if err.filename else ""
    return errors.one_line(
        f"{where}{err.strerror or err}; check the path, its permissions and the free disk space"
    )


def describe_error(err: BaseException) -> tuple[str, int] | None:
    """The message and exit code for a known error, or ``None`` for an unknown one.

    Messages are one line, except the model-download ones, whose first line is the summary and whose
    indented lines give the URL, the cache path and the ways out.
    """
    for kind, render, code, _ in ERROR_TABLE:
        if isinstance(err, kind):
            return render(err), code
    return None


def _debug_helps(err: BaseException) -> bool:
    return next((hint for kind, _, _, hint in ERROR_TABLE if isinstance(err, kind)), False)


@contextmanager
def stemsplit_warnings() -> Iterator[None]:
    """While the work runs, show each :class:`~stemsplit.errors.StemsplitWarning` as one ``warning:`` line on
    stderr (even with ``-q``: it quiets progress, not problems; a file name's brackets stay text), once per
    place; other warnings as Python shows them. The previous handling comes back afterwards."""
    default_show = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, errors.StemsplitWarning):
            warn(escape(errors.one_line(str(message))))
        else:
            default_show(message, category, *args, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


@contextmanager
def error_boundary() -> Iterator[None]:
    """Turn known errors into ``Error: …`` on stderr and an exit code; let unknown ones through.

    With ``STEMSPLIT_DEBUG=1`` the traceback of a known error is printed too; without it, the errors
    whose cause a traceback may show (file system and other ``OSError`` s) point at that variable.
    """
    try:
        yield
    except typer.Exit:
        raise
    except BrokenPipeError:  # the reader of stdout is gone (``| head -1``): stop quietly, as Unix tools do
        _silence_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except BaseException as err:
        described = describe_error(err)
        if described is None:
            raise
        message, code = described
        if settings.debug():
            stderr.print("".join(traceback.format_exception(err)), markup=False, end="")
        stderr.print(Text.assemble(("Error:", "bold red"), " ", message), emoji=False)
        if not settings.debug() and _debug_helps(err):
            stderr.print("[dim](set STEMSPLIT_DEBUG=1 for the full traceback)[/dim]", markup=True)
        raise typer.Exit(code) from None


def _silence_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test runner's capture)
        pass


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
        if self.quiet or not stderr.is_terminal:  # no bar to draw (and Rich would end with a blank line)
            return
        self._progress = Progress(
            TextColumn("[bold]Downloading[/bold] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
            redirect_stdout=False,  # stdout is for results, whatever stderr shows
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

    One bar per track in flight (several are separated at once on a GPU) and one for the batch. The
    batch's row says what is happening: the stage before any track moves (``loading htdemucs``,
    ``starting Ray``), then ``separating`` (or the tracks done / total), with the speed as audio seconds
    per wall-clock second (``2.1× real time``) once audio has been separated, and an ETA. Nothing is drawn
    when ``quiet`` or when stderr is not a terminal (Rich's own rule). Results are printed with
    :meth:`print_result` while the bars are shown.
    """

    def __init__(self, total_tracks: int, total_seconds: float, *, quiet: bool = False) -> None:
        self.quiet = quiet
        # Bars drawn on the same terminal as stdout: a result must go above them, through their console.
        self._shares_terminal = not quiet and stderr.is_terminal and stdout.is_terminal
        self._done_before = 0.0
        self._separated_s = 0.0  # audio of the tracks separated (not skipped) and finished so far
        self._moving: float | None = None  # when the first track moved (the speed's clock)
        self._base_s = 0.0  # the audio separated by then
        self._stage: str | None = None
        self._tracks_done = 0
        self._total_tracks = total_tracks
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>7.1f}/{task.total:.1f} s of audio"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
            disable=quiet or not stderr.is_terminal,  # else Rich ends with a blank line in logs
            redirect_stdout=False,  # Rich would send stdout to its own console (stderr) on a terminal
        )
        self._tracks: dict[int, TaskID] = {}
        self._index: dict[Path, int] = {}
        self._done_s: dict[int, float] = {}
        self._batch = self._progress.add_task(self._batch_label(), total=max(total_seconds, 1e-9))

    def _batch_label(self) -> str:
        if self._stage is not None:
            return f"[bold]{escape(self._stage)}…[/bold]"
        if self._total_tracks == 1:
            label = "[bold]separating[/bold]"
        else:
            label = f"[bold]{self._tracks_done}/{self._total_tracks} tracks[/bold]"
        separated = self._separated_s + sum(self._done_s.values()) - self._base_s
        elapsed = time.monotonic() - self._moving if self._moving is not None else 0.0
        if separated > 0 and elapsed > 1.0:  # audio seconds per second: how many times real time
            label += f", {separated / elapsed:.1f}× real time"
        return label

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def print_result(self, text: str, *, end: str = "\n") -> None:
        """Print one result on stdout now (see :func:`emit`). When stdout is the very terminal the bars
        are drawn on, it is printed above them instead, so that the bars are not torn."""
        if self._shares_terminal:
            self._progress.console.print(Text(text), end=end, soft_wrap=True, emoji=False)
        else:
            emit(text, end=end)

    def stage(self, message: str) -> None:
        self._stage = message
        self._progress.update(self._batch, description=self._batch_label())

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        # The column renders markup: a file name's brackets must stay text.
        self._tracks[index] = self._progress.add_task(
            escape(errors.one_line(path.name)[:40]), total=max(duration_s or 0.0, 1e-9)
        )
        self._index[path] = index
        self._done_s[index] = 0.0

    def track_progress(self, index: int, done_s: float) -> None:
        task = self._tracks.get(index)
        if task is not None:
            self._stage = None  # the tracks move: the stage is over
            self._done_s[index] = done_s
            if self._moving is None:  # the speed counts the audio separated from here on
                self._moving = time.monotonic()
                self._base_s = self._separated_s + sum(self._done_s.values())
            self._progress.update(task, completed=done_s)
            self._progress.update(
                self._batch,
                completed=self._done_before + sum(self._done_s.values()),
                description=self._batch_label(),
            )

    def track_finished(self, result: object) -> None:
        index = self._index.pop(getattr(result, "input", Path()), None)
        if index is not None and index in self._tracks:
            self._progress.remove_task(self._tracks.pop(index))
            self._done_s.pop(index, None)
        seconds = getattr(result, "duration_s", None) or 0.0
        self._done_before += seconds
        if getattr(result, "status", None) == "done":
            self._separated_s += seconds
        self._tracks_done += 1
        completed = self._done_before + sum(self._done_s.values())
        self._progress.update(self._batch, completed=completed, description=self._batch_label())
