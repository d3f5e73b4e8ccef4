"""The ``stemsplit`` command line: routing between the default command and the subcommands.

``stemsplit PATHS...`` separates (:mod:`~stemsplit.cli.separate`), ``stemsplit models …`` manages pretrained
weights (:mod:`~stemsplit.cli.models`), ``stemsplit doctor`` inspects the installation
(:mod:`~stemsplit.cli.doctor`). Importing this module (and ``--help``/``--version``) does not import torch:
heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated

import typer

from stemsplit.cli import models, practice, ui

_HELP = """Split music into stems (drums, bass, other, vocals) with Hybrid Transformer Demucs.

Commands:

  stemsplit models list|download|import|verify|path|remove   manage pretrained models
  stemsplit doctor                                          what is installed, which device and why
"""

app = ui.typer_app(name="stemsplit", help=_HELP, no_args_is_help=True)
app.add_typer(models.app, name="models")
app.command("mix")(practice.mix_command)
app.command("play")(practice.play_command)


@app.callback()
def _root(version: ui.VersionOpt = False) -> None:
    """Split music into stems with Hybrid Transformer Demucs."""


@app.command("doctor")
def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Re-hash cached model files (--no-verify is faster).")
    ] = True,
) -> None:
    """Versions, torch build, the device `auto` picks and why, decoders, cache and models; exit 1 on a problem."""
    from stemsplit.cli import doctor

    with ui.error_boundary():
        report = doctor.collect(verify=verify)
        if as_json:
            ui.stdout.print_json(json.dumps(report.to_dict()))
        else:
            for title, rows in doctor.summary(report):
                ui.print_section(title, rows)
            ui.print_section("Findings", ())
            for finding in report.findings:
                ui.print_finding(finding.severity, finding.message, finding.fix)
        if report.status == "problem":
            raise typer.Exit(ui.EXIT_FAILED)


SUBCOMMANDS = frozenset({"models", "doctor", "mix", "play"})


def _end_before_workers(code: int) -> None:
    """End the process now, with ``code``, if a batch's worker thread is still running (after Ctrl-C, or a
    failure that stops the batch).

    The batch waits a bounded time for its workers to stop at a safe point; one still inside a long native
    call (a device batch on a busy CPU) would be torn down by the interpreter's exit, which makes C++
    abort the process (``terminate called without an active exception``, exit 134 instead of 130).
    Everything the run keeps is written by then (results, report, summary), and the temporaries a stopped
    writer could not remove are swept by the next run, so the process ends here, skipping the teardown.
    """
    import os
    import threading

    if any(t.name.startswith("stemsplit-") and t.is_alive() for t in threading.enumerate()):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


SHORT_USAGE = """Usage: stemsplit [OPTIONS] PATHS...

  stemsplit song.mp3                     4 stems in separated/htdemucs/song/
  stemsplit song.mp3 --two-stems vocals  vocals.wav and no_vocals.wav (karaoke)
  stemsplit ~/Music/album/               a whole folder; run it again to resume

Then practise along: stemsplit play song.mp3 (a mixer in the browser)
More: stemsplit --help (every option), stemsplit models list, stemsplit doctor
"""
"""What ``stemsplit`` with no arguments prints (on stderr, exit 2): the commonest commands."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``models``/``doctor`` are subcommands, anything else separates.

    No arguments print :data:`SHORT_USAGE` (exit 2). A file literally named ``models``, ``doctor``, ``mix`` or
    ``play`` is reached as ``./models`` (said when the subcommand's parsing fails and such a path exists). ``argv`` None (the console
    script, ``python -m stemsplit``) means the process ends with the command: its objects are then frozen
    (:func:`gc.freeze`) for a shorter exit; with ``argv`` given (a caller's own process) they are not.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args:
            ui.stderr.print(SHORT_USAGE, markup=False, emoji=False, end="")
            raise SystemExit(ui.EXIT_USAGE)
        typo = get_close_matches(args[0], SUBCOMMANDS, n=1, cutoff=0.75)
        mistyped = args[0] not in SUBCOMMANDS and not Path(args[0]).exists()  # ``stemsplit doctr``
        if len(args) == 1 and typo and mistyped:
            ui.stderr.print(
                f"Error: no file named {args[0]!r}; did you mean `stemsplit {typo[0]}`?", markup=False
            )
            raise SystemExit(ui.EXIT_USAGE)
        if args[0] in SUBCOMMANDS:
            try:
                app(args=args, prog_name="stemsplit")
            except SystemExit as stop:
                here = Path(args[0])
                if stop.code == ui.EXIT_USAGE and here.exists():
                    kind = "folder" if here.is_dir() else "file"
                    ui.info(f"note: to separate the {kind} {args[0]!r} here, write ./{args[0]}")
                raise
        else:
            from stemsplit.cli.separate import separate_app

            separate_app(args=args, prog_name="stemsplit")
    except SystemExit as done:
        if argv is None and isinstance(done.code, int):
            _end_before_workers(done.code)
        raise
    finally:
        if argv is None:  # the process's own command, which ends now
            # The collector's last pass at exit walks every object (torch's modules alone are hundreds of
            # thousands): about 0.25 s of a 19-s run (benchmarks/RESULTS.md, 2026-12-03). Nothing is left
            # to collect that matters, so the objects are moved out of its sight.
            gc.freeze()
