"""``stemsplit models list|download|import|verify|path|remove``: the weights cache from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stemsplit.cli import ui

app = ui.typer_app(
    help="Manage pretrained models: list, download, import, verify, path, remove.", no_args_is_help=True
)

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notices.")]


@app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models: stems, size, published SDR (MUSDB18-HQ), speed against htdemucs, cached or not."""
    from stemsplit.weights.cache import ModelCache
    from stemsplit.weights.registry import WEIGHTS_LICENCE

    with ui.error_boundary():
        rows = ModelCache().status()
        # On stderr: stdout stays the list alone (JSON with --json).
        ui.stderr.print(WEIGHTS_LICENCE, markup=False, emoji=False)
        if as_json:
            ui.stdout.print_json(json.dumps([row.to_dict() for row in rows]))
            return
        four = ("drums", "bass", "other", "vocals")
        table = []
        for row in rows:
            mib = row.approx_size_mib
            size = "unknown" if mib is None else f"{'' if row.cached else '~'}{mib:.0f} MiB"
            extra = [s for s in row.sources if s not in four]
            stems = f"{len(row.sources)}" + (f" (+{', '.join(extra)})" if extra else "")
            if len(row.files) > 1:
                stems += f", bag of {len(row.files)}"
            sdr = f"{row.sdr.overall:.2f} dB" if row.sdr else "-"
            speed = f"{row.speed:.1f}x" if row.speed is not None else "-"
            name = row.name + (" (default)" if row.default else "")
            table.append((name, stems, size, sdr, speed, "yes" if row.cached else "no"))
        ui.print_table(("name", "stems", "size", "SDR", "speed", "cached"), table, console=ui.stdout)
        ui.stdout.print(_LEGEND, markup=False, emoji=False, end="")


_LEGEND = """
stems: 4 = drums, bass, other, vocals; a bag averages several networks (slower).
SDR: as published, on MUSDB18-HQ. speed: against htdemucs. -: not known.
"""


@app.command("download")
def models_download(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Model names (see `stemsplit models list`); auto: the models -n auto uses."),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Download every model.")] = False,
    quiet: QuietOpt = False,
    offline: ui.OfflineOpt = False,
) -> None:
    """Download models into the cache now (for Docker images and offline machines)."""
    from stemsplit.errors import InvalidOptionError
    from stemsplit.weights.cache import ModelCache
    from stemsplit.weights.download import Transport

    with ui.error_boundary():
        if not names and not all_models:
            raise InvalidOptionError(
                "name at least one model (`stemsplit models list` shows them; `auto` for the two `-n auto` "
                "uses), or pass --all",
                option="NAMES",
            )
        transport = Transport(offline=offline or None, reporter=ui.DownloadProgress(quiet=quiet))
        resolved = ModelCache(transport=transport).download(None if all_models else names)
        for item in resolved:
            for path in item.paths:
                ui.stdout.print(str(path))


@app.command("import")
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
    from stemsplit.weights.cache import ModelCache

    with ui.error_boundary():
        for file in files:
            result = ModelCache().import_file(file)
            ui.stdout.print(str(result.dest))
            ui.info(f"Imported {file} for {', '.join(result.models)}")


@app.command("verify")
def models_verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to check (default: every cached one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-hash cached model files; exit code 1 if any is corrupt."""
    from stemsplit.weights.cache import ModelCache, fix_command

    with ui.error_boundary():
        cache = ModelCache()
        if names:
            chosen: list[str] = [spec.name for spec in cache.specs(names)]  # every name checked first
        else:  # the cached ones: a model with no file here has nothing to verify
            chosen = [row.name for row in cache.status() if any(f.cached for f in row.files)]
        results = cache.verify(chosen) if chosen else []
        if as_json:
            ui.stdout.print_json(json.dumps([r.to_dict() for r in results]))
        elif not chosen:
            ui.info(f"no model is cached in {cache.folder()}; nothing to verify")
        else:
            for model in chosen:
                mine = [r for r in results if r.model == model]
                if all(r.state == "missing" for r in mine):
                    ui.info(f"{model}: not cached; nothing to verify")
                    continue
                for r in mine:
                    ui.stdout.print(f"{r.state:8} {r.path}", markup=False, emoji=False)
        corrupt = [r for r in results if r.state == "corrupt"]
        for r in corrupt:
            ui.stderr.print(
                f"[bold red]Error:[/bold red] {r.path} is corrupt (sha256 {r.actual}, expected {r.expected}…); "
                f"fix: {fix_command(r.model)}",
                markup=True,
            )
        if corrupt:
            raise typer.Exit(ui.EXIT_FAILED)


@app.command("path")
def models_path() -> None:
    """Print the folder model files are cached in (put hand-downloaded files there, or use import)."""
    from stemsplit.weights.cache import ModelCache

    ui.stdout.print(str(ModelCache().folder()))


@app.command("remove")
def models_remove(
    names: Annotated[list[str], typer.Argument(help="Models whose cached files to delete.")],
) -> None:
    """Delete models' files from the cache."""
    from stemsplit.weights.cache import ModelCache

    with ui.error_boundary():
        cache = ModelCache()
        for spec in cache.specs(names):  # every name is checked before anything is deleted
            removed = cache.remove([spec.name])
            if not removed:
                ui.info(f"{spec.name}: not cached; nothing to remove")
            for path in removed:
                ui.stdout.print(str(path), markup=False, emoji=False)
