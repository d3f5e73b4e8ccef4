"""What a separation run computes and writes: :class:`SeparationOptions` and the stems it asks for.

Everything here is checked before any input is read or any model is loaded, so a bad option fails at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from stemsplit.audio import (
    BitDepth,
    ClipMode,
    Container,
    StemCodec,
    StemManifest,
    WriteOptions,
    fold_sources,
)
from stemsplit.errors import (
    InvalidOptionError,
)
from stemsplit.inference import EngineOptions, ModelBag, Precision, bag_plan
from stemsplit.inference.compute import Compute, resolve_compute
from stemsplit.inference.stream import BagPlan
from stemsplit.pipeline.outputs import (
    DEFAULT_TEMPLATE,
    STEM_FILE_TEMPLATE,
    TrackOutputs,
    check_template,
    plan_outputs,
)
from stemsplit.pipeline.sidecar import made_from_other_input
from stemsplit.weights.cache import ModelCache
from stemsplit.weights.download import DownloadReporter, Transport
from stemsplit.weights.registry import DEFAULT_MODEL

OtherMethod = Literal["add", "minus", "none"]
CompileMode = Literal["auto", "on", "off"]

STEM_FILE = "stem.mp4"
"""The name of a track's one output with ``--format stem.mp4`` (in ``TrackOutputs.stems`` and results)."""

CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "--format": ("wav", "flac", "mp3", "stem.mp4"),
    "--bit-depth": ("16", "24", "32f"),
    "--clip": ("rescale", "clamp", "none"),
    "--other-method": ("add", "minus", "none"),
    "--precision": ("auto", "float32", "bfloat16", "float16"),
    "--compile": ("auto", "on", "off"),
    "--stem-codec": ("aac", "alac"),
})  # fmt: skip
"""The options that take one of a few words, and those words."""

_RANGES: Mapping[str, str] = MappingProxyType({
    "--mp3-bitrate": "a bitrate from 8 to 320 (kbit/s)",
    "--aac-bitrate": "a bitrate from 32 to 512 (kbit/s)",
    "--sample-rate": "a rate from 8000 to 384000 (Hz), or input",
    "--segment": "a window in seconds, more than 0",
    "--overlap": "a fraction from 0 to 0.99",
    "--shifts": "a whole number, 0 or more",
    "--seed": "a whole number",
    "--batch-size": "a whole number, 1 or more",
    "--jobs": "a whole number, 1 or more",
    "--stems": "stem names separated by commas, such as vocals,drums",
})  # fmt: skip


def accepted(option: str) -> str:
    """What ``option`` accepts, in words (``16, 24 or 32f``), for the messages of bad values."""
    if option in CHOICES:
        *rest, last = CHOICES[option]
        return f"{', '.join(rest)} or {last}"
    return _RANGES[option]


# --- options -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeparationOptions:
    """Every setting of a separation run (the CLI's options; defaults are the CLI's).

    Attributes:
        model: registry name or path to a ``.th`` / ``.safetensors`` / bag ``.yaml``.
        out_dir: output root (``--out``).
        filename: output path template below ``out_dir`` (see :mod:`stemsplit.pipeline.outputs`); None =
            the format's default (:attr:`template`).
        stems: keep only these stems (``--stems``); None = all.
        two_stems: write this stem and ``no_<stem>`` (``--two-stems``).
        other_method: how ``no_<stem>`` is made: ``add`` (sum of the other stems), ``minus``
            (mix − stem), ``none`` (not written).
        format, bit_depth, mp3_bitrate, clip, stem_codec, aac_bitrate: encoding (see
            :class:`stemsplit.audio.WriteOptions`). ``format="stem.mp4"`` writes one Native Instruments stem
            file per track (master, drums, bass, other, vocals; other sources summed into other) and
            cannot be combined with ``stems`` or ``two_stems``.
        stem_names, stem_colors: a stem file's names and ``#RRGGBB`` colours, by stem (``{"vocals":
            "Acapella"}``); the others keep NI's defaults (see :class:`stemsplit.audio.StemManifest`).
        samplerate: output rate in Hz; None = the input's. mp3 has only the MPEG rates
            (:data:`~stemsplit.audio.writer.MP3_SAMPLERATES`): another explicit rate is refused, and an
            input at another rate gives 44100 Hz stems with a :class:`~stemsplit.errors.SampleRateWarning`.
        device, precision, batch_size, jobs: compute (see :class:`stemsplit.inference.EngineOptions`);
            ``device`` may name several (``cuda:0,cuda:1``, ``cuda:all``).
        compile: ``torch.compile`` the network trunk: ``on``, ``off``, or ``auto`` (on CUDA, for a batch long
            enough to repay the compilation; see :func:`stemsplit.inference.compute.compile_choice`).
        segment: window in seconds, at most the model's (7.8 s for HT models, 44 s for ``hdemucs_mmi``); None =
            the model's.
        overlap, shifts, seed: overlap-add and the random-shift trick.
        overwrite: redo tracks whose stems are complete (default: skip them).
        offline: never download (None: ``STEMSPLIT_OFFLINE``).
    """

    model: str = DEFAULT_MODEL
    out_dir: Path = Path("separated")
    filename: str | None = None
    stems: tuple[str, ...] | None = None
    two_stems: str | None = None
    other_method: OtherMethod = "add"
    format: Container = "wav"
    bit_depth: BitDepth = "16"
    mp3_bitrate: int = 320
    samplerate: int | None = None
    clip: ClipMode = "rescale"
    stem_codec: StemCodec = "aac"
    aac_bitrate: int = 256
    stem_names: Mapping[str, str] | None = None
    stem_colors: Mapping[str, str] | None = None
    device: str = "auto"
    precision: Precision = "auto"
    batch_size: int | None = None
    compile: CompileMode = "auto"
    jobs: int | None = None
    segment: float | None = None
    overlap: float = 0.25
    shifts: int = 0
    seed: int = 0
    overwrite: bool = False
    offline: bool | None = None

    def __post_init__(self) -> None:
        for option, value in (
            ("--format", self.format),
            ("--bit-depth", self.bit_depth),
            ("--clip", self.clip),
            ("--other-method", self.other_method),
            ("--precision", self.precision),
            ("--compile", self.compile),
            ("--stem-codec", self.stem_codec),
        ):
            if value not in CHOICES[option]:
                raise InvalidOptionError.bad_value(option, value, accepted(option))
        for ok, option, number in (
            (8 <= self.mp3_bitrate <= 320, "--mp3-bitrate", self.mp3_bitrate),
            (32 <= self.aac_bitrate <= 512, "--aac-bitrate", self.aac_bitrate),
            (self.samplerate is None or 8000 <= self.samplerate <= 384000, "--sample-rate", self.samplerate),
            (self.segment is None or self.segment > 0, "--segment", self.segment),
            (0 <= self.overlap <= 0.99, "--overlap", self.overlap),  # a stride of 1 % of a window at least
            (self.shifts >= 0, "--shifts", self.shifts),
            (self.batch_size is None or self.batch_size >= 1, "--batch-size", self.batch_size),
            (self.jobs is None or self.jobs >= 1, "--jobs", self.jobs),
        ):
            if not ok:
                raise InvalidOptionError.bad_value(option, number, accepted(option))
        write = self.write_options()  # flac with 32f, ALAC with 32f
        check_template(self.template, stem_file=write.is_stem_file)
        if self.samplerate is not None:
            write.check_samplerate(self.samplerate)  # mp3 at 96 kHz: refused, not silently changed
        if self.stems is not None and self.two_stems is not None:
            raise InvalidOptionError("use either --stems or --two-stems, not both", option="--stems")
        self._check_stem_file(write.is_stem_file)

    def _check_stem_file(self, stem_file: bool) -> None:
        """Refuse what a stem file cannot do, and names or colours without one; check those."""
        if stem_file:
            for option, value in (("--two-stems", self.two_stems), ("--stems", self.stems)):
                if value is not None:
                    raise InvalidOptionError(
                        f"{option} cannot be used with --format stem.mp4: a stem file always holds drums, "
                        "bass, other and vocals (Traktor and Mixxx need all four); use --format wav, flac "
                        f"or mp3 for {option}",
                        option=option,
                    )
            self.stem_manifest()  # validates names and colours
            return
        for option, given in (("--stem-names", self.stem_names), ("--stem-colors", self.stem_colors)):
            if given:
                raise InvalidOptionError(
                    f"{option} names the stems of a stem file; add --format stem.mp4", option=option
                )

    @property
    def template(self) -> str:
        """The output path template: :attr:`filename`, or the format's default."""
        if self.filename is not None:
            return self.filename
        return STEM_FILE_TEMPLATE if self.format == "stem.mp4" else DEFAULT_TEMPLATE

    def write_options(self) -> WriteOptions:
        """The encoder settings."""
        return WriteOptions(
            format=self.format,
            bit_depth=self.bit_depth,
            mp3_bitrate=self.mp3_bitrate,
            clip=self.clip,
            stem_codec=self.stem_codec,
            aac_bitrate=self.aac_bitrate,
        )

    def stem_manifest(self) -> StemManifest:
        """A stem file's names and colours: NI's defaults with :attr:`stem_names` and :attr:`stem_colors`.

        Raises:
            InvalidOptionError: a name or colour of a stem a stem file does not have, or an invalid one.
        """
        return StemManifest().relabel(names=self.stem_names, colors=self.stem_colors)

    def output_settings(self) -> dict[str, Any]:
        """The settings that change the written files (recorded in ``stemsplit.json``)."""
        keys = ("stems", "two_stems", "other_method", "format", "bit_depth", "samplerate", "clip", "segment",
                "overlap", "shifts", "seed")  # fmt: skip
        values = {k: getattr(self, k) for k in keys}
        # Settings that cannot change the files in this combination are recorded as None, so that
        # changing them does not make finished tracks look stale.
        values["other_method"] = self.other_method if self.two_stems else None
        values["seed"] = self.seed if self.shifts else None
        stem_file = self.format == "stem.mp4"
        alac = stem_file and self.stem_codec == "alac"
        values["bit_depth"] = self.bit_depth if self.format in ("wav", "flac") or alac else None
        values["mp3_bitrate"] = self.mp3_bitrate if self.format == "mp3" else None
        if stem_file:  # only then: sidecars of the other formats stay valid across versions
            manifest = self.stem_manifest()
            values["stem_codec"] = self.stem_codec
            values["aac_bitrate"] = None if alac else self.aac_bitrate
            values["stem_names"], values["stem_colors"] = list(manifest.names), list(manifest.colors)
        values["precision"] = self.precision  # reduced precision changes the stems slightly
        values["stems"] = list(self.stems) if self.stems else None
        return values


# --- which stems are computed and written --------------------------------------------------------


@dataclass(frozen=True)
class StemPlan:
    """Which stems the engine computes and which files are written from them.

    Attributes:
        computed: stems the engine returns, in order.
        written: output names, in order (``no_<stem>`` included for ``--two-stems``).
        needs_mix: ``no_<stem>`` is made as mix − stem, so the input must be kept until then.
        stem_file: every stem goes into one ``stem.mp4`` (``--format stem.mp4``).
    """

    computed: tuple[str, ...]
    written: tuple[str, ...]
    needs_mix: bool = False
    stem_file: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        """The names of a track's output files: the written stems, or :data:`STEM_FILE`."""
        return (STEM_FILE,) if self.stem_file else self.written

    def combine(self, block: np.ndarray, mix: np.ndarray | None) -> dict[str, np.ndarray]:
        """Engine output (S, C, n) (+ the input (C, n) if needed) → {written stem: (C, n)}."""
        if len(self.written) == len(self.computed) and self.written == self.computed:
            return {stem: block[i] for i, stem in enumerate(self.computed)}
        kept = self.written[0]
        stem = block[self.computed.index(kept)]
        out = {kept: stem}
        if len(self.written) == 2:
            if self.needs_mix:
                assert mix is not None
                out[self.written[1]] = mix - stem
            else:
                out[self.written[1]] = (
                    block.sum(axis=0) - stem if len(self.computed) > 1 else np.zeros_like(stem)
                )
        return out


def plan_stems(sources: Sequence[str], options: SeparationOptions) -> StemPlan:
    """Resolve ``--stems`` / ``--two-stems`` / ``--other-method`` against the model's sources.

    Raises:
        InvalidOptionError: a stem the model does not produce (the error lists the ones it does), or
            ``--format stem.mp4`` with a model lacking drums, bass or vocals.
    """
    sources = tuple(sources)
    if options.format == "stem.mp4":
        fold_sources(sources)  # every source is computed; the writer folds them into the four stems
        return StemPlan(sources, sources, stem_file=True)

    def check(names: Sequence[str], option: str) -> None:
        for name in names:
            if name not in sources:
                raise InvalidOptionError(
                    f"{option} {name!r}: this model's stems are {', '.join(sources)}", option=option
                )

    if options.two_stems is not None:
        stem = options.two_stems
        check([stem], "--two-stems")
        if options.other_method == "add":
            return StemPlan(sources, (stem, f"no_{stem}"))
        if options.other_method == "minus":
            return StemPlan((stem,), (stem, f"no_{stem}"), needs_mix=True)
        return StemPlan((stem,), (stem,))
    if options.stems is not None:
        check(options.stems, "--stems")
        chosen = tuple(dict.fromkeys(options.stems))
        return StemPlan(chosen, chosen)
    return StemPlan(sources, sources)


def check_segment(segment: float | None, limit: Fraction, model: str | None = None) -> None:
    """Refuse a ``--segment`` (seconds) longer than the model's window ``limit`` (seconds).

    The window is the longest input an HT model takes (it was trained on that length), and the window a
    Hybrid Demucs model runs on by default (44 s for ``hdemucs_mmi``; longer ones only cost memory: its
    local attention grows with the square of the window).

    Args:
        segment: ``--segment``, or None (nothing to check).
        limit: the window in seconds.
        model: the model's name, for the message.

    Raises:
        InvalidOptionError: it is longer; the message names the limit (and the model).
    """
    # As typed (shortest repr): 7.8 must not fail for being 7.8000000000000001 in binary.
    if segment is not None and Fraction(repr(float(segment))) > limit:
        most = math.floor(limit * 100) / 100  # rounded down: the value suggested must be accepted
        name = f" ({model})" if model else ""
        raise InvalidOptionError(
            f"--segment {segment:g} is longer than the model's {float(limit):.3g} s window{name}, the longest "
            f"it accepts; use {most:g} or less",
            option="--segment",
        )


def engine_options(bag: ModelBag, options: SeparationOptions, stems: Sequence[str]) -> EngineOptions:
    """What the engine computes for a run: windows, shifts and stems (how it computes is the batch's
    :class:`~stemsplit.inference.compute.Compute`, from :func:`compute_for`).

    Raises:
        InvalidOptionError: ``--segment`` longer than the model's window (checked here, on the loaded
            weights, whatever :func:`plan_batch` could check before).
    """
    segment = None
    if options.segment is not None:
        check_segment(options.segment, Fraction(bag.segment_samples, bag.samplerate))
        segment = int(options.segment * bag.samplerate)
    return EngineOptions(
        segment_samples=segment,
        overlap=options.overlap,
        shifts=options.shifts,
        seed=options.seed,
        stems=tuple(stems),
    )


def plan_track_outputs(
    inputs: Sequence[Path], models: Sequence[str], options: SeparationOptions, plan: StemPlan
) -> list[TrackOutputs]:
    """The output paths of ``inputs`` in a run (the one way the batch and the library plan them): the
    run's folder, template and format, the plan's files, and stems made from another input passed over.

    Args:
        inputs: the input files; models: the model of each (its ``{model}``).

    Raises:
        InvalidOptionError: as :func:`~stemsplit.pipeline.outputs.plan_outputs`.
    """
    return plan_outputs(
        inputs,
        out_dir=options.out_dir,
        template=options.template,
        models=models,
        stems=plan.files,
        ext=options.write_options().extension,
        owned_by_other=made_from_other_input,
    )


def run_plan(bag: ModelBag, options: SeparationOptions, stems: Sequence[str]) -> BagPlan:
    """The engine's plan of a run of ``bag`` (windows, members, shifts, weights): the one way the pipeline,
    the library and Ray workers plan before :func:`~stemsplit.inference.make_runner`.

    Raises:
        InvalidOptionError: as :func:`engine_options` and :func:`~stemsplit.inference.bag_plan`.
    """
    return bag_plan(bag, engine_options(bag, options, stems))


def compute_for(options: SeparationOptions, *, seconds: float | None = None) -> Compute:
    """How a run of ``options`` computes (:func:`~stemsplit.inference.compute.resolve_compute`), for
    ``seconds`` of audio when known.

    Raises:
        InvalidOptionError: as :func:`~stemsplit.inference.compute.resolve_compute`.
    """
    return resolve_compute(
        options.device,
        options.precision,
        {"auto": None, "on": True, "off": False}[options.compile],
        threads=options.jobs,
        batch_size=options.batch_size,
        seconds=seconds,
    )


def model_cache(options: SeparationOptions, reporter: DownloadReporter | None = None) -> ModelCache:
    """The weights cache of a run: the environment's, with the run's ``--offline`` and download progress."""
    return ModelCache(transport=Transport(offline=options.offline, reporter=reporter))
