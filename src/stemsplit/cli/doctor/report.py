"""The ``stemsplit doctor`` report: frozen records of what was found, and their JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["ok", "warning", "problem"]
SCHEMA_VERSION = 1
"""Version of the ``doctor --json`` document; raised when a field changes meaning or goes away."""


# --- report types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One diagnosis.

    Attributes:
        topic: what it is about (``python``, ``packages``, ``torch``, ``device``, ``decoders``,
            ``cache``, ``models``, ``network``).
        severity: ``ok`` (fine, worth saying), ``warning`` (works, but not as well as it could) or
            ``problem`` (something will fail; ``stemsplit doctor`` exits 1).
        message: one line saying what was found.
        fix: the command or action that fixes it, when there is one.
    """

    topic: str
    severity: Severity
    message: str
    fix: str | None = None


@dataclass(frozen=True)
class PackageInfo:
    """An installed distribution: ``version`` is ``None`` when it is missing; ``error`` when it fails to import."""

    name: str
    version: str | None
    detail: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA (or ROCm) device as torch sees it."""

    index: int
    name: str
    memory_bytes: int
    capability: str


@dataclass(frozen=True)
class NvidiaInfo:
    """Signs of an NVIDIA driver, independent of torch.

    Attributes:
        detected: ``nvidia-smi`` is on PATH or the kernel driver is loaded.
        evidence: what showed it (the ``nvidia-smi`` path or ``/proc/driver/nvidia``).
        driver_version, cuda_version: from ``nvidia-smi``'s header (the newest CUDA the driver runs).
    """

    detected: bool
    evidence: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None


@dataclass(frozen=True)
class TorchInfo:
    """The torch build and what it can use here.

    Attributes:
        build: ``cpu`` (no GPU support compiled in), ``cuda`` or ``rocm``.
        cuda_version: the CUDA version torch was built with (``None`` for CPU and ROCm builds).
        hip_version: the ROCm/HIP version of a ROCm build.
        threads: torch's intra-op thread count; cpu_count: cores this process may use.
        cpu_flags: the CPU features that decide the CPU precision and speed, of those present
            (:data:`~stemsplit.inference.devices.PRECISION_FLAGS`, e.g. ``("avx2", "avx512_bf16")``).
    """

    version: str
    build: Literal["cpu", "cuda", "rocm"]
    cuda_version: str | None
    hip_version: str | None
    cuda_available: bool
    gpus: tuple[GpuInfo, ...]
    mps_built: bool
    mps_available: bool
    threads: int
    cpu_count: int
    cpu_flags: tuple[str, ...]


@dataclass(frozen=True)
class DeviceChoice:
    """What ``--device auto --precision auto`` resolves to, and why.

    Attributes:
        cpu_backend: what runs the networks' trunk on the CPU (``torch``, ``openvino`` or ``onnxruntime``), for the
            automatic precision; the float32 one too where it differs (``torch; float32: openvino``).
        cpu_backend_why: the reason, in one line.
        compute: on CUDA, the batch size, whether a batch compiles and why (the policy's numbers) and whether
            the compiled-kernel cache is warm (:meth:`stemsplit.inference.compute.Compute.cuda_detail`);
            None elsewhere.
    """

    device: str
    precision: str
    why: str
    cpu_backend: str
    cpu_backend_why: str
    compute: str | None = None


@dataclass(frozen=True)
class DecoderInfo:
    """One decoding backend.

    Attributes:
        name: ``libsndfile`` (through soundfile) or ``ffmpeg`` (through PyAV).
        capabilities: named checks, e.g. ``mp3_read``, ``aac_decode``.
        formats: a short list of what it reads.
    """

    name: str
    available: bool
    version: str | None
    formats: tuple[str, ...] = ()
    capabilities: tuple[tuple[str, bool], ...] = ()
    error: str | None = None

    def can(self, capability: str) -> bool:
        """Whether the named check passed."""
        return dict(self.capabilities).get(capability, False)


@dataclass(frozen=True)
class CacheInfo:
    """The model cache: where, whether it can be written, free space (of the nearest existing folder)."""

    root: Path
    checkpoints: Path
    exists: bool
    writable: bool
    free_bytes: int | None
    total_bytes: int | None
    error: str | None = None


FileCheck = Literal["ok", "corrupt", "missing", "unverified"]


@dataclass(frozen=True)
class ModelFileInfo:
    """A weight file: ``state`` is ``unverified`` for a cached file that was not hashed (``--no-verify``)."""

    filename: str
    path: Path
    cached: bool
    state: FileCheck
    size_bytes: int | None


@dataclass(frozen=True)
class ModelInfo:
    """A registry model and the cache state of its files."""

    name: str
    default: bool
    files: tuple[ModelFileInfo, ...]

    @property
    def cached(self) -> bool:
        """Whether every file is in the cache."""
        return all(f.cached for f in self.files)

    @property
    def valid(self) -> bool:
        """Whether it is cached and no file failed its hash."""
        return self.cached and all(f.state in ("ok", "unverified") for f in self.files)


@dataclass(frozen=True)
class NetworkInfo:
    """Download settings from the environment; proxy passwords are masked."""

    offline: bool
    mirror: str | None
    proxies: tuple[tuple[str, str], ...]
    ca_bundle: str | None
    ca_bundle_var: str | None
    ca_bundle_exists: bool | None


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``stemsplit doctor`` shows; :meth:`to_dict` is its ``--json`` form."""

    stemsplit: str
    python: str
    python_implementation: str
    executable: str
    platform: str
    machine: str
    packages: tuple[PackageInfo, ...]
    nvidia: NvidiaInfo
    torch: TorchInfo | None
    device: DeviceChoice | None
    decoders: tuple[DecoderInfo, ...]
    cache: CacheInfo
    models: tuple[ModelInfo, ...]
    verified: bool
    network: NetworkInfo
    findings: tuple[Finding, ...] = field(default=())

    @property
    def status(self) -> Severity:
        """The worst severity among the findings."""
        severities = {f.severity for f in self.findings}
        return "problem" if "problem" in severities else "warning" if "warning" in severities else "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (paths as strings, pairs as objects); see ``SCHEMA_VERSION``."""
        data = _jsonable(asdict(self))
        for decoder in data["decoders"]:
            decoder["capabilities"] = dict(decoder["capabilities"])
        data["network"]["proxies"] = dict(data["network"]["proxies"])
        for model in data["models"]:
            model["cached"] = all(f["cached"] for f in model["files"])
        return {"schema": SCHEMA_VERSION, **data, "status": self.status}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
