"""``stemsplit mix`` and ``stemsplit play``: practise along with a track's stems.

``PATH`` is a track's stem folder (stemsplit's output, or any folder of equal-length audio files), a
``.stem.mp4``, or an audio file, which is separated first by the default command's pipeline (same output
folder layout and resume: a finished track is not separated again). ``mix`` renders a balance into a file
through :mod:`stemsplit.audio.mix`; ``play`` serves the stems to a mixer page in the browser
(:mod:`stemsplit.player`). Neither imports torch for an existing stem folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stemsplit.cli import ui

if TYPE_CHECKING:
    from stemsplit.audio.mix import MixSettings
    from stemsplit.audio.stemset import StemSet

_OUTPUT_FORMATS = ("wav", "flac", "mp3")

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-n",
        metavar="NAME|PATH",
        help="The model that separates an audio file PATH (as the default command).",
    ),
]
StemsDirOpt = Annotated[
    Path,
    typer.Option(
        "--stems-dir",
        metavar="DIR",
        help="Where an audio file PATH's stems go (the default command's --out).",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", "-d", metavar="auto|cpu|cuda|cuda:N|mps", help="Where an audio file PATH is separated."
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        metavar="auto|float32|bfloat16|float16",
        help="The separation's precision (as the default command).",
    ),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download a model.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]


@dataclass(frozen=True)
class Separation:
    """How an audio file PATH is separated first: the default command's options that apply here."""

    model: str = "htdemucs"
    stems_dir: Path = Path("separated")
    device: str = "auto"
    precision: str = "auto"
    offline: bool = False


def _number(option: str, text: str, accepted: str) -> float:
    """``text`` as a finite float, or the error saying what ``option`` accepts."""
    from stemsplit.errors import InvalidOptionError

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidOptionError.bad_value(option, text, accepted)
    return value


def mix_settings(
    gain: list[str], mute: list[str], solo: list[str], tempo: str, key: str, start: str, end: str | None
) -> MixSettings:
    """The mix options, parsed and range-checked (stem names are checked once the stems are known).

    Raises:
        InvalidOptionError: a value that cannot be read or is out of range.
    """
    from stemsplit.audio.mix import KEY_RANGE, TEMPO_RANGE, MixSettings, parse_gain, parse_names
    from stemsplit.errors import InvalidOptionError

    gains = dict(parse_gain(g) for g in gain)
    settings = MixSettings(
        gains=gains,
        mute=parse_names(mute),
        solo=parse_names(solo),
        tempo=_number("--tempo", tempo, "a factor from 0.5 to 1.5"),
        key=_number("--key", key, "semitones from -12 to 12"),
        start_s=_number("--start", start, "seconds, 0 or more"),
        end_s=None if end is None else _number("--end", end, "seconds after --start"),
    )
    if not TEMPO_RANGE[0] <= settings.tempo <= TEMPO_RANGE[1]:
        raise InvalidOptionError.bad_value("--tempo", tempo, "a factor from 0.5 to 1.5")
    if not KEY_RANGE[0] <= settings.key <= KEY_RANGE[1]:
        raise InvalidOptionError.bad_value("--key", key, "semitones from -12 to 12")
    if settings.start_s < 0:
        raise InvalidOptionError.bad_value("--start", start, "seconds, 0 or more")
    if settings.end_s is not None and settings.end_s <= settings.start_s:
        raise InvalidOptionError.bad_value("--end", end, "seconds after --start")
    return settings


def _is_audio_file(path: Path) -> bool:
    return path.is_file() and not path.name.lower().endswith(".stem.mp4")


def stems_of(
    path: Path, separation: Separation, *, quiet: bool, expect: frozenset[str] = frozenset()
) -> StemSet:
    """The stems at ``path``; an audio file is separated first (or found complete and skipped).

    ``expect``: stem names the caller will use; with an audio file they are checked against the model's
    stems before any separation starts.

    Raises:
        InvalidOptionError: ``path`` does not exist, holds no stems, or a name in ``expect`` is not a stem.
        StemsplitError: separating the file failed.
    """
    from stemsplit.errors import InvalidOptionError

    if not path.exists():
        raise InvalidOptionError(
            f"{path}: no such file or folder; give a stem folder, a .stem.mp4 or an audio file"
        )
    if _is_audio_file(path):
        path = _separate(path, separation, quiet=quiet, expect=expect)
    from stemsplit.audio.stemset import find_stems

    return find_stems(path)


def _separate(path: Path, separation: Separation, *, quiet: bool, expect: frozenset[str]) -> Path:
    """Separate one audio file with the default command's pipeline; return its stem folder."""
    from stemsplit import pipeline
    from stemsplit.errors import InvalidOptionError, StemsplitError

    model, stems_dir = separation.model, separation.stems_dir
    options = pipeline.SeparationOptions(
        model=model,
        out_dir=stems_dir,
        device=separation.device,
        precision=separation.precision,  # type: ignore[arg-type]  # checked when the batch is planned
        offline=separation.offline or None,
    )
    batch = pipeline.plan_batch([str(path)], options)
    _, probed, _ = batch.tracks[0]
    if isinstance(probed, StemsplitError):
        raise probed
    unknown = sorted(expect - set(batch.plan.written))
    if unknown:
        raise InvalidOptionError(
            f"{path}: {model} makes no stem {unknown[0]!r}; its stems are {', '.join(batch.plan.written)}"
        )
    progress = _Progress(1, getattr(probed, "duration_s", None) or 0.0, quiet=quiet)
    with progress, ui.stemsplit_warnings():  # Ctrl-C: BatchInterrupted, reported by the error boundary (130)
        results = pipeline.separate_batch(
            batch, options, reporter=progress, download_reporter=ui.DownloadProgress(quiet=quiet)
        )
    result = results[0]
    if result.status != "done" and result.status != "skipped":
        raise StemsplitError(result.error or f"{path}: separation failed")
    if not quiet:
        ui.info(f"{path.name}: stems {'separated' if result.status == 'done' else 'found'} in {stems_dir}")
    return next(iter(result.outputs.values())).parent


class _Progress(ui.BatchProgress):
    """The separation's progress on stderr; nothing on stdout (the command's result comes after)."""

    def note(self, message: str) -> None:
        if not self.quiet:
            ui.info(message)


def mix_command(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="A stem folder, a .stem.mp4, or an audio file (separated first)."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="The mix: .wav, .flac or .mp3.")
    ],
    gain: Annotated[
        list[str] | None,
        typer.Option(
            "--gain", metavar="STEM=VALUE", help="A stem's gain, linear (0.5) or in dB (-6dB); repeatable."
        ),
    ] = None,
    mute: Annotated[
        list[str] | None, typer.Option("--mute", metavar="A,B", help="Leave these stems out.")
    ] = None,
    solo: Annotated[list[str] | None, typer.Option("--solo", metavar="A,B", help="Only these stems.")] = None,
    tempo: Annotated[str, typer.Option("--tempo", metavar="F", help="Speed, 0.5 to 1.5, pitch kept.")] = "1",
    key: Annotated[
        str, typer.Option("--key", metavar="N", help="Semitones, -12 to 12, tempo kept (drums unshifted).")
    ] = "0",
    start: Annotated[str, typer.Option("--start", metavar="S", help="Start, in seconds of the track.")] = "0",
    end: Annotated[
        str | None, typer.Option("--end", metavar="S", help="End, in seconds of the track.")
    ] = None,
    bit_depth: Annotated[
        str, typer.Option("--bit-depth", metavar="16|24|32f", help="Bit depth of wav/flac.")
    ] = "16",
    clip: Annotated[
        str,
        typer.Option("--clip", metavar="rescale|clamp|none", help="What to do with a mix beyond full scale."),
    ] = "rescale",
    model: ModelOpt = "htdemucs",
    stems_dir: StemsDirOpt = Path("separated"),
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Render a balance of a track's stems into one file: `stemsplit mix song.mp3 --mute bass --key -2 -o practice.mp3`."""
    with ui.error_boundary():
        from stemsplit.audio.writer import WriteOptions
        from stemsplit.errors import InvalidOptionError

        settings = mix_settings(gain or [], mute or [], solo or [], tempo, key, start, end)
        fmt = output.suffix.lower().lstrip(".")
        if fmt not in _OUTPUT_FORMATS:
            raise InvalidOptionError(
                f"-o {output}: the mix is written as .wav, .flac or .mp3; name the file with one of them",
                option="-o",
            )
        options = WriteOptions(format=fmt, bit_depth=bit_depth, clip=clip)  # type: ignore[arg-type]  # checked there
        if output.is_dir():
            raise InvalidOptionError(
                f"-o {output} is a folder; give a file name such as mix.wav", option="-o"
            )
        if not output.parent.is_dir():
            raise InvalidOptionError(
                f"-o {output}: the folder {output.parent} does not exist; create it first", option="-o"
            )
        named = settings.mute | settings.solo | frozenset(settings.gains)
        separation = Separation(model, stems_dir, device, precision, offline)
        stems = stems_of(path, separation, quiet=quiet, expect=named)
        settings.check(stems)
        from stemsplit.audio.mix import write_mix

        write_mix(stems, settings, output, options)
        ui.emit(str(output))


def play_command(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH", help="A stem folder, a .stem.mp4, or an audio file (separated first)."
        ),
    ],
    port: Annotated[int, typer.Option("--port", metavar="N", help="The port (default: a free one).")] = 0,
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="ADDR", help="Listen on ADDR, not only this computer (a tablet on the stand)."
        ),
    ] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
    model: ModelOpt = "htdemucs",
    stems_dir: StemsDirOpt = Path("separated"),
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Open the stems in a mixer in the browser: volume, mute, solo, loop, speed and key; Ctrl-C stops it.

    Prints one line on stdout, the page's address with its token.
    """
    with ui.error_boundary():
        from stemsplit.errors import InvalidOptionError

        if not 0 <= port <= 65535:
            raise InvalidOptionError.bad_value("--port", port, "a port from 1 to 65535 (0: a free one)")
        stems = stems_of(path, Separation(model, stems_dir, device, precision, offline), quiet=quiet)
        from stemsplit.player import PlayerServer

        if host not in ("127.0.0.1", "localhost", "::1"):
            ui.warn(f"--host {host}: anyone who can reach this address and has the link can play the stems")
        server = PlayerServer(stems, host=host, port=port)
        try:
            ui.emit(server.url)
            if not quiet:
                ui.info(f"{stems.source.name}: {len(stems.stems)} stems; Ctrl-C stops the player")
            if not no_browser:
                _open_browser(server.url)
            server.serve_forever()
        except KeyboardInterrupt:
            if not quiet:
                ui.info("player stopped")
        finally:
            server.close()


def _open_browser(url: str) -> None:
    """Open ``url`` in the default browser; whatever the browser prints goes to stderr, not stdout."""
    import os
    import sys
    import webbrowser

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        if not webbrowser.open(url):
            ui.warn("no browser could be opened; open the address above")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
