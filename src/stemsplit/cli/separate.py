"""``stemsplit [OPTIONS] PATHS...``: the separation command (the tool's default command).

Option names and defaults are the design's CLI contract. stdout carries only results (the paths
written, or JSON with ``--json``); progress, warnings and errors go to stderr. Exit codes: 0 everything
done, 1 some input failed (the rest were done), 2 usage error, 3 the model could not be obtained.
"""

from __future__ import annotations

import json
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from stemsplit._version import __version__
from stemsplit.cli import ui

if TYPE_CHECKING:
    from stemsplit.pipeline import Batch, SeparationOptions, TrackResult

_HELP = """Split music into stems (drums, bass, other, vocals) with Hybrid Transformer Demucs.

PATHS are audio files, folders (searched recursively) and globs ("music/**/*.flac").
Stems go to OUT/{model}/{track}/{stem}.{ext}; finished tracks are skipped on a re-run.
--format stem.mp4 writes one OUT/{model}/{track}.stem.mp4 per track for Traktor and Mixxx.

Other commands: `stemsplit models list|download|import|verify|path|remove` (pretrained models) and
`stemsplit doctor` (what is installed, which device would be used and why).
"""


class Format(str, Enum):
    wav = "wav"
    flac = "flac"
    mp3 = "mp3"
    stem_mp4 = "stem.mp4"


class StemCodec(str, Enum):
    aac = "aac"
    alac = "alac"


class BitDepth(str, Enum):
    b16 = "16"
    b24 = "24"
    b32f = "32f"


class Clip(str, Enum):
    rescale = "rescale"
    clamp = "clamp"
    none = "none"


class OtherMethod(str, Enum):
    add = "add"
    minus = "minus"
    none = "none"


class PrecisionChoice(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class CompileChoice(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


separate_app = ui.typer_app(name="stemsplit")


def _parse_samplerate(value: str) -> int | None:
    if value == "input":
        return None
    try:
        rate = int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a rate in Hz or 'input', got {value!r}") from None
    return rate


def _parse_labels(value: str | None, option: str) -> dict[str, str] | None:
    from stemsplit.audio import parse_assignments

    return None if value is None else parse_assignments(value, option)


def _parse_stems(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    if not names:
        raise typer.BadParameter("name at least one stem, e.g. --stems vocals,drums")
    return names


@separate_app.command(help=_HELP, no_args_is_help=True)
def separate(
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATHS", help="Audio files, folders and globs.", show_default=False),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-n",
            metavar="NAME|PATH",
            help="Registry name (htdemucs, htdemucs_ft, htdemucs_6s) or a .th/.safetensors/.yaml path.",
        ),
    ] = "htdemucs",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")] = Path(
        "separated"
    ),
    filename: Annotated[
        str | None,
        typer.Option(
            "--filename",
            metavar="TEMPLATE",
            help="Output path template: {model} {track} {trackext} {stem} {ext} "
            "[default: {model}/{track}/{stem}.{ext}; stem.mp4: {model}/{track}.{ext}].",
            show_default=False,
        ),
    ] = None,
    two_stems: Annotated[
        str | None,
        typer.Option("--two-stems", metavar="STEM", help="Write STEM and no_STEM (karaoke: vocals)."),
    ] = None,
    other_method: Annotated[
        OtherMethod,
        typer.Option(
            "--other-method",
            help="no_STEM as the sum of the other stems (add), mix minus STEM (minus) or not at all (none).",
        ),
    ] = OtherMethod.add,
    stems: Annotated[
        str | None, typer.Option("--stems", metavar="A,B", help="Keep only these stems.")
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format", help="Output format; stem.mp4: one NI stem file per track (Traktor, Mixxx)."
        ),
    ] = Format.wav,
    bit_depth: Annotated[
        BitDepth, typer.Option("--bit-depth", help="16, 24 or 32f (float); mp3 and AAC ignore it.")
    ] = BitDepth.b16,
    mp3_bitrate: Annotated[
        int, typer.Option("--mp3-bitrate", metavar="KBPS", help="MP3 bitrate in kbit/s.", min=8, max=320)
    ] = 320,
    stem_codec: Annotated[
        StemCodec,
        typer.Option("--stem-codec", help="stem.mp4 codec: aac (opens everywhere) or alac (lossless)."),
    ] = StemCodec.aac,
    aac_bitrate: Annotated[
        int,
        typer.Option(
            "--aac-bitrate", metavar="KBPS", help="stem.mp4 AAC bitrate per track in kbit/s.", min=32, max=512
        ),
    ] = 256,
    stem_names: Annotated[
        str | None,
        typer.Option(
            "--stem-names",
            metavar="STEM=NAME,...",
            help="stem.mp4 stem names shown in Traktor/Mixxx, e.g. vocals=Acapella [default: Drums, Bass, Other, Vocals].",
        ),
    ] = None,
    stem_colors: Annotated[
        str | None,
        typer.Option(
            "--stem-colors",
            metavar="STEM=#RRGGBB,...",
            help="stem.mp4 stem colours, e.g. vocals=#FF00FF [default: NI's].",
        ),
    ] = None,
    sample_rate: Annotated[
        str,
        typer.Option(
            "--sample-rate", metavar="N|input", help="Output sample rate in Hz, or 'input' for the input's."
        ),
    ] = "input",
    clip: Annotated[
        Clip,
        typer.Option("--clip", help="rescale: one gain for all stems of a track, only when one would clip."),
    ] = Clip.rescale,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            "-d",
            metavar="DEVICE",
            help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps, or several GPUs: cuda:0,cuda:1 or cuda:all.",
        ),
    ] = "auto",
    precision: Annotated[
        PrecisionChoice,
        typer.Option(
            "--precision",
            help="auto: reduced precision only where measured accurate and faster (CUDA; CPUs with AMX); float32 is exact.",
        ),
    ] = PrecisionChoice.auto,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", metavar="N", help="Windows per forward pass [default: auto].", min=1),
    ] = None,
    compile_mode: Annotated[
        CompileChoice,
        typer.Option(
            "--compile",
            help="torch.compile the network: auto compiles on CUDA when the batch has enough audio to repay it.",
        ),
    ] = CompileChoice.auto,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help="CPU threads [default: one per physical core; OMP_NUM_THREADS overrides].",
            min=1,
        ),
    ] = None,
    segment: Annotated[
        float | None,
        typer.Option("--segment", metavar="SECONDS", help="Window length, at most the model's 7.8 s."),
    ] = None,
    overlap: Annotated[
        float,
        typer.Option("--overlap", metavar="FRACTION", help="Overlap between windows.", min=0.0, max=0.99),
    ] = 0.25,
    shifts: Annotated[
        int,
        typer.Option(
            "--shifts",
            metavar="N",
            help="Average N passes with random delays (slower, slightly better).",
            min=0,
        ),
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the --shifts delays.")] = 0,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing/--overwrite",
            help="Skip tracks whose stems are complete and made with the same model and settings.",
        ),
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be done; load no model.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", metavar="FILE.json", help="Write a JSON report of the run.")
    ] = None,
    offline: ui.OfflineOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bars, notices or summary; warnings and errors still show."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Per-track details on stderr.")] = False,
    version: ui.VersionOpt = False,
) -> None:
    from stemsplit import pipeline
    from stemsplit.errors import InvalidOptionError

    with ui.error_boundary():
        options = pipeline.SeparationOptions(
            model=model,
            out_dir=out,
            filename=filename,
            stems=_parse_stems(stems),
            two_stems=two_stems,
            other_method=other_method.value,
            format=fmt.value,
            bit_depth=bit_depth.value,
            mp3_bitrate=mp3_bitrate,
            samplerate=_parse_samplerate(sample_rate),
            clip=clip.value,
            stem_codec=stem_codec.value,
            aac_bitrate=aac_bitrate,
            stem_names=_parse_labels(stem_names, "--stem-names"),
            stem_colors=_parse_labels(stem_colors, "--stem-colors"),
            device=device,
            precision=precision.value,
            batch_size=batch_size,
            compile=compile_mode.value,
            jobs=jobs,
            segment=segment,
            overlap=overlap,
            shifts=shifts,
            seed=seed,
            overwrite=not skip_existing,
            offline=True if offline else None,
        )
        if report is not None and report.is_dir():
            raise InvalidOptionError(
                f"--report {report} is a folder; give a file name such as run.json", option="--report"
            )
        batch = pipeline.plan_batch(paths, options, dry_run=dry_run)
        if dry_run:
            _print_dry_run(batch, options, as_json=as_json, quiet=quiet)
            if any(outputs is None for _, _, outputs in batch.tracks):
                raise typer.Exit(ui.EXIT_FAILED)  # the same run would fail on those inputs
            return
        if verbose and not quiet:
            ui.stderr.print(f"compute: {batch.compute.describe()}", markup=False, emoji=False)
        results = _run(batch, options, quiet=quiet, verbose=verbose)
        _print_results(results, as_json=as_json)  # before the report: a failing report loses no result
        if report is not None:
            _write_report(report, batch, options, results)
        if not quiet:
            _print_summary(results, _fold_note(batch, options))
        if any(r.status == "failed" for r in results):
            raise typer.Exit(ui.EXIT_FAILED)


def _run(batch: Batch, options: SeparationOptions, *, quiet: bool, verbose: bool) -> list[TrackResult]:
    from stemsplit import pipeline
    from stemsplit.audio import AudioInfo
    from stemsplit.errors import StemsplitWarning

    total_s = sum(p.duration_s or 0.0 for _, p, _ in batch.tracks if isinstance(p, AudioInfo))
    default_show = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, StemsplitWarning):  # shown even with -q: it quiets progress, not problems
            ui.warn(escape(str(message)))  # it names a file: brackets in it are not markup
        else:
            default_show(message, category, *args, **kwargs)

    with ui.BatchProgress(len(batch.tracks), total_s, quiet=quiet) as progress, warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        reporter = _Reporter(progress, quiet=quiet, verbose=verbose)
        return pipeline.separate_batch(
            batch, options, reporter=reporter, download_reporter=ui.DownloadProgress(quiet=quiet)
        )


class _Reporter:
    """Forwards progress to the bars and prints per-track outcomes on stderr."""

    def __init__(self, progress: ui.BatchProgress, *, quiet: bool, verbose: bool) -> None:
        self.progress = progress
        self.quiet = quiet
        self.verbose = verbose

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        self.progress.track_started(index, total, path, duration_s)

    def track_progress(self, index: int, done_s: float) -> None:
        self.progress.track_progress(index, done_s)

    def track_finished(self, result: TrackResult) -> None:
        self.progress.track_finished(result)
        if result.status == "failed":
            ui.stderr.print(
                f"[bold red]Failed:[/bold red] {escape(result.error or '')}", markup=True, emoji=False
            )
        elif self.verbose and not self.quiet:
            detail = f"{result.input}: {result.status}"
            if result.status == "done":
                detail += (
                    f" in {result.timings.get('total', 0):.1f} s on {result.device} ({result.precision}, "
                    f"batch {result.batch_size}), gain {result.gain:.3f}"
                )
            ui.stderr.print(detail, markup=False, emoji=False)


def _print_results(results: list[TrackResult], *, as_json: bool) -> None:
    if as_json:
        ui.stdout.print_json(json.dumps([r.to_dict() for r in results]))
        return
    for result in results:
        if result.status == "done":
            for path in result.outputs.values():
                ui.stdout.print(str(path), markup=False, emoji=False)


def _fold_note(batch: Batch, options: SeparationOptions) -> str | None:
    """The summary's note when a stem file sums some of the model's sources into other."""
    from stemsplit.audio import fold_sources

    if not batch.plan.stem_file:
        return None
    folded = [s for s in fold_sources(batch.plan.computed)["other"] if s != "other"]
    if not folded:
        return None
    return (
        f"note: {' and '.join(folded)} are mixed into 'other' (a stem.mp4 holds exactly drums, bass, other "
        "and vocals)"
    )


def _print_summary(results: list[TrackResult], note: str | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from stemsplit import pipeline

    table = Table(box=None, header_style="bold", title=None)
    for column in ("track", "status", "duration", "time", "output folder"):
        table.add_column(column, overflow="fold")
    for r in results:
        folder = str(next(iter(r.outputs.values())).parent) if r.outputs else ""
        duration = f"{r.duration_s:.1f} s" if r.duration_s is not None else ""
        spent = f"{r.timings['total']:.1f} s" if "total" in r.timings else ""
        status = {"done": "[green]done[/green]", "skipped": "skipped", "failed": "[red]failed[/red]"}[
            r.status
        ]
        if r.status == "done" and r.warnings:
            status = f"[yellow]done, {len(r.warnings)} warning{'s' if len(r.warnings) > 1 else ''}[/yellow]"
        table.add_row(Text(r.input.name), status, duration, spent, Text(folder))  # names are not markup
    ui.stderr.print(table)
    counts = pipeline.summarise(results)
    warned = f" ({counts['done_with_warnings']} with warnings)" if counts["done_with_warnings"] else ""
    ui.stderr.print(
        f"{counts['done']} done{warned}, {counts['skipped']} skipped (already complete), {counts['failed']} failed"
    )
    if note is not None:
        ui.stderr.print(note, markup=False, emoji=False)


def _print_dry_run(batch: Batch, options: SeparationOptions, *, as_json: bool, quiet: bool) -> None:
    from stemsplit.audio import AudioInfo
    from stemsplit.errors import AudioFileNotFoundError
    from stemsplit.pipeline.sidecar import Provenance, is_complete
    from stemsplit.weights.loading import weights_identity

    provenance: Provenance | None = None  # a local model's hash is computed only if a sidecar needs it
    rows = []
    for path, probed, outputs in batch.tracks:
        row: dict[str, Any] = {"input": str(path)}
        if isinstance(probed, AudioInfo):
            complete = False
            if outputs is not None and not options.overwrite and outputs.sidecar.is_file():
                if provenance is None:
                    weights = weights_identity(batch.model)
                    provenance = Provenance(batch.model.name, weights, options.output_settings())
                complete = is_complete(outputs.sidecar, provenance, outputs.stems, path)
            row.update(
                action="skip (complete)" if complete else "separate",
                duration_s=probed.duration_s,
                samplerate=probed.samplerate,
                channels=probed.channels,
                codec=probed.codec,
                outputs={k: str(v) for k, v in (outputs.stems if outputs else {}).items()},
            )
        else:  # the error's message names the file
            action = "not found" if isinstance(probed, AudioFileNotFoundError) else "cannot decode"
            row.update(action=action, error=str(probed))
        rows.append(row)
    if as_json:
        ui.stdout.print_json(
            json.dumps({"model": batch.model.name, "stems": list(batch.plan.written), "tracks": rows})
        )
        return
    for row in rows:
        if "error" in row:
            ui.stdout.print(f"{row['action']:15} {row['error']}", markup=False, emoji=False)
            continue
        duration = f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "? s"
        first = next(iter(row["outputs"].values()), "")
        ui.stdout.print(
            f"{row['action']:15} {row['input']}  ({duration}, {row['samplerate']} Hz, {row['channels']} ch, {row['codec']})"
            f" → {Path(first).parent if first else ''}",
            markup=False,
            emoji=False,
        )
    if not quiet:
        ui.stderr.print(
            f"model {batch.model.name}: stems {', '.join(batch.plan.written)}; nothing was separated (--dry-run)",
            markup=False,
            emoji=False,
        )
        note = _fold_note(batch, options)
        if note is not None:
            ui.stderr.print(note, markup=False, emoji=False)


def _write_report(path: Path, batch: Batch, options: SeparationOptions, results: list[TrackResult]) -> None:
    from dataclasses import asdict

    from stemsplit import pipeline

    settings = asdict(options)
    settings["out_dir"] = str(options.out_dir)
    document = {
        "stemsplit_version": __version__,
        "model": {
            "name": batch.model.name,
            "weights": batch.model.weights_id,
            "path": str(batch.model.path) if batch.model.path else None,
        },
        "settings": settings,
        "summary": dict(pipeline.summarise(results)),
        "tracks": [r.to_dict() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    try:
        temp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
