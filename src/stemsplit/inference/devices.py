"""Device, precision, batch-size and compilation policy for the engine (no model code; no I/O but /proc
and a look along PATH).

Decisions and the numbers behind them:

* ``auto`` device: CUDA, then MPS, then CPU. On MPS the model's complex-valued stages (STFT, iSTFT) run on
  the CPU and its networks on the GPU (:class:`~stemsplit.inference.runner.DeviceRunner`); this path is
  tested on the CPU only.
* ``auto`` precision: float16 on CUDA (measured 65 dB SNR against float32 on full-size random weights, and
  the fastest there); float32 on MPS (reduced precision unmeasured there); on CPU see
  :func:`cpu_precision`: bfloat16 only with AMX, float32 everywhere else.
* ``auto`` batch size: 1 on CPU (batching windows made each window about 30 % slower on a 2-core EPYC);
  on CUDA, from free memory (an estimate; an out-of-memory error halves the batch anyway).
* A device that is asked for but not available is refused with the reason (a CPU-only torch, no driver,
  no such GPU): :func:`cuda_unavailable_reason`, which ``stemsplit doctor`` words its findings with too.
* ``torch.compile``: the policy is :func:`stemsplit.inference.compute.compile_choice` (only on CUDA, and
  only for enough audio to repay the compilation); a failure here stops automatic compiling for the process
  (:func:`note_compile_failure`).
"""

from __future__ import annotations

import os
import platform
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch

from stemsplit.errors import InvalidOptionError

__all__ = [
    "COMPLEX_ON_CPU",
    "NVIDIA_PROC",
    "PRECISION_FLAGS",
    "Precision",
    "PrecisionChoice",
    "TorchBuild",
    "auto_batch_size",
    "autocast",
    "choose_precision",
    "compile_failed",
    "cpu_flags",
    "cpu_precision",
    "cuda_tuning",
    "cuda_unavailable_reason",
    "mps_unavailable_reason",
    "note_compile_failure",
    "nvidia_driver_evidence",
    "parse_cpu_flags",
    "resolve_device",
    "resolve_devices",
    "resolve_dtype",
    "thread_count",
    "thread_settings",
    "torch_build",
]

Precision = Literal["auto", "float32", "bfloat16", "float16"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into an available :class:`torch.device`.

    Raises:
        InvalidOptionError: for an unknown name, or a device that is not available here; the message
            says why (a CPU-only torch, no driver, no such GPU) and what to do instead.
    """
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            device = torch.device(spec)
        except RuntimeError as err:
            raise InvalidOptionError.bad_value("--device", spec, "auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cpu":
        return torch.device("cpu")
    way_out = "use --device cpu (or auto); `stemsplit doctor` shows the details"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = cuda_unavailable_reason(
                torch_build(), str(torch.__version__), torch.version.cuda, nvidia_driver_evidence()
            )
            raise InvalidOptionError(
                f"--device {spec}: CUDA is not available: {why}; {way_out}", option="--device"
            )
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if device.index is None else device.index
        if not 0 <= index < count:
            have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise InvalidOptionError(
                f"--device {spec}: there is no such GPU; this machine has {count} ({have}); "
                "`stemsplit doctor` lists them",
                option="--device",
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise InvalidOptionError(
                f"--device {spec}: MPS is not available: {mps_unavailable_reason()}; {way_out}",
                option="--device",
            )
        return device
    raise InvalidOptionError.bad_value("--device", spec, "auto, cpu, cuda, cuda:N or mps")


def resolve_devices(spec: str) -> list[torch.device]:
    """Turn ``--device`` into the devices to run on: one, a comma-separated list (``cuda:0,cuda:1``) or
    ``cuda:all`` (every visible CUDA device). Each track runs on one of them.

    Raises:
        InvalidOptionError: an unknown or unavailable device, or the same device twice.
    """
    if spec == "cuda:all":
        if not torch.cuda.is_available():
            raise InvalidOptionError("CUDA was asked for (cuda:all) but is not available", option="--device")
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    devices = (
        [resolve_device(part.strip()) for part in spec.split(",")] if "," in spec else [resolve_device(spec)]
    )
    if len(set(devices)) != len(devices):
        raise InvalidOptionError(f"--device {spec}: each device may be named once", option="--device")
    return devices


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


# --- why a GPU cannot be used (shared with ``stemsplit doctor``) -----------------------------------

NVIDIA_PROC = Path("/proc/driver/nvidia")
"""Where a loaded NVIDIA kernel driver shows itself on Linux."""

TorchBuild = Literal["cpu", "cuda", "rocm"]


def torch_build() -> TorchBuild:
    """Which kind of torch is installed: ``cuda``, ``rocm`` (AMD, through the same ``torch.cuda`` API) or
    ``cpu`` (no GPU support compiled in)."""
    if getattr(torch.version, "hip", None):
        return "rocm"
    return "cuda" if getattr(torch.version, "cuda", None) else "cpu"


def nvidia_driver_evidence() -> str | None:
    """A sign of an NVIDIA driver found without running anything: :data:`NVIDIA_PROC`, else an
    ``nvidia-smi`` on ``PATH`` (Windows, or a driver not loaded yet); None when there is neither."""
    if NVIDIA_PROC.exists():
        return str(NVIDIA_PROC)
    return shutil.which("nvidia-smi")


def cuda_unavailable_reason(
    build: TorchBuild, torch_version: str, cuda_version: str | None, nvidia: str | None
) -> str:
    """Why torch cannot use CUDA here, in one clause (pure: the caller gathers the facts).

    Args:
        build: from :func:`torch_build`.
        torch_version: ``torch.__version__``.
        cuda_version: the CUDA version torch was built for (``torch.version.cuda``), if any.
        nvidia: where an NVIDIA driver was seen (:func:`nvidia_driver_evidence`), or None.
    """
    if build == "cpu":
        if nvidia is not None:
            return f"torch {torch_version} is a CPU-only build, although an NVIDIA GPU is present ({nvidia})"
        return f"torch {torch_version} is a CPU-only build and no NVIDIA driver was found"
    if build == "rocm":
        return f"torch {torch_version} is built for AMD GPUs (ROCm) but finds none it can use"
    if nvidia is None:
        return f"torch is built for CUDA {cuda_version} but no NVIDIA driver was found"
    return f"torch is built for CUDA {cuda_version} but cannot use the NVIDIA GPU ({nvidia}); is the driver too old?"


def mps_unavailable_reason() -> str:
    """Why torch cannot use Apple's GPU (MPS) here, in one clause."""
    if platform.system() != "Darwin":
        return "MPS is the Apple GPU backend, on macOS only"
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_built():
        return f"torch {torch.__version__} was built without MPS"
    return "torch cannot use the GPU of this Mac (MPS needs macOS 12.3 or later)"


@dataclass(frozen=True)
class PrecisionChoice:
    """The compute dtype a ``--precision`` resolves to on a device, and why.

    Attributes:
        dtype: the dtype the networks run in.
        why: one line for ``doctor`` and ``-v``, naming the CPU flag the choice rests on.
        slow: for an explicit reduced precision that this CPU only emulates (or was measured slower in),
            the warning to show once per run, with the measured slowdown and the way back; else None.
    """

    dtype: torch.dtype
    why: str
    slow: str | None = None


def cpu_precision(precision: str, flags: frozenset[str]) -> PrecisionChoice:
    """Resolve ``precision`` on a CPU with these ``/proc/cpuinfo`` flags (pure: the only rule for CPUs).

    ``auto`` is bfloat16 only where AMX is present (the x86 flag ``amx_bf16``) and float32 everywhere else.
    Measured on full-size random ``htdemucs`` weights (``benchmarks/bench_engine.py``):

    * Intel Xeon with AMX (2 cores, 2026-12-02): a 60-s track in 16.59 s in bfloat16 against 23.19 s in
      float32 (1.40x faster), 48.8 dB SNR against float32; the trunk of one window 1.24 s against 1.74 s.
      Those weights have demucs' initial layer scales (1e-4), which mute most of the network; with
      unit-order scales (``--unit-scales``, 2026-12-03) bfloat16 was 36.8 dB from float32. The bar is 35 dB
      (issue 29: at the model's 9 dB SDR an independent error 35 dB down costs about 0.01 dB of SDR).
      On Intel CPUs with AMX the trunk runs in OpenVINO's bfloat16 (:mod:`.cpu_backend`; 2026-12-06,
      family 6 model 207, quiet: 2.51x PyTorch float32 per window at 37.9 dB; loaded: PyTorch bfloat16
      1.13x at 37.5 dB).
    * AMD EPYC with ``avx512_bf16`` but no AMX (2 cores): bfloat16 127.0 s against 99.9 s in float32
      (1.27x slower) at 48.8 dB; float16 13x slower than float32.
    * AMD EPYC with AVX2 only (2 cores): bfloat16 (emulated) about 32x slower than float32, float16 about
      35x slower.
    * Arm ``bf16``: not measured, so float32 until someone does.

    An explicit ``bfloat16`` or ``float16`` is honoured, with :attr:`PrecisionChoice.slow` set where it was
    measured slower than float32 (every CPU without AMX for bfloat16; every CPU for float16, since no CPU
    with native float16 arithmetic has been measured).
    """
    if precision == "auto":
        if "amx_bf16" in flags:
            return PrecisionChoice(
                torch.bfloat16, "bfloat16: the CPU has AMX (amx_bf16), measured faster at >= 35 dB SNR"
            )
        if "avx512_bf16" in flags:
            why = "float32: the CPU has avx512_bf16 but no AMX, where bfloat16 was measured 1.27x slower"
        else:
            why = "float32: no AMX (amx_bf16) on this CPU, so bfloat16 would be emulated (about 32x slower)"
        return PrecisionChoice(torch.float32, why)
    dtype = _named_dtype(precision)
    if dtype == torch.float32:
        return PrecisionChoice(dtype, "float32: as asked (exact)")
    name = precision
    if dtype == torch.bfloat16 and "amx_bf16" in flags:
        return PrecisionChoice(dtype, f"{name}: as asked (the CPU has AMX)")
    if dtype == torch.bfloat16 and "avx512_bf16" in flags:
        slowdown = "was measured 1.27x slower than float32 on a CPU with avx512_bf16 and no AMX"
    elif dtype == torch.bfloat16:
        slowdown = "is emulated on this CPU (no AMX): measured about 32x slower than float32"
    else:
        slowdown = "is emulated on CPUs: measured 13x to 35x slower than float32"
    slow = f"--precision {name} {slowdown}; --precision auto uses float32 here, which is exact and faster"
    return PrecisionChoice(dtype, f"{name}: as asked, although it is slower than float32 here", slow)


def choose_precision(precision: Precision | str, device: torch.device) -> PrecisionChoice:
    """The compute dtype for ``precision`` on ``device``, with the reason (see the module docstring).

    Raises:
        InvalidOptionError: for an unknown precision name.
    """
    if device.type == "cpu":
        return cpu_precision(precision, cpu_flags())
    if precision != "auto":
        return PrecisionChoice(_named_dtype(precision), f"{precision}: as asked")
    if device.type == "cuda":
        return PrecisionChoice(
            torch.float16, "float16: measured 65 dB SNR against float32, the fastest on CUDA"
        )
    return PrecisionChoice(torch.float32, "float32: reduced precision is not measured on this device")


def resolve_dtype(precision: Precision | str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device`` (:func:`choose_precision` without the reason).

    Raises:
        InvalidOptionError: for an unknown precision name.
    """
    return choose_precision(precision, device).dtype


def _named_dtype(precision: str) -> torch.dtype:
    try:
        return _DTYPES[precision]
    except KeyError:
        raise InvalidOptionError.bad_value(
            "--precision", precision, "auto, float32, bfloat16 or float16"
        ) from None


PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_fp16", "bf16")
"""The CPU flags that decide (or explain) the CPU precision and speed, as ``doctor`` shows them."""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm; empty elsewhere).

    ``torch.backends.cpu.get_cpu_capability()`` only reports the vector ISA (``AVX2``/``AVX512``), not AMX
    or bfloat16, hence the file.
    """
    if platform.system() != "Linux":
        return frozenset()  # no portable way to ask; float32 is the safe choice
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace"))
    except OSError:
        return frozenset()


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags listed in the text of ``/proc/cpuinfo`` (every core's ``flags``/``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Compute in ``dtype`` on ``device``: autocast for bfloat16/float16, nothing to do for float32.

    Exact float32 on CUDA also needs TensorFloat-32 off; that is a process setting, switched once per
    runner by :func:`cuda_tuning`, not per batch.
    """
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@contextmanager
def cuda_tuning(device: torch.device, *, exact: bool) -> Iterator[None]:
    """The CUDA settings of a runner's lifetime (nothing on other devices).

    ``exact`` (float32) switches TensorFloat-32 off for matmuls and cuDNN convolutions: PyTorch lets cuDNN
    use TF32 by default, about 10 bits of mantissa on Ampere and later cards. ``cudnn.benchmark`` is on,
    since the runner's shapes are fixed (one per batch bucket) and autotuning pays off on the first batch.

    These are process settings (torch has no per-device or per-thread form of them): the first user
    applies them, the last restores them, and users in between change nothing, so one device thread never
    switches them under another. The pipeline enters them once, in the calling thread, before its device
    threads start. A float32 user joining reduced-precision ones switches TF32 off then (stricter for all,
    never looser).
    """
    if device.type != "cuda":
        yield
        return
    _CUDA_SETTINGS.enter(exact=exact)
    try:
        yield
    finally:
        _CUDA_SETTINGS.leave()


class _CudaSettings:
    """The reference-counted process state behind :func:`cuda_tuning`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._exact = False
        self._restore = ExitStack()

    def enter(self, *, exact: bool) -> None:
        with self._lock:
            if self._users == 0:
                self._restore.callback(
                    setattr, torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark
                )
                torch.backends.cudnn.benchmark = True
                self._exact = False
            if exact and not self._exact:
                self._restore.enter_context(_ieee_float32())
                self._exact = True
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._restore.close()


_CUDA_SETTINGS = _CudaSettings()


@contextmanager
def thread_settings(threads: int | None) -> Iterator[None]:
    """CPU intra-op threads set to ``threads`` inside (None: torch's own setting is left alone), restored on
    exit.

    Raises:
        InvalidOptionError: ``threads < 1``.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(thread_count(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _ieee_float32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and cuDNN, restored afterwards.

    Set through :func:`torch.set_float32_matmul_precision` and the ``cudnn.allow_tf32`` flag, which
    keep PyTorch's legacy and per-backend (``fp32_precision``, PyTorch >= 2.9) views of the setting
    consistent, so code that reads either view (``torch.compile`` does) keeps working inside.
    """
    matmul = torch.get_float32_matmul_precision()
    restore_cudnn = _cudnn_tf32_restorer()
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        restore_cudnn()


def _cudnn_tf32_restorer() -> Callable[[], None]:
    """A function that puts cuDNN's TF32 setting back as it is now."""
    cudnn: Any = torch.backends.cudnn  # per-backend ``conv``/``rnn`` settings are not in older stubs
    try:
        allowed = cudnn.allow_tf32
    except RuntimeError:  # the caller set conv and rnn apart through the per-backend API
        saved = (cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)

        def restore_each() -> None:
            cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = saved

        return restore_each

    def restore() -> None:
        cudnn.allow_tf32 = allowed

    return restore


def thread_count(threads: int | None) -> int:
    """CPU threads for intra-op parallelism: ``threads`` if given, else every core this process may use."""
    if threads is not None:
        if threads < 1:
            raise InvalidOptionError(f"threads must be >= 1, got {threads}", option="--jobs")
        return threads
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_batch_size(device: torch.device, dtype: torch.dtype, segment: int) -> int:
    """Windows per forward when the user did not choose.

    CPU and MPS: 1. CUDA: free memory divided by an estimate of one full-size HT Demucs window's
    activations (about 0.9 GiB in float32 and half that in float16/bfloat16 per 343,980-sample window,
    scaled linearly with ``segment``; an estimate, not measured here), clamped to [1, 32].
    """
    if device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(device)
    per_window = 0.9 * 2**30 * segment / 343980 * (1.0 if dtype == torch.float32 else 0.5)
    return int(min(32, max(1, (0.8 * free) // per_window)))


_COMPILE_FAILED: list[BaseException] = []  # the first failure of torch.compile in this process, if any


def note_compile_failure(err: BaseException) -> None:
    """Remember that ``torch.compile`` failed here; automatic mode will not try again in this process."""
    if not _COMPILE_FAILED:
        _COMPILE_FAILED.append(err)


def compile_failed() -> bool:
    """Whether ``torch.compile`` failed earlier in this process (:func:`note_compile_failure`)."""
    return bool(_COMPILE_FAILED)


# Devices whose complex-number support is missing or partial: the STFT and iSTFT of a staged model
# (``analyse`` / ``trunk`` / ``synthesise``) run on the CPU there, the networks on the device
# (:class:`~stemsplit.inference.runner.DeviceRunner`).
COMPLEX_ON_CPU = frozenset({"mps"})
