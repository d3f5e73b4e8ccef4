"""The library entry point: ``Separator`` loads a model once and separates tensors or files.

::

    from stemsplit import Separator

    sep = Separator(model="htdemucs", device="auto")
    stems = sep.separate_tensor(wav, samplerate)          # {stem: tensor (channels, samples)}
    paths = sep.separate_file("song.mp3", out_dir="separated")  # {stem: Path}

Problems that do not stop the work (a truncated input, channels downmixed, tags not copied, a
near-silent stem, a fall back to the CPU) are issued through Python's :mod:`warnings` module as
:class:`~stemsplit.errors.StemsplitWarning` subclasses, so the usual filters apply::

    import warnings
    from stemsplit.errors import StemsplitWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StemsplitWarning)
        sep.separate_file("song.mp3")

:meth:`Separator.separate_file_result` also returns them in ``TrackResult.warnings``, whatever the filters.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemsplit.audio import convert
from stemsplit.errors import InvalidOptionError
from stemsplit.inference import DeviceRunner, ModelBag, make_runner, separate_tensor
from stemsplit.pipeline import (
    SeparationOptions,
    TrackResult,
    compute_for,
    engine_options,
    model_cache,
    plan_stems,
    plan_track_outputs,
    run_plan,
    separate_track,
    warn_compute,
)
from stemsplit.pipeline.sidecar import Provenance
from stemsplit.weights.download import DownloadReporter
from stemsplit.weights.loading import describe_model, load_model, weights_identity


class Separator:
    """A loaded model plus the settings to run it with.

    Args:
        model: registry name (downloaded on first use) or a path to a ``.th`` / ``.safetensors`` / bag
            ``.yaml``.
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        download_reporter: progress of a first-use download.
        **settings: any other :class:`~stemsplit.pipeline.SeparationOptions` field (``precision``,
            ``segment``, ``overlap``, ``shifts``, ``seed``, ``batch_size``, ``jobs``, ``offline`` and the
            output settings used by :meth:`separate_file`).

    Raises:
        UnknownModelError, ModelUnavailableError, CheckpointError: the model cannot be obtained or read.
        InvalidOptionError: an invalid setting.

    Warns:
        SlowPrecisionWarning: once, for an explicit ``precision`` this device only emulates.
        StemsplitWarning: its subclasses, through :mod:`warnings` (see the module's docstring), as they
            happen; the file methods also keep a track's warnings in its result.
    """

    def __init__(
        self,
        model: str = "htdemucs",
        device: str = "auto",
        *,
        download_reporter: DownloadReporter | None = None,
        **settings: Any,
    ) -> None:
        self.options = SeparationOptions(model=model, device=device, **settings)
        self.compute = compute_for(self.options)  # resolved once: every runner of this separator uses it
        warn_compute(self.compute)  # once per separator, before any work
        self.model = describe_model(model)
        self.bag: ModelBag = load_model(self.model, model_cache(self.options, download_reporter))
        self._runners: dict[tuple[int, ...], DeviceRunner] = {}  # models placed once, per set of members

    def _runner(self, options: SeparationOptions, stems: tuple[str, ...]) -> DeviceRunner:
        """The long-lived runner for the bag members these stems need (made on first use)."""
        plan = run_plan(self.bag, options, stems)
        runner = self._runners.get(plan.members)
        if runner is None:
            runner = self._runners[plan.members] = make_runner(self.bag, plan, self.compute)
        return runner

    @property
    def sources(self) -> tuple[str, ...]:
        """The stems this model produces, in order."""
        return self.bag.sources

    @property
    def samplerate(self) -> int:
        """The rate the model works at, in Hz."""
        return self.bag.samplerate

    def separate_tensor(self, wav: torch.Tensor, samplerate: int | None = None) -> dict[str, torch.Tensor]:
        """Separate audio held in memory.

        Args:
            wav: (channels, samples) or (samples,) float audio, full scale 1.0; 1 or 2 channels.
            samplerate: its rate in Hz (default: the model's); other rates are resampled in and out.

        Returns:
            ``{stem: (channels, samples)}`` float32 CPU tensors, same channel count, rate and length as
            ``wav``.

        Warns:
            DeviceFallbackWarning: the accelerator ran out of memory and the CPU finished the work.
        """
        rate = samplerate or self.samplerate
        audio = wav.detach().to("cpu", torch.float32)
        mono_input = audio.dim() == 1
        if mono_input:
            audio = audio[None]
        if audio.dim() != 2 or audio.shape[0] not in (1, 2):
            raise InvalidOptionError(
                f"expected (channels, samples) with 1 or 2 channels, got {tuple(wav.shape)}"
            )
        channels, length = audio.shape
        model_in = convert(audio.numpy(), rate, self.samplerate, channels=self.bag.audio_channels)
        plan = plan_stems(self.sources, self.options)
        stems = separate_tensor(
            self.bag,
            torch.from_numpy(np.ascontiguousarray(model_in)),
            options=engine_options(self.bag, self.options, plan.computed),
            runner=self._runner(self.options, plan.computed),
        )
        out = plan.combine(stems.numpy(), model_in if plan.needs_mix else None)
        result = {}
        for name, stem in out.items():
            back = convert(
                np.ascontiguousarray(stem, dtype=np.float32), self.samplerate, rate, channels=channels
            )
            if back.shape[1] < length:  # there and back can round to one frame short: pad, as files are
                back = np.pad(back, ((0, 0), (0, length - back.shape[1])))
            tensor = torch.from_numpy(np.ascontiguousarray(back[:, :length]))
            result[name] = tensor[0] if mono_input else tensor
        return result

    def separate_file(
        self, path: Path | str, out_dir: Path | str = "separated", **output: Any
    ) -> dict[str, Path]:
        """Separate one audio file and write its stems (atomically), with the same ``stemsplit.json`` as the
        command writes, so the command's re-runs recognise them. The file is always separated again (no
        skipping); stems in the output folder made from another input are kept, and this file's go to
        the next suffixed name, as with the command.

        Args:
            path: the input file (any format :mod:`stemsplit.audio` reads).
            out_dir: output root.
            **output: output settings overriding the separator's (``filename``, ``format``,
                ``bit_depth``, ``samplerate``, ``clip``, ``two_stems``, ``stems`` …).

        Returns:
            ``{stem: path}`` of the written files (``{"stem.mp4": path}`` with ``format="stem.mp4"``).

        Warns:
            StemsplitWarning: e.g. :class:`~stemsplit.errors.TruncatedAudioWarning`,
                :class:`~stemsplit.errors.DownmixWarning`, :class:`~stemsplit.errors.TagCopyWarning`,
                :class:`~stemsplit.errors.SilentInputWarning` (the input's peak below
                :data:`~stemsplit.pipeline.NEAR_SILENT_DBFS`, -60 dBFS), else
                :class:`~stemsplit.errors.NearSilentStemWarning` (a stem's), issued as they happen. Use
                :meth:`separate_file_result` to get them as data as well.
        """
        result = self.separate_file_result(path, out_dir, **output)
        return dict(result.outputs)

    def separate_file_result(
        self, path: Path | str, out_dir: Path | str = "separated", **output: Any
    ) -> TrackResult:
        """Like :meth:`separate_file`, returning the full :class:`~stemsplit.pipeline.TrackResult`.

        Its ``warnings`` hold every stemsplit warning issued for the track (kind and message), even those
        that the :mod:`warnings` filters hide; they are issued through :mod:`warnings` as well.
        """
        options = dataclasses.replace(self.options, out_dir=Path(out_dir), **output)
        plan = plan_stems(self.sources, options)
        path = Path(path)
        (outputs,) = plan_track_outputs([path], [self.model.name], options, plan)
        provenance = Provenance(self.model.name, weights_identity(self.model), options.output_settings())
        runner = self._runner(options, plan.computed)
        return separate_track(self.bag, path, outputs, options, plan, runner=runner, provenance=provenance)
