"""``stemsplit [OPTIONS] PATHS...``: the separation command (the tool's default command).

Option names and defaults are the design's CLI contract. stdout carries only results, each track's as
soon as it ends (its stem paths, or one JSON line with ``--json``); progress, warnings and errors go to
stderr. Exit codes: 0 everything done, 1 some input failed (the rest were done), 2 usage error, 3 the
model could not be obtained, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape

from stemsplit.cli import ui
from stemsplit.errors import one_line

if TYPE_CHECKING:
    from stemsplit.distributed import ClusterOptions
    from stemsplit.pipeline import Batch, BatchInterrupted, SeparationOptions, TrackResult

_HELP = """Split music into stems (drums, bass, other, vocals) with Hybrid Transformer Demucs.

PATHS are audio files, folders (searched recursively) and globs ("music/**/*.flac").
Stems go to OUT/{model}/{track}/{stem}.{ext}; finished tracks are skipped on a re-run.
--format stem.mp4 writes one OUT/{model}/{track}.stem.mp4 per track for Traktor and Mixxx.

--ray separates on a Ray cluster (stemsplit-cli[ray]): one model per worker, same files and resume.

Other commands: `stemsplit models list|download|import|verify|path|remove` (pretrained models) and
`stemsplit doctor` (what is installed, which device would be used and why).
"""


separate_app = ui.typer_app(name="stemsplit")

# Every value is taken as text and checked by stemsplit itself (SeparationOptions), so that a bad value
# gets one wording whatever the option: ``--bit-depth 8 is not valid; use 16, 24 or 32f``.
_INTEGERS = ("--mp3-bitrate", "--aac-bitrate", "--batch-size", "--jobs", "--shifts", "--seed")

Output = Literal["paths", "print0", "json"]


def _number(option: str, text: str | None) -> Any:
    """``text`` as the int or (finite) float ``option`` takes; None stays None.

    Raises:
        InvalidOptionError: not such a number (the message says what the option accepts).
    """
    from stemsplit.errors import InvalidOptionError
    from stemsplit.pipeline.options import accepted

    if text is None:
        return None
    try:
        value = int(text) if option in _INTEGERS else float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidOptionError.bad_value(option, text, accepted(option))
    return value


def _labels(value: str | None, option: str) -> dict[str, str] | None:
    from stemsplit.audio import parse_assignments

    return None if value is None else parse_assignments(value, option)


def _samplerate(text: str) -> int | None:
    from stemsplit.errors import InvalidOptionError
    from stemsplit.pipeline.options import accepted

    if text == "input":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidOptionError.bad_value("--sample-rate", text, accepted("--sample-rate")) from None


def _stems(text: str | None) -> tuple[str, ...] | None:
    from stemsplit.errors import InvalidOptionError
    from stemsplit.pipeline.options import accepted

    if text is None:
        return None
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise InvalidOptionError.bad_value("--stems", text, accepted("--stems"))
    return names


@separate_app.command(help=_HELP, no_args_is_help=True, cls=ui.PanelledCommand)
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
            help="Registry name (htdemucs, htdemucs_ft, htdemucs_6s, hdemucs_mmi), auto (hdemucs_mmi for "
            "tracks of 7 minutes or more, else htdemucs), or a .th/.safetensors/.yaml path.",
            rich_help_panel="Model and quality",
        ),
    ] = "htdemucs",
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.", rich_help_panel="Output")
    ] = Path("separated"),
    filename: Annotated[
        str | None,
        typer.Option(
            "--filename",
            metavar="TEMPLATE",
            help="Output path template: {model} {track} {trackext} {stem} {ext} "
            "[default: {model}/{track}/{stem}.{ext}; stem.mp4: {model}/{track}.{ext}].",
            show_default=False,
            rich_help_panel="Output",
        ),
    ] = None,
    two_stems: Annotated[
        str | None,
        typer.Option(
            "--two-stems",
            metavar="STEM",
            help="Write STEM and no_STEM (karaoke: vocals).",
            rich_help_panel="Stems",
        ),
    ] = None,
    other_method: Annotated[
        str | None,
        typer.Option(
            "--other-method",
            metavar="<add|minus|none>",
            help="With --two-stems: no_STEM as the sum of the other stems (add), mix minus STEM (minus) "
            "or not at all (none) [default: add].",
            show_default=False,
            rich_help_panel="Stems",
        ),
    ] = None,
    stems: Annotated[
        str | None,
        typer.Option("--stems", metavar="A,B", help="Keep only these stems.", rich_help_panel="Stems"),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="<wav|flac|mp3|stem.mp4>",
            help="Output format; stem.mp4: one NI stem file per track (Traktor, Mixxx).",
            rich_help_panel="Output",
        ),
    ] = "wav",
    bit_depth: Annotated[
        str | None,
        typer.Option(
            "--bit-depth",
            metavar="<16|24|32f>",
            help="16, 24 or 32f (float) [default: 16]; wav, flac and ALAC stem files.",
            show_default=False,
            rich_help_panel="Output",
        ),
    ] = None,
    mp3_bitrate: Annotated[
        str,
        typer.Option(
            "--mp3-bitrate", metavar="KBPS", help="MP3 bitrate in kbit/s, 8 to 320.", rich_help_panel="Output"
        ),
    ] = "320",
    stem_codec: Annotated[
        str,
        typer.Option(
            "--stem-codec",
            metavar="<aac|alac>",
            help="stem.mp4 codec: aac (opens everywhere) or alac (lossless).",
            rich_help_panel="Stem files (--format stem.mp4)",
        ),
    ] = "aac",
    aac_bitrate: Annotated[
        str,
        typer.Option(
            "--aac-bitrate",
            metavar="KBPS",
            help="stem.mp4 AAC bitrate per track in kbit/s, 32 to 512.",
            rich_help_panel="Stem files (--format stem.mp4)",
        ),
    ] = "256",
    stem_names: Annotated[
        str | None,
        typer.Option(
            "--stem-names",
            metavar="STEM=NAME,...",
            help="stem.mp4 stem names shown in Traktor/Mixxx, e.g. vocals=Acapella [default: Drums, Bass, Other, Vocals].",
            rich_help_panel="Stem files (--format stem.mp4)",
        ),
    ] = None,
    stem_colors: Annotated[
        str | None,
        typer.Option(
            "--stem-colors",
            metavar="STEM=#RRGGBB,...",
            help="stem.mp4 stem colours, e.g. vocals=#FF00FF [default: NI's].",
            rich_help_panel="Stem files (--format stem.mp4)",
        ),
    ] = None,
    sample_rate: Annotated[
        str,
        typer.Option(
            "--sample-rate",
            metavar="N|input",
            help="Output sample rate in Hz, or 'input' for the input's.",
            rich_help_panel="Output",
        ),
    ] = "input",
    clip: Annotated[
        str,
        typer.Option(
            "--clip",
            metavar="<rescale|clamp|none>",
            help="rescale: one gain for all stems of a track, only when one would clip.",
            rich_help_panel="Output",
        ),
    ] = "rescale",
    device: Annotated[
        str,
        typer.Option(
            "--device",
            "-d",
            metavar="DEVICE",
            help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps, or several GPUs: cuda:0,cuda:1 or cuda:all.",
            rich_help_panel="Performance",
        ),
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            metavar="<auto|float32|bfloat16|float16>",
            help="auto: reduced precision only where measured accurate and faster (CUDA; CPUs with AMX); float32 is exact.",
            rich_help_panel="Model and quality",
        ),
    ] = "auto",
    batch_size: Annotated[
        str | None,
        typer.Option(
            "--batch-size",
            metavar="N",
            help="Windows per forward pass, 1 or more [default: auto].",
            rich_help_panel="Performance",
        ),
    ] = None,
    compile_mode: Annotated[
        str,
        typer.Option(
            "--compile",
            metavar="<auto|on|off>",
            help="torch.compile the network: auto compiles on CUDA when the batch has enough audio to repay it.",
            rich_help_panel="Performance",
        ),
    ] = "auto",
    jobs: Annotated[
        str | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help="CPU threads [default: one per physical core; OMP_NUM_THREADS overrides].",
            rich_help_panel="Performance",
        ),
    ] = None,
    segment: Annotated[
        str | None,
        typer.Option(
            "--segment",
            metavar="SECONDS",
            help="Window length, at most the model's (7.8 s; hdemucs_mmi: 44 s) [default: the model's].",
            rich_help_panel="Model and quality",
        ),
    ] = None,
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap",
            metavar="FRACTION",
            help="Overlap between windows, 0 to 0.99.",
            rich_help_panel="Model and quality",
        ),
    ] = "0.25",
    shifts: Annotated[
        str,
        typer.Option(
            "--shifts",
            metavar="N",
            help="Average N passes with random delays (slower, slightly better).",
            rich_help_panel="Model and quality",
        ),
    ] = "0",
    seed: Annotated[
        str,
        typer.Option(
            "--seed", metavar="N", help="Seed of the --shifts delays.", rich_help_panel="Model and quality"
        ),
    ] = "0",
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing/--overwrite",
            help="Skip tracks whose stems are complete and made with the same model and settings.",
            rich_help_panel="Batch, resume and results",
        ),
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="List what would be done; load no model.",
            rich_help_panel="Batch, resume and results",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE.json",
            help="Write a JSON report of the run.",
            rich_help_panel="Batch, resume and results",
        ),
    ] = None,
    offline: ui.OfflineOpt = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object per track and line on stdout, as each ends.",
            rich_help_panel="Batch, resume and results",
        ),
    ] = False,
    print0: Annotated[
        bool,
        typer.Option(
            "--print0",
            help="End each printed path with a NUL, not a newline (xargs -0).",
            rich_help_panel="Batch, resume and results",
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bars, notices or summary; warnings and errors still show.",
            rich_help_panel="Batch, resume and results",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Per-track details on stderr.",
            rich_help_panel="Batch, resume and results",
        ),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="local|auto|ADDRESS",
            help="Separate on a Ray cluster: local (a private one for this run), auto (the running one) "
            "or the head's ADDRESS; needs stemsplit-cli[ray].",
            rich_help_panel="Ray",
        ),
    ] = None,
    ray_workers_per_gpu: Annotated[
        str | None,
        typer.Option(
            "--ray-workers-per-gpu",
            metavar="N",
            help="With --ray on GPUs: workers sharing each GPU [default: 1].",
            rich_help_panel="Ray",
        ),
    ] = None,
    ray_cpus_per_worker: Annotated[
        str | None,
        typer.Option(
            "--ray-cpus-per-worker",
            metavar="N",
            help="With --ray on CPUs: CPU slots (and threads) per worker [default: 1].",
            rich_help_panel="Ray",
        ),
    ] = None,
    ray_in_flight: Annotated[
        str | None,
        typer.Option(
            "--ray-in-flight",
            metavar="N",
            help="With --ray: the most tracks handed to workers at once [default: 2 per worker].",
            rich_help_panel="Ray",
        ),
    ] = None,
    version: ui.VersionOpt = False,
) -> None:
    from stemsplit import pipeline
    from stemsplit.errors import InvalidOptionError

    with ui.error_boundary():
        cluster = _cluster(ray, ray_workers_per_gpu, ray_cpus_per_worker, ray_in_flight)
        if print0 and (as_json or dry_run):
            other = "--json" if as_json else "--dry-run"
            raise InvalidOptionError(
                f"--print0 ends printed paths; {other} prints no bare paths", option="--print0"
            )
        options = pipeline.SeparationOptions(
            model=model,
            out_dir=out,
            filename=filename,
            stems=_stems(stems),
            two_stems=two_stems,
            other_method=other_method or "add",  # type: ignore[arg-type]  # checked by SeparationOptions
            format=fmt,  # type: ignore[arg-type]
            bit_depth=bit_depth or "16",  # type: ignore[arg-type]
            mp3_bitrate=_number("--mp3-bitrate", mp3_bitrate),
            samplerate=_samplerate(sample_rate),
            clip=clip,  # type: ignore[arg-type]
            stem_codec=stem_codec,  # type: ignore[arg-type]
            aac_bitrate=_number("--aac-bitrate", aac_bitrate),
            stem_names=_labels(stem_names, "--stem-names"),
            stem_colors=_labels(stem_colors, "--stem-colors"),
            device=device,
            precision=precision,  # type: ignore[arg-type]
            batch_size=_number("--batch-size", batch_size),
            compile=compile_mode,  # type: ignore[arg-type]
            jobs=_number("--jobs", jobs),
            segment=_number("--segment", segment),
            overlap=_number("--overlap", overlap),
            shifts=_number("--shifts", shifts),
            seed=_number("--seed", seed),
            overwrite=not skip_existing,
            offline=True if offline else None,
        )
        _check_applies(options, other_method=other_method, bit_depth=bit_depth, quiet=quiet)
        if report is not None:
            _check_report(report)
        if cluster is not None:
            from stemsplit import distributed

            batch = distributed.plan(paths, options, dry_run=dry_run)
        else:
            batch = pipeline.plan_batch(paths, options, dry_run=dry_run)
        if bit_depth is None and not quiet:
            _note_deeper_inputs(batch, options)
        if dry_run:
            _print_dry_run(batch, options, as_json=as_json, quiet=quiet)
            if any(outputs is None for _, _, outputs in batch.tracks):
                raise typer.Exit(ui.EXIT_FAILED)  # the same run would fail on those inputs
            return
        if verbose and not quiet:
            compute = (
                batch.compute.describe()
                if cluster is None
                else f"Ray ({cluster.address}), one model per worker"
            )
            ui.stderr.print(f"compute: {compute}", markup=False, emoji=False)
        output: Output = "json" if as_json else "print0" if print0 else "paths"
        started = time.monotonic()
        results, interrupted = _run(batch, options, cluster, quiet=quiet, verbose=verbose, output=output)
        if not quiet:
            _print_summary(
                results,
                _fold_note(batch),
                show_model=len(batch.models) > 1,
                wall_s=time.monotonic() - started,
            )
        if report is not None:
            from stemsplit.pipeline.report import report_document, write_report

            write_report(report, report_document(batch, options, results))
        if interrupted is not None:
            raise interrupted  # the error boundary says how to resume and exits 130
        if any(r.status == "failed" for r in results):
            raise typer.Exit(ui.EXIT_FAILED)


def _cluster(
    address: str | None, workers_per_gpu: str | None, cpus_per_worker: str | None, in_flight: str | None
) -> ClusterOptions | None:
    """The ``--ray*`` options, checked (Ray installed included), or None for a local run.

    Raises:
        InvalidOptionError: a bad value, a ``--ray-*`` option without ``--ray``, or Ray not installed.
    """
    from stemsplit.errors import InvalidOptionError

    counts = {
        "--ray-workers-per-gpu": workers_per_gpu,
        "--ray-cpus-per-worker": cpus_per_worker,
        "--ray-in-flight": in_flight,
    }
    if address is None:
        given = next((option for option, text in counts.items() if text is not None), None)
        if given is not None:
            raise InvalidOptionError(f"{given} only applies to a Ray run; add --ray", option=given)
        return None
    from stemsplit import distributed

    values: dict[str, int] = {}
    for option, text in counts.items():
        try:
            if text is not None:
                values[option] = int(text)
        except ValueError:
            raise InvalidOptionError.bad_value(option, text, "a whole number, 1 or more") from None
    cluster = distributed.ClusterOptions(
        address=address,
        workers_per_gpu=values.get("--ray-workers-per-gpu", 1),
        cpus_per_worker=values.get("--ray-cpus-per-worker", 1),
        max_in_flight=values.get("--ray-in-flight"),
    )
    distributed.import_ray()  # a missing Ray says how to install it before anything else happens
    return cluster


def _check_applies(
    options: SeparationOptions, *, other_method: str | None, bit_depth: str | None, quiet: bool
) -> None:
    """Refuse ``--other-method`` without ``--two-stems``; note a ``--bit-depth`` the format has no use for.

    Raises:
        InvalidOptionError: ``--other-method`` given without ``--two-stems``.
    """
    from stemsplit.errors import InvalidOptionError

    if other_method is not None and options.two_stems is None:
        raise InvalidOptionError(
            f"--other-method {other_method} needs --two-stems STEM (e.g. --two-stems vocals)",
            option="--other-method",
        )
    if bit_depth is not None and not quiet and options.output_settings()["bit_depth"] is None:
        codec = "AAC" if options.format == "stem.mp4" else options.format
        ui.info(f"note: --bit-depth {bit_depth} is ignored: {codec} has no bit depth")


def _note_deeper_inputs(batch: Batch, options: SeparationOptions) -> None:
    """Say, before the work, that inputs with more bits per sample than the default stems lose them."""
    from stemsplit.pipeline.report import deeper_inputs

    deeper = deeper_inputs(batch, options)
    if deeper:
        bits = max(b for _, b in deeper)
        which = deeper[0][0].name if len(deeper) == 1 else f"{len(deeper)} inputs"
        keep = "24" if bits <= 24 else "32f"
        ui.info(
            f"note: {which} {'is' if len(deeper) == 1 else 'are'} {bits}-bit; the stems will be "
            f"{options.bit_depth}-bit: --bit-depth {keep} keeps it"
        )


def _check_report(report: Path) -> None:
    """Refuse a ``--report`` path that cannot be written, before any work (it is written at the end)."""
    from stemsplit.errors import InvalidOptionError
    from stemsplit.pipeline.outputs import check_writable_folder

    if report.is_dir():
        raise InvalidOptionError(
            f"--report {report} is a folder; give a file name such as run.json", option="--report"
        )
    check_writable_folder(report.parent, option="--report", value=report)


def _run(
    batch: Batch,
    options: SeparationOptions,
    cluster: ClusterOptions | None,
    *,
    quiet: bool,
    verbose: bool,
    output: Output,
) -> tuple[list[TrackResult], BatchInterrupted | None]:
    """Run the batch (here, or on Ray with ``cluster``), printing each track's results as it ends; on
    Ctrl-C, what became of every track."""
    from stemsplit import pipeline
    from stemsplit.audio import AudioInfo

    total_s = sum(p.duration_s or 0.0 for _, p, _ in batch.tracks if isinstance(p, AudioInfo))
    with ui.BatchProgress(len(batch.tracks), total_s, quiet=quiet) as progress, ui.stemsplit_warnings():
        reporter = _Reporter(progress, quiet=quiet, verbose=verbose, output=output)
        try:
            if cluster is not None:
                from stemsplit import distributed

                results = distributed.run_batch(batch, options, cluster, reporter=reporter)
            else:
                results = pipeline.separate_batch(
                    batch, options, reporter=reporter, download_reporter=ui.DownloadProgress(quiet=quiet)
                )
        except pipeline.BatchInterrupted as stop:
            return stop.results, stop
    return results, None


class _Reporter:
    """Forwards progress to the bars, prints each track's results on stdout as soon as the track ends
    (in whatever order tracks end), and its outcome on stderr.

    Results: the stem paths of a done or skipped track, one per line (or ending in NUL with
    ``--print0``); with ``--json``, one JSON object per track and line, whatever its status (JSON Lines:
    ``jq`` reads them one by one as they come).
    """

    def __init__(self, progress: ui.BatchProgress, *, quiet: bool, verbose: bool, output: Output) -> None:
        self.progress = progress
        self.quiet = quiet
        self.verbose = verbose
        self.output = output

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        self.progress.track_started(index, total, path, duration_s)

    def track_progress(self, index: int, done_s: float) -> None:
        self.progress.track_progress(index, done_s)

    def note(self, message: str) -> None:
        if not self.quiet:
            ui.info(message)

    def stage(self, message: str) -> None:
        self.progress.stage(message)

    def track_finished(self, result: TrackResult) -> None:
        self.progress.track_finished(result)
        if self.output == "json":
            self.progress.print_result(json.dumps(result.to_dict(), ensure_ascii=False))
        elif result.status in ("done", "skipped"):  # a skipped track's stems exist: they are its results
            for path in result.outputs.values():
                self.progress.print_result(str(path), end="\0" if self.output == "print0" else "\n")
        if result.status == "failed":
            ui.stderr.print(
                f"[bold red]Failed:[/bold red] {escape(ui.failure_text(result.error or ''))}",
                markup=True,
                emoji=False,
            )
        elif self.verbose and not self.quiet:
            ui.stderr.print(_detail(result), markup=False, emoji=False)


def _detail(result: TrackResult) -> str:
    """A finished track for ``-v``: how it ran, as far as its result knows (a track found complete on a
    retry on Ray was computed by a worker that was lost before it could tell how)."""
    detail = f"{one_line(str(result.input))}: {result.status}"
    if result.status != "done":
        return detail
    if "total" in result.timings:
        detail += f" in {_seconds(result.timings['total'])}"
    if result.device is not None:
        where = f"{result.device} of {result.node}" if result.node else result.device
        detail += f" on {where} ({result.precision}, batch {result.batch_size})"
    if result.gain is not None:
        detail += f", gain {result.gain:.3f}"
    return detail


def _seconds(seconds: float) -> str:
    """A duration for people: ``50 ms`` under a second, ``3.2 s`` from one."""
    ms = round(seconds * 1000)
    return f"{ms} ms" if ms < 1000 else f"{seconds:.1f} s"


_STATUS_STYLES = {"done": "green", "skipped": "", "failed": "red", "interrupted": "yellow"}


def _fold_note(batch: Batch) -> str | None:
    """The summary's note when a stem file sums some of the model's sources into other."""
    from stemsplit.pipeline.report import folded_sources

    folded = folded_sources(batch)
    if not folded:
        return None
    return (
        f"note: {' and '.join(folded)} are mixed into 'other' (a stem.mp4 holds exactly drums, bass, other "
        "and vocals)"
    )


def _print_summary(
    results: list[TrackResult], note: str | None, *, show_model: bool = False, wall_s: float | None = None
) -> None:
    """The summary table on stderr (with a model column when the tracks got different models), then the
    counts, the run's wall-clock time ``wall_s`` and speed, what the time column measures, and ``note``."""
    from rich.text import Text

    from stemsplit import pipeline

    rows = []
    for r in results:
        folder = str(next(iter(r.outputs.values())).parent) if r.outputs else ""
        duration = _seconds(r.duration_s) if r.duration_s is not None else ""
        spent = _seconds(r.timings["total"]) if "total" in r.timings else ""
        status = Text(r.status, style=_STATUS_STYLES[r.status])
        if r.status in ("done", "skipped") and r.warnings:  # a skipped track's: those of the run that made it
            count = len(r.warnings)
            status = Text(f"{r.status}, {count} warning{'s' if count > 1 else ''}", style="yellow")
        model = (r.model or "",) if show_model else ()
        rows.append((one_line(r.input.name), status, *model, duration, spent, one_line(folder)))
    ui.print_table(
        ("track", "status", *(("model",) if show_model else ()), "duration", "time", "output folder"),
        rows,
        console=ui.stderr,
        fold=("track", "output folder"),
    )
    counts = pipeline.summarise(results)
    warned = f" ({counts['done_with_warnings']} with warnings)" if counts["done_with_warnings"] else ""
    stopped = f", {counts['interrupted']} interrupted" if counts["interrupted"] else ""
    took = ""
    if wall_s is not None:
        took = f" in {_seconds(wall_s)}"
        separated = sum(r.duration_s or 0.0 for r in results if r.status == "done")
        if separated > 0 and wall_s > 0:
            speed = separated / wall_s
            took += f" ({speed:.1f}× real time)" if speed >= 0.1 else f" ({speed:.2f}× real time)"
    ui.stderr.print(
        f"{counts['done']} done{warned}, {counts['skipped']} skipped (already complete), "
        f"{counts['failed']} failed{stopped}{took}",
        markup=False,
        emoji=False,
    )
    if counts["done"] > 1:
        ui.stderr.print(
            "time: each track's own, from decoding to its last stem; tracks run overlapped",
            markup=False,
            emoji=False,
        )
    if note is not None:
        ui.stderr.print(note, markup=False, emoji=False)


def _print_dry_run(batch: Batch, options: SeparationOptions, *, as_json: bool, quiet: bool) -> None:
    """The ``--dry-run`` rows on stdout (JSON Lines with ``--json``), then what the run would write."""
    from stemsplit.pipeline.report import dry_run_rows, model_label

    for row in dry_run_rows(batch, options):
        if as_json:  # JSON Lines, as a real run prints them
            ui.emit(json.dumps(row, ensure_ascii=False))
        elif "error" in row:
            ui.emit(f"{row['action']:15} {ui.failure_text(row['error'])}")
        else:
            duration = _seconds(row["duration_s"]) if row["duration_s"] is not None else "? s"
            first = next(iter(row["outputs"].values()), "")
            picked = f", {row['model']}" if len(batch.models) > 1 else ""
            folder = one_line(str(Path(first).parent)) if first else ""
            ui.emit(
                f"{row['action']:15} {one_line(row['input'])}  ({duration}, {row['samplerate']} Hz, "
                f"{row['channels']} ch, {row['codec']}{picked}) → {folder}"
            )
    if not quiet:
        ui.stderr.print(
            f"model {model_label(options)}: stems {', '.join(batch.plan.written)}; nothing was separated "
            "(--dry-run)",
            markup=False,
            emoji=False,
        )
        note = _fold_note(batch)
        if note is not None:
            ui.stderr.print(note, markup=False, emoji=False)
