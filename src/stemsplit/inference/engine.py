"""The separation engine's public face: one model or bag, one track, streamed in or held in memory.

:func:`separate_stream` and :func:`separate_tensor` run one track through a
:class:`~stemsplit.inference.runner.DeviceRunner` made for the call; the pipeline makes one runner per
device for a whole batch and shares it between tracks through the
:class:`~stemsplit.inference.scheduler.Scheduler`. All offsets, pads and weights come from
:mod:`~stemsplit.inference.planner`, the per-track state lives in :mod:`~stemsplit.inference.stream`.

The float arithmetic per output sample is the reference's (``out += w * chunk`` in window order, ``/ Σw``,
then shifts, then bag weights), so float32 results equal ``demucs.apply.apply_model`` to rounding of the
model itself. Peak memory depends on the window, the batch size and the block size, never on the track
length.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stemsplit.errors import DeviceFallbackWarning
from stemsplit.inference.compute import Compute, mark_compile_cache_warm, resolve_compute, use_compile_cache
from stemsplit.inference.cpu_backend import CpuBackend
from stemsplit.inference.devices import Precision, auto_batch_size
from stemsplit.inference.runner import DeviceRunner, ModelFn
from stemsplit.inference.scheduler import Scheduler
from stemsplit.inference.stats import TrackStats, track_stats
from stemsplit.inference.stream import BagPlan, HostBlock, InputBuffer, TrackStream, make_plan

__all__ = [
    "EngineOptions",
    "ModelBag",
    "ModelFn",
    "ProgressCallback",
    "SeparationReport",
    "bag_plan",
    "make_runner",
    "separate_stream",
    "separate_tensor",
]

Block = torch.Tensor | np.ndarray


class ProgressCallback(Protocol):
    """Told after every batch of windows.

    Args:
        done: windows run so far (all lanes).
        total: windows expected in all, when the track length is known (``TrackStats.frames``), else None.
    """

    def __call__(self, done: int, total: int | None) -> None: ...


@dataclass(frozen=True)
class ModelBag:
    """One model or a weighted bag of models sharing sources, rate, channels and window length.

    Attributes:
        models: the networks (callables; an :class:`torch.nn.Module` is moved to the device and set to eval).
        sources: stem names, in the order the models output them.
        samplerate: the models' rate in Hz (sets the maximum shift, half a second).
        audio_channels: channels the models expect.
        segment_samples: window length in samples: the longest input of HT models (343,980), the default
            window of models that take any length (a bag may set it, as ``hdemucs_mmi``'s 44 s).
        weights: per model, one weight per source (None: all 1). Stem ``k`` is
            ``Σ_m weights[m][k] · out_m[k] / Σ_m weights[m][k]``.
        fixed_window: every forward runs on ``segment_samples`` samples, a short (last) window centred in a
            full-length read with real audio on its left (HT Demucs). False: the models take any length
            (Hybrid Demucs) and a short window runs at its own length, as in the reference.
    """

    models: tuple[ModelFn, ...]
    sources: tuple[str, ...]
    samplerate: int
    audio_channels: int
    segment_samples: int
    weights: tuple[tuple[float, ...], ...] | None = None
    fixed_window: bool = True

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a bag needs at least one model")
        if not self.sources:
            raise ValueError("a model needs at least one source")
        if self.segment_samples < 1 or self.samplerate < 1 or self.audio_channels < 1:
            raise ValueError("segment_samples, samplerate and audio_channels must be positive")
        if self.weights is not None:
            if len(self.weights) != len(self.models) or any(
                len(row) != len(self.sources) for row in self.weights
            ):
                raise ValueError(
                    f"weights must be {len(self.models)} rows of {len(self.sources)} floats, got {self.weights}"
                )

    @classmethod
    def single(cls, model: ModelFn) -> ModelBag:
        """Wrap one model that exposes ``sources``, ``samplerate``, ``audio_channels`` and ``segment_samples``
        (and ``fixed_window``, else True)."""
        return cls(
            models=(model,),
            sources=tuple(model.sources),  # type: ignore[attr-defined]
            samplerate=int(model.samplerate),  # type: ignore[attr-defined]
            audio_channels=int(model.audio_channels),  # type: ignore[attr-defined]
            segment_samples=int(model.segment_samples),  # type: ignore[attr-defined]
            fixed_window=bool(getattr(model, "fixed_window", True)),
        )

    def weight_rows(self) -> tuple[tuple[float, ...], ...]:
        """The weight matrix, ``(models, sources)``, with None expanded to ones."""
        if self.weights is None:
            return tuple((1.0,) * len(self.sources) for _ in self.models)
        return self.weights


@dataclass(frozen=True)
class EngineOptions:
    """How to run the engine (all defaults are the reference's, ``--precision`` aside).

    The compute settings (device, precision, batch size, threads, compile, the kernel cache and the CPU
    backend) are plain values for the standalone engine, which resolves them once per call
    (:meth:`compute`); the pipeline builds its runners from its batch's
    :class:`~stemsplit.inference.compute.Compute` instead and leaves them at their defaults.

    Attributes:
        segment_samples: window length; None = the bag's (must not exceed it: HT models are trained on
            a fixed length and pad shorter inputs themselves; for models of any length it is the longest
            window offered).
        overlap: fraction of a window shared with the next, ``[0, 1)``.
        shifts: random-delay passes to average (0 = one pass, no delay).
        seed: seeds the shift delays (``random.Random(seed)``); the same seed gives identical output.
        stems: the stems to return, in this order; None = all. Bag members that do not contribute to
            any of them are not run.
        batch_size: windows per forward; None = automatic (:func:`devices.auto_batch_size`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`.
        precision: ``auto``, ``float32`` (exact), ``bfloat16`` or ``float16`` (autocast).
        threads: CPU threads for the forward (restored afterwards); None = torch's default, one per
            physical core (every core; SMT siblings only slow the convolutions down).
        compile: ``torch.compile`` the model: True, False, or None = automatic (CUDA and long inputs).
        compile_cache_dir: where Inductor caches compiled kernels and the CPU backend its exports, under
            ``openvino/`` (None: :func:`~stemsplit.inference.compute.compile_cache_dir`).
        cpu_backend: what runs the trunk on the CPU: ``auto`` (OpenVINO on Intel CPUs, ONNX Runtime on
            others, PyTorch where neither is installed: ``cpu_backend.choose_cpu_backend``), ``torch``,
            ``openvino`` or ``onnxruntime``; None: ``$STEMSPLIT_CPU_BACKEND``, else auto.
        block_samples: block size used by :func:`separate_tensor` to feed the stream.
    """

    segment_samples: int | None = None
    overlap: float = 0.25
    shifts: int = 0
    seed: int = 0
    stems: tuple[str, ...] | None = None
    batch_size: int | None = None
    device: str | torch.device = "auto"
    precision: Precision = "auto"
    threads: int | None = None
    compile: bool | None = None
    compile_cache_dir: Path | None = None
    cpu_backend: CpuBackend | None = None
    block_samples: int = 262144

    def compute(self, seconds: float | None) -> Compute:
        """The compute settings resolved (:func:`~stemsplit.inference.compute.resolve_compute`), for
        ``seconds`` of audio when known.

        Raises:
            InvalidOptionError: as :func:`~stemsplit.inference.compute.resolve_compute`.
        """
        return resolve_compute(
            self.device,
            self.precision,
            self.compile,
            self.cpu_backend,
            threads=self.threads,
            batch_size=self.batch_size,
            seconds=seconds,
            cache_dir=self.compile_cache_dir,
        )


@dataclass
class SeparationReport:
    """What the engine did (for logs, ``--report`` and tests).

    Attributes:
        sources: stems in the emitted blocks, in order.
        samples: samples per channel emitted.
        windows: model windows run (over all lanes).
        device: where the last batch ran (differs from the requested one after a CPU fallback).
        dtype: compute precision of the last batch.
        batch_size: windows per forward at the end (halved after out-of-memory errors).
        fell_back_to_cpu: whether an out-of-memory error moved the work to the CPU.
        compiled: whether ``torch.compile`` was used.
        cpu_backend: what ran the trunk on the CPU at the end (``torch``, ``openvino`` or ``onnxruntime``).
    """

    sources: tuple[str, ...]
    samples: int = 0
    windows: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    batch_size: int = 1
    fell_back_to_cpu: bool = False
    compiled: bool = False
    cpu_backend: str = "torch"


def bag_plan(bag: ModelBag, options: EngineOptions) -> BagPlan:
    """Check ``options`` against ``bag`` and plan the run (windows, members, shifts, weights).

    Raises:
        InvalidOptionError: an invalid option or combination.
    """
    return make_plan(
        bag.sources,
        bag.weight_rows(),
        bag.samplerate,
        bag.segment_samples,
        segment=options.segment_samples,
        overlap=options.overlap,
        shifts=options.shifts,
        seed=options.seed,
        stems=options.stems,
        fixed_window=bag.fixed_window,
    )


def make_runner(
    bag: ModelBag, plan: BagPlan, compute: Compute, *, device: torch.device | None = None
) -> DeviceRunner:
    """The runner for ``bag`` on ``device`` (default: the first of ``compute.devices``), as ``compute`` says.

    Nothing is resolved here: the device, dtype, compile decision, CPU backend, threads and kernel cache all
    come from ``compute`` (the batch size too, else :func:`~stemsplit.inference.devices.auto_batch_size`
    for this device and window).

    Args:
        bag: the networks.
        plan: from :func:`bag_plan` (only its members are placed and run).
        compute: from :func:`~stemsplit.inference.compute.resolve_compute`, once per batch.
        device: one of ``compute.devices`` (the pipeline makes one runner per device of a ``-d`` list).

    Raises:
        InvalidOptionError: a batch size below 1.
    """
    device = compute.devices[0] if device is None else device
    dtype = compute.dtype
    if compute.compile.on:
        use_compile_cache(compute.cache_dir)
    backend = (
        compute.cpu_backend.name if device.type == "cpu" and compute.cpu_backend is not None else "torch"
    )
    cache = compute.cache_dir
    return DeviceRunner(
        [bag.models[m] if m in plan.members else _unused for m in range(len(bag.models))],
        device,
        dtype,
        compute.batch_size or auto_batch_size(device, dtype, plan.segment),
        fallback_device=None if device.type == "cpu" else torch.device("cpu"),
        fallback_dtype=compute.fallback_dtype,
        compile_trunk=compute.compile.on,
        threads=compute.threads,
        window=plan.segment,
        cpu_backend=backend,
        backend_cache_dir=cache / "openvino",
        on_compiled=(lambda: mark_compile_cache_warm(cache, device)) if compute.compile.on else None,
    )


def _unused(mix: torch.Tensor) -> torch.Tensor:
    """Stands in for a bag member that contributes to no requested stem (never placed, never run)."""
    raise AssertionError("a bag member that contributes to no requested stem was run")


def _as_tensor(block: Block, channels: int) -> torch.Tensor:
    t = (
        torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        if isinstance(block, np.ndarray)
        else block
    )
    if t.dim() != 2 or t.shape[0] != channels:
        raise ValueError(f"expected ({channels}, n) audio blocks, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32)


def separate_stream(
    bag: ModelBag,
    blocks: Iterable[Block],
    sink: Callable[[torch.Tensor], None],
    *,
    stats: TrackStats | None,
    options: EngineOptions | None = None,
    progress: ProgressCallback | None = None,
    runner: DeviceRunner | None = None,
) -> SeparationReport:
    """Separate a track that arrives as blocks, handing finished stem blocks to ``sink`` in order.

    Args:
        bag: the model(s) and their metadata.
        blocks: the track at ``bag.samplerate``, as (C, n) float blocks (torch or numpy; any sizes,
            ``C == bag.audio_channels``). Read once.
        sink: called with each finished block, (S, C, n) float32 CPU tensors (S = the chosen stems),
            in track order; the blocks' lengths add up to the track's length.
        stats: track normalisation (from :func:`~stemsplit.inference.stats.stats_from_blocks` over a
            first pass, or :func:`~stemsplit.inference.stats.track_stats`); None feeds the model the raw
            signal (as ``apply_model`` alone does).
        options: see :class:`EngineOptions`.
        progress: told the number of windows run after each batch.
        runner: a runner to reuse (from :func:`make_runner` with the same bag and plan; its device,
            precision, batch size and threads then apply, not those of ``options``); None makes one.

    Returns:
        A :class:`SeparationReport`.

    Raises:
        InvalidOptionError: for an invalid option or combination.
        ValueError: for blocks of the wrong shape.
        torch.OutOfMemoryError: only if even one window on the CPU does not fit.
    """
    options = options or EngineOptions()
    plan = bag_plan(bag, options)
    seconds = None if stats is None else stats.frames / bag.samplerate * max(1, plan.shifts)
    if runner is None:
        compute = options.compute(seconds)
        if compute.note is not None:
            warnings.warn(DeviceFallbackWarning(compute.note), stacklevel=2)
        runner = make_runner(bag, plan, compute)
    report = SeparationReport(sources=tuple(bag.sources[k] for k in plan.source_index))
    audio = InputBuffer(bag.audio_channels)

    def emit(block: HostBlock) -> None:
        data = block.get()
        report.samples += data.shape[-1]
        sink(data)

    stream = TrackStream(plan, audio, stats, emit, runner.device)
    scheduler = Scheduler(runner, plan.members)
    scheduler.add(stream)
    total = None if stats is None else stream.windows_for(stats.frames)

    def run(*, only_full: bool) -> None:
        while scheduler.step(only_full=only_full):
            report.windows = stream.windows_done
            if progress is not None:
                progress(report.windows, total)

    with runner:
        for block in blocks:
            audio.append(_as_tensor(block, bag.audio_channels))
            run(only_full=True)
        audio.close()
        run(only_full=False)
        scheduler.drain()
    report.windows = stream.windows_done
    report.device, report.dtype, report.batch_size = runner.device, runner.dtype, runner.batch_size
    report.fell_back_to_cpu, report.compiled = runner.fell_back, runner.compiled
    report.cpu_backend = runner.cpu_backend
    return report


def separate_tensor(
    bag: ModelBag,
    wav: torch.Tensor,
    *,
    options: EngineOptions | None = None,
    normalise: bool = True,
    progress: ProgressCallback | None = None,
    runner: DeviceRunner | None = None,
) -> torch.Tensor:
    """Separate a whole track held in memory (the convenience form of :func:`separate_stream`).

    Args:
        bag: the model(s) and their metadata.
        wav: (C, T) audio at ``bag.samplerate``.
        options: see :class:`EngineOptions`.
        normalise: apply the reference's track normalisation (:func:`track_stats`) around the models.
        progress: told the number of windows run after each batch.
        runner: a runner to reuse (see :func:`separate_stream`).

    Returns:
        (S, C, T) float32 on the CPU, stems in ``options.stems`` order (default: ``bag.sources``).
    """
    options = options or EngineOptions()
    if wav.dim() != 2:
        raise ValueError(f"expected a (channels, samples) tensor, got shape {tuple(wav.shape)}")
    wav = wav.detach().to("cpu", torch.float32)
    stats = track_stats(wav) if normalise else None
    step = max(1, options.block_samples)
    pieces: list[torch.Tensor] = []
    report = separate_stream(
        bag,
        (wav[:, i : i + step] for i in range(0, wav.shape[-1], step)),
        pieces.append,
        stats=stats,
        options=options,
        progress=progress,
        runner=runner,
    )
    if not pieces:
        return wav.new_zeros(len(report.sources), wav.shape[0], wav.shape[-1])
    return torch.cat(pieces, dim=-1)
