"""``stemsplit doctor``: what is installed, which device ``auto`` would use and why, decoders, cache.

:func:`collect` gathers everything into a frozen :class:`~stemsplit.cli.doctor.report.DoctorReport`; it
prints nothing and imports no Rich or Typer (:mod:`~stemsplit.cli.doctor.render` turns it into rows, the
command prints them). Every probe degrades gracefully: a missing or broken library,
an unreadable cache or a failing ``nvidia-smi`` becomes a :class:`Finding`, never an exception. Each
finding has a severity (``ok``, ``warning``, ``problem``) and, when there is one, the command that
fixes it. Nothing is created, downloaded or changed; the only writes are a temporary probe file in the
cache folder (to test that it is writable) and an in-memory MP3 round trip.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from stemsplit import settings
from stemsplit._paths import nearest_existing
from stemsplit._version import __version__
from stemsplit.cli.doctor.render import size_text
from stemsplit.cli.doctor.report import (
    CacheInfo,
    DecoderInfo,
    DeviceChoice,
    DoctorReport,
    FileCheck,
    Finding,
    GpuInfo,
    ModelFileInfo,
    ModelInfo,
    NetworkInfo,
    NvidiaInfo,
    PackageInfo,
    TorchInfo,
)
from stemsplit.errors import first_line

# Below this much free space in the cache a warning is given (htdemucs_ft alone is about 320 MB).
LOW_DISK_BYTES = 1_000_000_000

# Runtime dependencies, as (distribution name, import name): versions come from package metadata.
PACKAGES = (
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("soundfile", "soundfile"),
    ("av", "av"),
    ("soxr", "soxr"),
    ("typer", "typer"),
    ("rich", "rich"),
    ("platformdirs", "platformdirs"),
    ("requests", "requests"),
    ("mutagen", "mutagen"),
    ("safetensors", "safetensors"),
    ("PyYAML", "yaml"),
)
SUPPORTED_PYTHON = ((3, 10), (3, 13))
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")

# Where an NVIDIA kernel driver shows itself on Linux (module attribute so tests can point it elsewhere).
NVIDIA_PROC = Path("/proc/driver/nvidia")
# CUDA wheel variants on download.pytorch.org, newest first, with the lowest driver CUDA version each
# needs. An assumption to revisit with every torch release: pytorch.org/get-started/locally is the
# authority, and every fix that uses this table links to it.
CUDA_WHEELS = (("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6)))
TORCH_INSTALL_PAGE = "https://pytorch.org/get-started/locally/"
_PROBE_SECONDS = 10.0


# --- collection ----------------------------------------------------------------------------------


def collect(*, verify: bool = True, cache_dir: Path | None = None) -> DoctorReport:
    """Inspect this installation.

    Args:
        verify: re-hash every cached model file (about a second per 80 MB file); ``False`` only
            checks that the files are there.
        cache_dir: a cache root to inspect instead of ``STEMSPLIT_CACHE_DIR`` / the platform cache.

    Returns:
        The report, with its findings. Never raises for anything it finds broken.
    """
    findings: list[Finding] = []
    packages = _packages(findings)
    _python(findings)
    nvidia = _nvidia()
    torch_info, device = _torch(nvidia, findings)
    decoders = (_libsndfile(findings), _ffmpeg(findings))
    cache = _cache(cache_dir)
    network = _network(findings)
    models = _models(cache.root, verify, network.offline, findings)
    _cache_findings(cache, models, findings)
    _offline_findings(network, models, findings)
    return DoctorReport(
        stemsplit=__version__,
        python=platform.python_version(),
        python_implementation=platform.python_implementation(),
        executable=sys.executable,
        platform=platform.platform(),
        machine=platform.machine(),
        packages=packages,
        nvidia=nvidia,
        torch=torch_info,
        device=device,
        decoders=decoders,
        cache=cache,
        models=models,
        verified=verify,
        network=network,
        findings=tuple(findings),
    )


# Modules whose import failure gets its own, more specific finding (torch, decoders).
_REPORTED_ELSEWHERE = frozenset({"torch", "soundfile", "av"})


def _packages(findings: list[Finding]) -> tuple[PackageInfo, ...]:
    """Each runtime dependency's version (from metadata) and whether it imports."""
    rows = []
    for dist, module_name in PACKAGES:
        try:
            version: str | None = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        module, error = _import(module_name)
        if version is None and module is None:
            findings.append(
                Finding("packages", "problem", f"{dist} is not installed", f"pip install --upgrade {dist}")
            )
        elif error is not None and module_name not in _REPORTED_ELSEWHERE:
            findings.append(
                Finding(
                    "packages",
                    "problem",
                    f"{dist} {version} is installed but cannot be imported ({error})",
                    f"pip install --force-reinstall {dist}",
                )
            )
        rows.append(PackageInfo(dist, version, _detail(module_name, module), error))
    return tuple(rows)


def _detail(module_name: str, module: Any) -> str | None:
    """The native library behind a package, where that matters (libsndfile, FFmpeg)."""
    if module is None:
        return None
    if module_name == "soundfile":
        return f"libsndfile {getattr(module, '__libsndfile_version__', '?')}"
    if module_name == "av":
        libraries = getattr(module, "library_versions", {}) or {}
        libs = ", ".join(f"{name} {'.'.join(map(str, v))}" for name, v in sorted(libraries.items()))
        return f"FFmpeg {getattr(module, 'ffmpeg_version_info', '?')}" + (f": {libs}" if libs else "")
    return None


def _python(findings: list[Finding]) -> None:
    low, high = SUPPORTED_PYTHON
    if not low <= sys.version_info[:2] <= high:
        findings.append(
            Finding(
                "python",
                "warning",
                f"Python {platform.python_version()} is outside the tested range "
                f"{low[0]}.{low[1]}–{high[0]}.{high[1]}",
                f"use Python {high[0]}.{high[1]}",
            )
        )


def _import(module: str) -> tuple[Any, str | None]:
    """``(module, None)``, or ``(None, reason)`` when importing it fails in any way."""
    try:
        return importlib.import_module(module), None
    except Exception as err:  # a broken install raises anything (OSError for a missing .so, …)
        return None, first_line(err, with_type=True)


# --- NVIDIA driver -------------------------------------------------------------------------------


def _nvidia() -> NvidiaInfo:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return NvidiaInfo(
            detected=NVIDIA_PROC.exists(), evidence=str(NVIDIA_PROC) if NVIDIA_PROC.exists() else None
        )
    try:
        done = subprocess.run([smi], capture_output=True, text=True, timeout=_PROBE_SECONDS, check=False)
        text = done.stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    driver = re.search(r"Driver Version:\s*([0-9][\w.]*)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9][\d.]*)", text)
    return NvidiaInfo(
        detected=True,
        evidence=smi,
        driver_version=driver.group(1) if driver else None,
        cuda_version=cuda.group(1) if cuda else None,
    )


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    parts = re.findall(r"\d+", text)
    return tuple(int(p) for p in parts[:2]) if parts else None


def cuda_install_command(driver_cuda: str | None) -> str:
    """The pip command that installs a CUDA build of torch the driver can run.

    Args:
        driver_cuda: the newest CUDA version the driver supports (``nvidia-smi``'s "CUDA Version"),
            or ``None`` when unknown.

    Returns:
        The newest wheel variant of :data:`CUDA_WHEELS` the driver runs (the oldest one when the driver
        is unknown), or advice to update a driver too old for all of them.
    """
    have = _version_tuple(driver_cuda)
    if have is None:  # unknown driver: the oldest variant, since newer drivers also run older CUDA builds
        tag: str | None = CUDA_WHEELS[-1][0]
    else:
        tag = next((t for t, need in CUDA_WHEELS if have >= need), None)
    if tag is None:
        return (
            f"update the NVIDIA driver (it supports only CUDA {driver_cuda}), then see {TORCH_INSTALL_PAGE}"
        )
    return (
        f"pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/{tag} "
        f"(check the CUDA variant at {TORCH_INSTALL_PAGE})"
    )


# --- torch and the device ------------------------------------------------------------------------


def _torch(nvidia: NvidiaInfo, findings: list[Finding]) -> tuple[TorchInfo | None, DeviceChoice | None]:
    torch, error = _import("torch")
    if torch is None:
        findings.append(
            Finding(
                "torch",
                "problem",
                f"torch cannot be imported ({error})",
                "pip install --force-reinstall torch",
            )
        )
        return None, None
    try:
        info = _torch_info(torch)
    except Exception as err:
        findings.append(Finding("torch", "problem", f"torch is broken ({first_line(err, with_type=True)})"))
        return None, None
    _build_findings(info, nvidia, findings)
    try:
        device = _device_choice(info, nvidia)
    except Exception as err:  # the engine's policy module failed to import or to decide
        findings.append(
            Finding(
                "device", "problem", f"cannot resolve the auto device ({first_line(err, with_type=True)})"
            )
        )
        return info, None
    findings.append(
        Finding("device", "ok", f"auto uses {device.device} with {device.precision}: {device.why}")
    )
    if device.cpu_backend == "unusable":
        findings.append(Finding("device", "problem", device.cpu_backend_why))
    return info, device


def _torch_info(torch: Any) -> TorchInfo:
    from stemsplit.inference import devices

    cuda_version = getattr(torch.version, "cuda", None)
    hip_version = getattr(torch.version, "hip", None)
    build: Literal["cpu", "cuda", "rocm"] = "rocm" if hip_version else "cuda" if cuda_version else "cpu"
    cuda_available = bool(torch.cuda.is_available())
    gpus = []
    if cuda_available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                GpuInfo(index, str(props.name), int(props.total_memory), f"{props.major}.{props.minor}")
            )
    mps = getattr(torch.backends, "mps", None)
    return TorchInfo(
        version=str(torch.__version__),
        build=build,
        cuda_version=cuda_version,
        hip_version=hip_version,
        cuda_available=cuda_available,
        gpus=tuple(gpus),
        mps_built=bool(mps is not None and mps.is_built()),
        mps_available=bool(mps is not None and mps.is_available()),
        threads=int(torch.get_num_threads()),
        cpu_count=devices.thread_count(None),
        cpu_flags=tuple(f for f in devices.PRECISION_FLAGS if f in devices.cpu_flags()),
    )


def _build_findings(info: TorchInfo, nvidia: NvidiaInfo, findings: list[Finding]) -> None:
    """Why a GPU that is there is not used, and how to fix it."""
    if info.cuda_available:
        return
    from stemsplit.inference.devices import cuda_unavailable_reason

    if nvidia.detected and info.build in ("cpu", "cuda"):
        why = cuda_unavailable_reason(info.build, info.version, info.cuda_version, nvidia.evidence)
        if info.build == "cpu":
            message, fix = f"{why}, so separation runs on the CPU (many times slower)", ""
        else:
            driver = f" (the driver supports CUDA {nvidia.cuda_version})" if nvidia.cuda_version else ""
            message, fix = (
                why + driver,
                "update the NVIDIA driver, or install a torch built for an older CUDA: ",
            )
        findings.append(Finding("torch", "problem", message, fix + cuda_install_command(nvidia.cuda_version)))
    elif sys.platform == "darwin" and platform.machine() == "arm64" and not info.mps_available:
        reason = (
            "was built without MPS"
            if not info.mps_built
            else "cannot use the Apple GPU (macOS ≥ 12.3 needed)"
        )
        findings.append(
            Finding(
                "torch",
                "warning",
                f"this Mac has an Apple GPU but torch {reason}",
                "pip install --force-reinstall torch  (the macOS arm64 wheels on PyPI include MPS)",
            )
        )


def _device_choice(info: TorchInfo, nvidia: NvidiaInfo) -> DeviceChoice:
    from stemsplit.inference import devices
    from stemsplit.inference.compute import resolve_compute

    # A run's own resolution (the CPU backend is reported apart, by _cpu_backend, with its errors).
    compute = resolve_compute("auto", "auto", None, "torch")
    device, choice = compute.devices[0], compute.precision
    precision = str(choice.dtype).removeprefix("torch.")
    if compute.note is not None:
        why = f"{compute.note}; {choice.why}"
    elif device.type == "cuda":
        gpu = next((g for g in info.gpus if g.index == device.index), None)
        what = f"{gpu.name}, {gpu.memory_bytes / 2**30:.0f} GiB" if gpu else "a CUDA GPU"
        why = f"CUDA is available ({what}); {choice.why}"
    elif device.type == "mps":
        why = f"the Apple GPU (MPS) is available; {choice.why}"
    else:
        if nvidia.detected and info.build == "cpu":
            why = "an NVIDIA GPU is present but this torch is a CPU-only build"
        elif nvidia.detected:
            why = f"torch (CUDA {info.cuda_version}) cannot use the NVIDIA GPU"
        elif info.build == "cpu" and not info.mps_available:
            why = "no GPU found (and this torch is a CPU-only build)"
        else:
            why = "no CUDA or Apple GPU found"
        why += f"; {choice.why}; {info.threads} threads"
    backend, backend_why = _cpu_backend(devices.choose_precision("auto", devices.resolve_device("cpu")).dtype)
    return DeviceChoice(str(device), precision, why, backend, backend_why, compute.cuda_detail())


def _cpu_backend(dtype: Any) -> tuple[str, str]:
    """What runs the trunk on the CPU in ``dtype`` (and in float32, where that differs), and why."""
    import torch

    from stemsplit.errors import InvalidOptionError
    from stemsplit.inference import cpu_backend

    try:
        choice = cpu_backend.resolve_cpu_backend(None, dtype)
    except InvalidOptionError as err:
        return "unusable", str(err)
    if dtype == torch.float32:
        return choice.name, choice.why
    exact = cpu_backend.resolve_cpu_backend(None, torch.float32)
    if exact.name == choice.name:
        return choice.name, choice.why
    return f"{choice.name}; float32: {exact.name}", f"{choice.why}; float32: {exact.why}"


# --- decoders ------------------------------------------------------------------------------------

_SNDFILE_FORMATS = ("WAV", "AIFF", "FLAC", "OGG", "MP3", "CAF", "W64", "RF64")
_FFMPEG_CODECS = ("aac", "alac", "opus", "wmav2", "mp3", "flac", "vorbis")
_FFMPEG_FORMATS = ("m4a/aac", "alac", "opus", "wma", "webm", "video files")


def _mp3_round_trip(soundfile: Any) -> tuple[bool, bool]:
    """``(read, write)``: encode a short tone to MP3 in memory and decode it back."""
    import numpy as np

    tone = (0.1 * np.sin(np.linspace(0.0, 440.0 * 2 * np.pi, 4410))).astype("float32")
    buffer = io.BytesIO()
    try:
        soundfile.write(buffer, tone, 44100, format="MP3")
    except Exception:
        return bool(soundfile.check_format("MP3")), False
    buffer.seek(0)
    try:
        data, _rate = soundfile.read(buffer, dtype="float32")
    except Exception:
        return False, True
    return len(data) > 0, True


def _libsndfile(findings: list[Finding]) -> DecoderInfo:
    soundfile, error = _import("soundfile")
    if soundfile is None:
        findings.append(
            Finding(
                "decoders",
                "problem",
                f"soundfile cannot be imported ({error}): wav, flac, ogg and mp3 cannot be read",
                "pip install --force-reinstall soundfile",
            )
        )
        return DecoderInfo("libsndfile", False, None, error=error)
    version = str(getattr(soundfile, "__libsndfile_version__", "")) or None
    try:
        known = set(soundfile.available_formats())
        mp3_read, mp3_write = _mp3_round_trip(soundfile)
    except Exception as err:
        findings.append(
            Finding("decoders", "problem", f"libsndfile fails ({first_line(err, with_type=True)})")
        )
        return DecoderInfo("libsndfile", False, version, error=first_line(err, with_type=True))
    formats = tuple(f.lower() for f in _SNDFILE_FORMATS if f in known)
    if not (mp3_read and mp3_write):
        missing = " and ".join(w for w, ok in (("read", mp3_read), ("write", mp3_write)) if not ok)
        findings.append(
            Finding(
                "decoders",
                "warning",
                f"libsndfile {version} cannot {missing} MP3 (it needs libsndfile ≥ 1.1)",
                "pip install --upgrade soundfile  (its wheels bundle a recent libsndfile)",
            )
        )
    return DecoderInfo(
        "libsndfile", True, version, formats, (("mp3_read", mp3_read), ("mp3_write", mp3_write))
    )


def _ffmpeg(findings: list[Finding]) -> DecoderInfo:
    fix = "pip install --force-reinstall av  (its wheels bundle FFmpeg's libraries; no system ffmpeg needed)"
    av, error = _import("av")
    if av is None:
        findings.append(
            Finding(
                "decoders",
                "warning",
                f"PyAV cannot be imported ({error}): m4a/aac, alac, opus, wma and video files cannot be read",
                fix,
            )
        )
        return DecoderInfo("ffmpeg", False, None, error=error)
    version = str(getattr(av, "ffmpeg_version_info", "")) or None
    try:
        available = set(av.codecs_available)
    except Exception as err:
        findings.append(
            Finding("decoders", "warning", f"PyAV is broken ({first_line(err, with_type=True)})", fix)
        )
        return DecoderInfo("ffmpeg", False, version, error=first_line(err, with_type=True))
    checks = tuple((f"{codec}_decode", codec in available) for codec in _FFMPEG_CODECS)
    missing = [name.removesuffix("_decode") for name, ok in checks[:2] if not ok]
    if missing:
        findings.append(
            Finding("decoders", "warning", f"this FFmpeg build has no {' or '.join(missing)} decoder", fix)
        )
    return DecoderInfo("ffmpeg", True, version, _FFMPEG_FORMATS, checks)


# --- cache and models ----------------------------------------------------------------------------


def _can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried for real: permission bits lie to root)."""
    if not folder.is_dir():
        return False
    try:
        handle, name = tempfile.mkstemp(prefix=".stemsplit-doctor-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    Path(name).unlink(missing_ok=True)
    return True


def _cache(cache_dir: Path | None) -> CacheInfo:
    root = cache_dir if cache_dir is not None else settings.cache_dir()
    checkpoints = settings.checkpoints_dir(root)
    # The folder that a download would write into, or the nearest folder that exists above it.
    base = nearest_existing(checkpoints)
    error = None
    free = total = None
    if base is not None:
        try:
            usage = shutil.disk_usage(base)
            free, total = usage.free, usage.total
        except OSError as err:
            error = first_line(err, with_type=True)
    writable = base is not None and _can_write(base)
    if base is not None and base != checkpoints and not base.is_dir():
        error = f"{base} is a file, not a folder"
    return CacheInfo(root, checkpoints, checkpoints.is_dir(), writable, free, total, error)


def _models(root: Path, verify: bool, offline: bool, findings: list[Finding]) -> tuple[ModelInfo, ...]:
    try:
        from stemsplit.weights.cache import ModelCache, fix_command

        cache = ModelCache(root=root)
        rows = cache.status()
        cached = [row.name for row in rows if any(f.cached for f in row.files)]
        states = {}
        if verify and cached:
            for result in cache.verify(cached):
                states[result.filename] = result.state
    except Exception as err:
        findings.append(
            Finding(
                "models", "problem", f"cannot inspect the model cache ({first_line(err, with_type=True)})"
            )
        )
        return ()
    infos = []
    for row in rows:
        files = []
        for f in row.files:
            state: FileCheck = states.get(f.filename, "unverified") if f.cached else "missing"
            files.append(
                ModelFileInfo(f.filename, f.path, f.cached, state, f.size_bytes if f.cached else None)
            )
            if state == "corrupt":
                findings.append(
                    Finding(
                        "models",
                        "problem",
                        f"model {row.name}: cached file {f.path} is corrupt (its SHA-256 does not match)",
                        fix_command(row.name),
                    )
                )
        infos.append(ModelInfo(row.name, row.default, tuple(files)))
    valid = [m.name for m in infos if m.valid]
    if valid:
        checked = "verified" if verify else "present, not re-hashed"
        findings.append(Finding("models", "ok", f"cached models ({checked}): {', '.join(valid)}"))
    elif not offline and not any(f.cached for m in infos for f in m.files):  # offline: see _offline_findings
        default = next((m.name for m in infos if m.default), "htdemucs")
        findings.append(
            Finding(
                "models",
                "ok",
                f"no model is cached yet; {default} (about 80 MB) is downloaded on first use "
                f"(or now: `stemsplit models download {default}`)",
            )
        )
    return tuple(infos)


def _cache_findings(cache: CacheInfo, models: Sequence[ModelInfo], findings: list[Finding]) -> None:
    default_ready = any(m.default and m.valid for m in models)
    fix = "point STEMSPLIT_CACHE_DIR at a writable folder with space"
    if not cache.writable:
        reason = cache.error or "it cannot be created or written"
        findings.append(
            Finding(
                "cache",
                # Separation still works from a complete cache; only new downloads would fail.
                "warning" if default_ready else "problem",
                f"the model cache {cache.checkpoints} is not writable ({reason}); models cannot be downloaded",
                fix,
            )
        )
    if cache.free_bytes is not None and cache.free_bytes < LOW_DISK_BYTES:
        findings.append(
            Finding(
                "cache",
                "warning",
                f"only {size_text(cache.free_bytes)} free where models are cached ({cache.checkpoints}); "
                "one model is about 80 MB, htdemucs_ft about 320 MB",
                f"free some disk space, or {fix}",
            )
        )
    if cache.writable and (cache.free_bytes is None or cache.free_bytes >= LOW_DISK_BYTES):
        findings.append(Finding("cache", "ok", f"cache {cache.checkpoints} is writable"))


# --- network -------------------------------------------------------------------------------------


def _network(findings: list[Finding]) -> NetworkInfo:
    from stemsplit.weights.download import mask_url

    offline = settings.offline()
    mirror = settings.model_base_url()
    proxies = []
    for name in PROXY_VARS:
        value = os.environ.get(name) or os.environ.get(name.lower())
        if value:
            proxies.append((name, mask_url(value)))
    ca_var = next((v for v in settings.CA_BUNDLE_VARS if os.environ.get(v, "").strip()), None)
    ca_bundle = settings.ca_bundle()
    ca_exists = Path(ca_bundle).expanduser().exists() if ca_bundle else None
    if ca_bundle and not ca_exists:
        findings.append(
            Finding(
                "network",
                "problem",
                f"{ca_var}={ca_bundle} does not exist, so every download fails TLS verification",
                f"point {ca_var} at your organisation's CA bundle, or unset it",
            )
        )
    if mirror:
        findings.append(Finding("network", "ok", f"models are downloaded from the mirror {mask_url(mirror)}"))
    return NetworkInfo(offline, mirror and mask_url(mirror), tuple(proxies), ca_bundle, ca_var, ca_exists)


def _offline_findings(network: NetworkInfo, models: Sequence[ModelInfo], findings: list[Finding]) -> None:
    if not network.offline:
        return
    default = next((m for m in models if m.default), None)
    if default is not None and not default.valid:
        findings.append(
            Finding(
                "network",
                "problem",
                f"offline mode is on (STEMSPLIT_OFFLINE) and the default model {default.name} is not cached",
                f"go online once and run `stemsplit models download {default.name}`, or copy the file and run "
                "`stemsplit models import FILE`",
            )
        )
    else:
        findings.append(Finding("network", "ok", "offline mode is on: nothing will be downloaded"))
