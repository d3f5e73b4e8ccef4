"""How a batch computes, decided once: devices, precision, compile, the CPU backend, threads.

:func:`resolve_compute` takes plain values (the options as typed) and returns a frozen :class:`Compute`; the
pipeline resolves it once per batch (a Ray worker once for its node), and every runner of the batch is built
from it (:func:`~stemsplit.inference.engine.make_runner`), so no runner reads an option again. ``-v``,
``stemsplit doctor`` and the slow-precision warning word the same object.

The compile policy (:func:`compile_choice`) is arithmetic. Compiling the trunk (``torch.compile``) costs a
compile time once per process and saves time on every audio second after it, so it pays when

    seconds x (1 / EAGER_SPEED - 1 / COMPILED_SPEED) > compile time

with ``seconds`` the audio the batch will run through the networks (tracks x shifts) and the compile time
:data:`WARM_COMPILE_S` when the compiled-kernel cache already holds this GPU's kernels
(:func:`compile_cache_warm`), else :data:`COLD_COMPILE_S`. With the figures below the saving is 1.14 ms per
audio second, so compiling pays after about 2.9 hours of audio with a warm cache and 14.7 hours with a cold
one. Both sides grow with the number of networks in a bag, so the ratio holds for bags. Only CUDA compiles
automatically (on the CPU Inductor needs a C++ compiler); ``--compile on`` forces it anywhere, ``off`` never.

The kernel cache lives in ``<cache root>/compiled`` (the stemsplit cache folder; Inductor's kernels go to
``$TORCHINDUCTOR_CACHE_DIR`` instead when the user set it); a compiled run leaves a marker there
(``stemsplit-warm/``), which :func:`compile_cache_warm` and ``stemsplit doctor`` read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from stemsplit import settings
from stemsplit.inference.accelerator import usable_devices
from stemsplit.inference.cpu_backend import BackendChoice, resolve_cpu_backend
from stemsplit.inference.devices import (
    PrecisionChoice,
    choose_precision,
    compile_failed,
    resolve_devices,
    thread_count,
)

__all__ = [
    "COLD_COMPILE_S",
    "COMPILED_SPEED",
    "EAGER_SPEED",
    "WARM_COMPILE_S",
    "CompileChoice",
    "Compute",
    "compile_cache_dir",
    "compile_cache_warm",
    "compile_choice",
    "mark_compile_cache_warm",
    "resolve_compute",
]

# The policy's inputs. Not measured here: from issue 26 / turn-1 H100 (full-size htdemucs, float16, batched).
EAGER_SPEED = 574.0
"""Eager float16 trunk, batched, in times real time (not measured here, from issue 26 / turn-1 H100)."""
COMPILED_SPEED = 1650.0
"""Compiled float16 trunk, batched, in times real time (not measured here, from issue 26 / turn-1 H100)."""
COLD_COMPILE_S = 60.0
"""Seconds of a compile with an empty kernel cache (not measured here, from issue 26 / turn-1 H100)."""
WARM_COMPILE_S = 12.0
"""Seconds of a compile whose kernels are cached on disk (not measured here, from issue 26 / turn-1 H100:
its "pays back after about 3 hours" at the saving above)."""

SAVING_PER_SECOND = 1.0 / EAGER_SPEED - 1.0 / COMPILED_SPEED
"""Device seconds that compiling saves per audio second (1.14 ms with the figures above)."""

_WARM = "stemsplit-warm"


@dataclass(frozen=True)
class CompileChoice:
    """Whether the trunk is compiled, and why (one line for ``-v`` and ``doctor``)."""

    on: bool
    why: str


@dataclass(frozen=True)
class Compute:
    """How a batch computes (resolved once, by :func:`resolve_compute`).

    Attributes:
        devices: the devices, one runner each (``cuda:0,cuda:1`` gives two).
        precision: the dtype the trunk runs in on ``devices[0]``, and why.
        compile: whether the trunk is compiled, and why.
        cpu_backend: on the CPU, what runs the trunk, and why (None on other devices).
        threads: CPU intra-op threads while a runner works (None: torch's own setting).
        batch_size: windows per forward as asked (None: from free memory on CUDA, 1 elsewhere).
        cache_dir: the compiled-kernel cache; the OpenVINO exports live in its ``openvino/``.
        fallback_dtype: the dtype on the CPU, where an accelerator that runs out of memory hands its work.
        note: why the device is not the one ``auto`` would have picked (a GPU that cannot run this torch),
            warned once per run; else None.
        compile_asked: ``--compile`` as asked (True/False forced, None automatic), for :meth:`for_audio`.
        cpu_fallback: ``--device auto`` chose an accelerator, so a GPU failure mid-run moves the batch to the
            CPU (:meth:`on_cpu`) rather than failing its tracks.
    """

    devices: tuple[torch.device, ...]
    precision: PrecisionChoice
    compile: CompileChoice
    cpu_backend: BackendChoice | None
    threads: int | None
    batch_size: int | None
    cache_dir: Path
    fallback_dtype: torch.dtype = torch.float32
    note: str | None = None
    compile_asked: bool | None = None
    cpu_fallback: bool = False

    @property
    def device(self) -> str:
        """The devices as ``--device`` would name them (``cpu``, ``cuda:0,cuda:1`` ...)."""
        return ",".join(map(str, self.devices))

    @property
    def dtype(self) -> torch.dtype:
        """The trunk's compute dtype."""
        return self.precision.dtype

    def describe(self) -> str:
        """One line for ``-v``: ``cpu, float32 (why), openvino (why)``; on CUDA also the batch size, the
        compile decision with its numbers and whether the kernel cache is warm."""
        dtype = str(self.dtype).removeprefix("torch.")
        line = f"{self.device}, {dtype} ({self.precision.why})"
        if self.cpu_backend is not None:
            line += f", {self.cpu_backend.name} ({self.cpu_backend.why})"
        detail = self.cuda_detail()
        if detail is not None:
            line += f", {detail}"
        elif self.compile.on:
            line += f", {self.compile.why}"
        return line

    def on_cpu(self) -> Compute:
        """This compute moved to the CPU after the accelerator failed (``--device auto`` only): float32, or
        what ``auto`` picks there, uncompiled, in PyTorch."""
        cpu = torch.device("cpu")
        return replace(
            self,
            devices=(cpu,),
            precision=choose_precision("auto", cpu),
            compile=CompileChoice(False, "not compiled: the batch moved to the CPU"),
            cpu_backend=BackendChoice("torch", "PyTorch: the batch moved to the CPU after the GPU failed"),
            batch_size=None,
            cpu_fallback=False,
        )

    def cuda_detail(self) -> str | None:
        """On CUDA, the batch size, the compile decision with the policy's numbers, and whether the kernel
        cache is warm, in one line (for ``-v`` and ``doctor``); None on other devices."""
        if self.devices[0].type != "cuda":
            return None
        batch = "from free memory" if self.batch_size is None else str(self.batch_size)
        warm = "warm" if compile_cache_warm(self.cache_dir, self.devices[0]) else "cold"
        return f"batch size {batch}, {self.compile.why}; kernel cache {warm} ({self.cache_dir})"

    def for_audio(self, seconds: float | None) -> Compute:
        """This compute with the compile decision made for ``seconds`` of audio (known once the batch's
        inputs are probed; the rest is not resolved again)."""
        warm = compile_cache_warm(self.cache_dir, self.devices[0])
        choice = compile_choice(self.compile_asked, self.devices[0], seconds, warm=warm)
        return replace(self, compile=choice)


def resolve_compute(
    device: str | torch.device,
    precision: str,
    compile: bool | None,
    cpu_backend: str | None = None,
    *,
    threads: int | None = None,
    batch_size: int | None = None,
    seconds: float | None = None,
    cache_dir: Path | None = None,
) -> Compute:
    """Resolve how a batch computes, once (cheap: no model, no input).

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, a comma-separated list, ``cuda:all``, ``mps`` or a
            :class:`torch.device`.
        precision: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        compile: True/False forces ``torch.compile``; None decides by :func:`compile_choice`.
        cpu_backend: ``auto``, ``torch`` or ``openvino``; None: ``$STEMSPLIT_CPU_BACKEND``, else auto.
        threads: CPU threads (None: torch's default).
        batch_size: windows per forward (None: automatic).
        seconds: the audio the batch will run (tracks x shifts), when known.
        cache_dir: the compiled-kernel cache (None: :func:`compile_cache_dir`).

    Raises:
        InvalidOptionError: an unknown or unavailable device (a GPU this torch has no kernels for
            included, when it was named), an unknown precision or CPU backend, the OpenVINO backend asked
            for but not installed, or ``threads`` below 1.
    """
    if threads is not None:
        thread_count(threads)  # refused here, before any work
    named = device if isinstance(device, torch.device) else None
    devices, note = usable_devices([named] if named is not None else resolve_devices(str(device)), device)
    chosen = choose_precision(precision, devices[0])
    cache = compile_cache_dir(cache_dir)
    warm = compile_cache_warm(cache, devices[0])
    compiling = compile_choice(compile, devices[0], seconds, warm=warm)
    backend = None
    if devices[0].type == "cpu":
        backend = resolve_cpu_backend(cpu_backend, chosen.dtype, compiled=compiling.on)
    cpu = torch.device("cpu")
    fallback = choose_precision("float32" if precision == "float32" else "auto", cpu).dtype
    auto = device == "auto" and devices[0].type != "cpu"
    return Compute(
        tuple(devices), chosen, compiling, backend, threads, batch_size, cache, fallback, note, compile, auto
    )


def compile_choice(
    requested: bool | None, device: torch.device, seconds: float | None, *, warm: bool
) -> CompileChoice:
    """Whether to ``torch.compile`` the trunk (pure; see the module docstring for the formula).

    Args:
        requested: True/False forces the choice (``--compile on``/``off``); None decides.
        device: the compute device (only CUDA compiles automatically).
        seconds: the audio the batch runs through the networks (None: unknown, so no compile).
        warm: the compiled-kernel cache holds this GPU's kernels (:func:`compile_cache_warm`).

    Automatic mode also stops compiling for the rest of the process once compiling failed
    (:func:`~stemsplit.inference.devices.note_compile_failure`).
    """
    if requested is not None:
        return CompileChoice(
            requested, "compiled, as --compile on asks" if requested else "not compiled (--compile off)"
        )
    if device.type != "cuda":
        return CompileChoice(False, "not compiled: automatic compiling is for CUDA only")
    if compile_failed():
        return CompileChoice(False, "not compiled: torch.compile failed earlier in this process")
    cost = WARM_COMPILE_S if warm else COLD_COMPILE_S
    pays_after = cost / SAVING_PER_SECOND
    state = "warm" if warm else "cold"
    rule = (
        f"a {state}-cache compile costs about {cost:.0f} s and saves {SAVING_PER_SECOND * 1e3:.2f} ms per "
        f"audio second ({EAGER_SPEED:.0f}x eager, {COMPILED_SPEED:.0f}x compiled; H100 figures, not measured "
        f"here), so it pays after {pays_after / 3600:.1f} h of audio"
    )
    if seconds is None:
        return CompileChoice(False, f"compiled only for {pays_after / 3600:.1f} h of audio or more ({rule})")
    if seconds * SAVING_PER_SECOND > cost:
        return CompileChoice(True, f"compiled: {seconds / 3600:.1f} h of audio, and {rule}")
    return CompileChoice(False, f"not compiled: {seconds / 3600:.1f} h of audio, and {rule}")


def compile_cache_dir(path: Path | None = None) -> Path:
    """The compiled-kernel cache: ``path``, else ``<cache root>/compiled`` (the same folder every run, so a
    later run finds the kernels warm). Inductor's kernels go there unless ``$TORCHINDUCTOR_CACHE_DIR`` is set
    (:func:`use_compile_cache`); the OpenVINO exports (``openvino/``) and the warm marker always do. The
    variable is not read here: torch sets it itself once Inductor or the ONNX exporter first runs."""
    return path if path is not None else settings.cache_dir() / "compiled"


def use_compile_cache(path: Path) -> None:
    """Point Inductor's on-disk cache at ``path`` (unless ``TORCHINDUCTOR_CACHE_DIR`` is set)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


def _warm_marker(cache: Path, device: torch.device) -> Path | None:
    """The marker of a finished compile for this torch and this GPU (None off CUDA)."""
    if device.type != "cuda":
        return None
    try:
        name = torch.cuda.get_device_name(device)
    except Exception:  # a GPU that cannot be asked has no warm cache
        return None
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{torch.__version__}-{name}").strip("-")
    return cache / _WARM / slug


def compile_cache_warm(cache: Path, device: torch.device) -> bool:
    """Whether a compile finished with this torch on this kind of GPU and left its kernels in ``cache``.

    It tells the cache was filled, not that every shape is in it: another model or batch size compiles some
    graphs again (each then costs about the cold figure once).
    """
    marker = _warm_marker(cache, device)
    return marker is not None and marker.is_file()


def mark_compile_cache_warm(cache: Path, device: torch.device) -> None:
    """Record that a compile finished here (called by the runner after its first compiled batch)."""
    marker = _warm_marker(cache, device)
    if marker is not None and not marker.is_file():
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{torch.__version__}\n", encoding="utf-8")
        except OSError:  # a read-only cache only costs the next run the cold figure
            pass
