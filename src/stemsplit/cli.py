"""The ``stemsplit`` command line: a thin layer over the library.

``stemsplit models …`` manages pretrained weights. Importing this module (and ``--help``/``--version``)
does not import torch: heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from stemsplit import ui

_HELP = """Split music into stems (drums, bass, other, vocals) with Hybrid Transformer Demucs.

Commands:

  stemsplit models list|download|import|verify|path|remove   manage pretrained models
  stemsplit doctor                                          what is installed, which device and why
"""

app = ui.typer_app(name="stemsplit", help=_HELP, no_args_is_help=True)
models_app = ui.typer_app(
    help="Manage pretrained models: list, download, import, verify, path, remove.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@app.callback()
def _root(version: ui.VersionOpt = False) -> None:
    """Split music into stems with Hybrid Transformer Demucs."""


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notices.")]


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models: stems, size, published SDR (MUSDB18-HQ) and whether they are cached."""
    from rich.table import Table

    from stemsplit import models

    with ui.error_boundary():
        rows = models.list_models()
        if as_json:
            ui.stdout.print_json(json.dumps([row.to_dict() for row in rows]))
            return
        table = Table(box=None, header_style="bold")
        for column in ("name", "stems", "files", "size", "SDR", "cached"):
            table.add_column(column, no_wrap=column != "stems", overflow="fold")
        for row in rows:
            size = f"{row.size_bytes / 2**20:.0f} MiB" if row.size_bytes else "-"
            sdr = f"{row.sdr.overall:.2f} dB" if row.sdr else "unpublished"
            name = row.name + (" (default)" if row.default else "")
            table.add_row(
                name, ", ".join(row.sources), str(len(row.files)), size, sdr, "yes" if row.cached else "no"
            )
        ui.stdout.print(table)


@models_app.command("download")
def models_download(
    names: Annotated[
        list[str] | None, typer.Argument(help="Model names (see `stemsplit models list`).")
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Download every model.")] = False,
    quiet: QuietOpt = False,
    offline: ui.OfflineOpt = False,
) -> None:
    """Download models into the cache now (for Docker images and offline machines)."""
    from stemsplit import models

    if not names and not all_models:
        raise typer.BadParameter("name at least one model, or pass --all", param_hint="NAMES")
    with ui.error_boundary():
        resolved = models.download_models(
            None if all_models else names, offline=offline or None, reporter=ui.DownloadProgress(quiet=quiet)
        )
        for item in resolved:
            for path in item.paths:
                ui.stdout.print(str(path))


@models_app.command("import")
def models_import(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Files downloaded by hand (browser, another machine).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
) -> None:
    """Install model files downloaded by hand; each is checked against the registry's hash."""
    from stemsplit import models

    with ui.error_boundary():
        for file in files:
            result = models.import_file(file)
            ui.stdout.print(str(result.dest))
            ui.info(f"Imported {file} for {', '.join(result.models)}")


@models_app.command("verify")
def models_verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to check (default: every cached one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-hash cached model files; exit code 1 if any is corrupt."""
    from stemsplit import models

    with ui.error_boundary():
        results = models.verify_models(names or None)
        if as_json:
            ui.stdout.print_json(json.dumps([r.to_dict() for r in results]))
        else:
            for r in results:
                ui.stdout.print(f"{r.state:8} {r.path}")
        corrupt = [r for r in results if r.state == "corrupt"]
        for r in corrupt:
            ui.stderr.print(
                f"[bold red]Error:[/bold red] {r.path} is corrupt (sha256 {r.actual}, expected {r.expected}…); "
                f"fix: {models.fix_command(r.model)}",
                markup=True,
            )
        if corrupt:
            raise typer.Exit(ui.EXIT_FAILED)


@models_app.command("path")
def models_path() -> None:
    """Print the folder model files are cached in (put hand-downloaded files there, or use import)."""
    from stemsplit import models

    ui.stdout.print(str(models.cache_folder()))


@models_app.command("remove")
def models_remove(
    names: Annotated[list[str], typer.Argument(help="Models whose cached files to delete.")],
) -> None:
    """Delete models' files from the cache."""
    from stemsplit import models

    with ui.error_boundary():
        for path in models.remove_models(names):
            ui.stdout.print(str(path))


@app.command("doctor")
def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Re-hash cached model files (--no-verify is faster).")
    ] = True,
) -> None:
    """Versions, torch build, the device `auto` picks and why, decoders, cache and models; exit 1 on a problem."""
    from stemsplit import doctor

    with ui.error_boundary():
        report = doctor.collect(verify=verify)
        if as_json:
            ui.stdout.print_json(json.dumps(report.to_dict()))
        else:
            for title, rows in report.summary():
                ui.print_section(title, rows)
            ui.print_section("Findings", ())
            for finding in report.findings:
                ui.print_finding(finding.severity, finding.message, finding.fix)
        if report.status == "problem":
            raise typer.Exit(ui.EXIT_FAILED)


SUBCOMMANDS = frozenset({"models", "doctor"})


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``models``/``doctor`` are subcommands, anything else separates.

    A file literally named ``models`` or ``doctor`` is reached as ``./models``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        app(args=args, prog_name="stemsplit")
    else:
        from stemsplit.cli_separate import separate_app

        separate_app(args=args, prog_name="stemsplit")
