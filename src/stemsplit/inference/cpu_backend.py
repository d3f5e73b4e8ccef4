"""The CPU backend of a staged model's trunk: PyTorch, or OpenVINO where it was measured faster.

The trunk (both U-Nets and the transformer, between ``analyse`` and ``synthesise``) is nearly the whole cost
of a window. On an Intel Xeon (2 cores, AVX-512 and AMX; ``benchmarks/RESULTS.md``, 2026-12-02) OpenVINO's CPU
plugin ran it in float32 1.19x to 1.31x faster than PyTorch eager (``bench_cpu_levers.py``), and the engine
separated a 60-s track 1.03x to 1.17x faster than with PyTorch in three runs (``bench_engine.py``, best of 2
or 3; 19.56 s against 20.83 s in the last), at a max abs difference of 3.3e-7 from PyTorch; on a 2-core
AMD EPYC OpenVINO was 0.91x (slower, issue 15). The other levers measured lost, tied, or need a C++ compiler
(``torch.compile``, 1.25x). Hence the rule of
:func:`choose_cpu_backend`: OpenVINO for float32 on Intel CPUs when the optional packages are installed
(``pip install 'stemsplit-cli[openvino]'``), PyTorch everywhere else. Reduced precisions stay in PyTorch
(OpenVINO's bfloat16 measured 39.6 dB SNR against float32, under the 40 dB bar).

:class:`OpenVinoTrunk` exports the trunk once per weights to ONNX (``torch.onnx.export``; 11 to 23 s for the
full-size ``htdemucs`` here) into the cache, keyed by a hash of the weights, the architecture, the trunk's
input shapes, the versions of stemsplit and torch and the model package's source, written atomically (temp
name, then rename; exports of other stemsplit or torch versions are removed then). While exporting, the
model takes the forms OpenVINO runs fast and exactly (:mod:`stemsplit.model.norms`: norms with two-level
sums; the frequency DConv on the map, without transposed copies). OpenVINO compiles the export the first
time (about 1 s) and keeps the compiled model beside it (``blobs-<openvino version>/``, about 180 MB per
export and thread count; other versions' folders are removed), which later runs read back in about 0.35 s.
Windows run one at a time, so a window's output never depends on what shares its batch; inputs of another
shape run in PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import logging
import os
import platform
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch

from stemsplit import settings
from stemsplit._version import __version__
from stemsplit.errors import InvalidOptionError

__all__ = [
    "CPU_BACKENDS",
    "OPENVINO_PACKAGES",
    "BackendChoice",
    "CpuBackend",
    "ExportDeferred",
    "OpenVinoTrunk",
    "choose_cpu_backend",
    "cpu_vendor",
    "missing_packages",
    "resolve_cpu_backend",
    "trunk_key",
]

CpuBackend = Literal["auto", "torch", "openvino"]
CPU_BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")

OPENVINO_PACKAGES = ("openvino", "onnx", "onnxscript")
"""What the OpenVINO backend imports: the runtime, and the packages ``torch.onnx.export`` needs."""

_INSTALL = "pip install 'stemsplit-cli[openvino]'"
_FORMAT = 1  # bump when the export changes in a way the other key parts do not show


class ExportDeferred(Exception):
    """The trunk is not exported yet and the caller did not allow an export now (its budget is spent)."""


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the trunk on the CPU, and why (one line for ``doctor`` and ``-v``)."""

    name: Literal["torch", "openvino"]
    why: str


def missing_packages() -> tuple[str, ...]:
    """The packages of :data:`OPENVINO_PACKAGES` that are not installed (found without importing them)."""
    return tuple(name for name in OPENVINO_PACKAGES if importlib.util.find_spec(name) is None)


@lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD`` ...), or ``""`` where it is not known.

    Linux: ``vendor_id`` in ``/proc/cpuinfo``; Windows: the end of :func:`platform.processor`.
    """
    if platform.system() == "Linux":
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        except OSError:
            return ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                return value.strip()
        return ""
    processor = platform.processor()
    return next((v for v in ("GenuineIntel", "AuthenticAMD") if v in processor), "")


def choose_cpu_backend(
    requested: str, dtype: torch.dtype, vendor: str, missing: tuple[str, ...]
) -> BackendChoice:
    """The trunk's CPU backend (pure: the caller gathers the facts; see the module docstring).

    Args:
        requested: ``auto``, ``torch`` or ``openvino``.
        dtype: the compute dtype on the CPU.
        vendor: from :func:`cpu_vendor`.
        missing: from :func:`missing_packages`.

    Raises:
        InvalidOptionError: an unknown name, or ``openvino`` asked for but not installed.
    """
    if requested not in CPU_BACKENDS:
        raise InvalidOptionError.bad_value(settings.ENV_CPU_BACKEND, requested, "auto, torch or openvino")
    if requested == "openvino" and missing:
        raise InvalidOptionError(
            f"the openvino CPU backend was asked for ({settings.ENV_CPU_BACKEND} or cpu_backend), but "
            f"{', '.join(missing)} is not installed: {_INSTALL}",
            option=settings.ENV_CPU_BACKEND,
        )
    if requested == "torch":
        return BackendChoice("torch", "PyTorch, as asked")
    if dtype != torch.float32:
        name = str(dtype).removeprefix("torch.")
        return BackendChoice("torch", f"PyTorch: OpenVINO is used for float32 only, not {name}")
    if requested == "openvino":
        return BackendChoice("openvino", "OpenVINO, as asked")
    if missing:
        return BackendChoice(
            "torch",
            f"PyTorch: OpenVINO is not installed ({_INSTALL}: 1.03x to 1.17x faster on an Intel Xeon)",
        )
    if vendor != "GenuineIntel":
        return BackendChoice(
            "torch", "PyTorch: OpenVINO is used on Intel CPUs only (measured 0.91x on an AMD EPYC)"
        )
    return BackendChoice(
        "openvino", "OpenVINO: an Intel CPU, where it measured 1.03x to 1.17x PyTorch's speed"
    )


def resolve_cpu_backend(
    requested: str | None, dtype: torch.dtype, *, compiled: bool = False
) -> BackendChoice:
    """:func:`choose_cpu_backend` with this machine's facts; ``requested`` None reads
    ``STEMSPLIT_CPU_BACKEND`` (default ``auto``). With ``compiled`` (``--compile on``), ``torch.compile``
    runs the trunk where OpenVINO would have.

    Raises:
        InvalidOptionError: as :func:`choose_cpu_backend`.
    """
    name = requested if requested is not None else settings.cpu_backend()
    choice = choose_cpu_backend(name, dtype, cpu_vendor(), missing_packages())
    if compiled and choice.name == "openvino":
        return BackendChoice("torch", "PyTorch compiled, as --compile on asks (instead of OpenVINO)")
    return choice


def trunk_key(model: torch.nn.Module, shapes: tuple[tuple[int, ...], ...]) -> str:
    """A hex digest naming one export: the weights, the architecture, the trunk's input shapes, the versions
    of stemsplit and torch, and the source of the model's package (the exported graph is that code)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    for part in (_FORMAT, __version__, torch.__version__, type(model).__qualname__, config, shapes):
        digest.update(repr(part).encode())
    with contextlib.suppress(TypeError, OSError):  # a model defined where no source file is
        for source in sorted(Path(inspect.getfile(type(model))).parent.glob("*.py")):
            digest.update(source.read_bytes())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class _Trunk(torch.nn.Module):
    """A staged model's ``trunk`` as a module's forward (what the exporter takes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        staged: Any = self.model
        out: tuple[torch.Tensor, torch.Tensor] = staged.trunk(x, xt)
        return out


class OpenVinoTrunk:
    """A staged model's trunk in float32 through OpenVINO, from an ONNX export cached per weights.

    Args:
        model: a staged model (``analyse`` / ``trunk`` / ``synthesise``) with ``audio_channels``, on the
            CPU, in eval mode.
        cache_dir: where exports are kept (created if missing).
        threads: OpenVINO's inference threads.
        window: the runner's window in samples (the bag's segment, which may differ from the model's own);
            the trunk is exported for the shapes that window analyses to.
        on_export: called before an export starts (not when the export is cached).
        allow_export: False: raise :class:`ExportDeferred` instead of exporting when no export is cached.

    Attributes:
        export_s: seconds the export took here (0 when it was cached).

    Raises:
        ExportDeferred: no export is cached and ``allow_export`` is False.
        Exception: whatever the exporter or OpenVINO raise (the runner falls back to PyTorch).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cache_dir: Path,
        threads: int,
        window: int,
        *,
        on_export: Callable[[], None] | None = None,
        allow_export: bool = True,
    ) -> None:
        import openvino

        staged: Any = model
        with torch.no_grad():
            analysis = staged.analyse(torch.zeros(1, int(staged.audio_channels), window))
        example = (analysis.x, analysis.xt)
        self.shapes = tuple(tuple(t.shape[1:]) for t in example)  # per window
        self.path = cache_dir / f"trunk-{_generation()}-{trunk_key(model, self.shapes)[:32]}.onnx"
        self.blobs = cache_dir / f"blobs-{_safe(openvino.__version__)}"
        self.export_s = 0.0
        if not self.path.is_file():
            if not allow_export:
                raise ExportDeferred(self.path.name)
            if on_export is not None:
                on_export()
            started = time.perf_counter()
            _export(model, example, self.path)
            self.export_s = time.perf_counter() - started
            _prune(cache_dir, self.blobs)
        elif not self.blobs.is_dir():  # a new OpenVINO: the blobs of the old one are of no use
            _prune(cache_dir, self.blobs)
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        config["INFERENCE_NUM_THREADS"] = str(threads)
        config["CACHE_DIR"] = str(self.blobs)  # OpenVINO's compiled model, read back in place of a compile
        self._compiled: Any = openvino.Core().compile_model(str(self.path), "CPU", config)
        self._request: Any = self._compiled.create_infer_request()

    def fits(self, x: torch.Tensor, xt: torch.Tensor) -> bool:
        """Whether the trunk's inputs have the exported shapes (a model that runs a short last window at
        its own length does not, for that window)."""
        return (tuple(x.shape[1:]), tuple(xt.shape[1:])) == self.shapes

    def __call__(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2C, Fq, Fr), (B, C, T) float32 of the exported shapes (:meth:`fits`) → the trunk's two
        outputs, one window at a time.

        For one window the outputs are OpenVINO's own output buffers, not copies: they are valid until the
        next call, which overwrites them (the runner synthesises each window before it runs the next). A
        batch is copied, window by window, into tensors this call allocates.
        """
        if x.shape[0] == 1:
            return self._infer(x, xt)
        y = yt = torch.empty(0)
        for i in range(x.shape[0]):
            one, one_t = self._infer(x[i : i + 1], xt[i : i + 1])
            if i == 0:
                y = one.new_empty((x.shape[0], *one.shape[1:]))
                yt = one_t.new_empty((x.shape[0], *one_t.shape[1:]))
            y[i : i + 1] = one
            yt[i : i + 1] = one_t
        return y, yt

    def _infer(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One window; inputs read in place, outputs as views of OpenVINO's buffers."""
        result = self._request.infer(
            [x.contiguous().numpy(), xt.contiguous().numpy()], share_inputs=True, share_outputs=True
        )
        y, yt = (torch.from_numpy(result[port]) for port in self._compiled.outputs)
        return y, yt


def _generation() -> str:
    """The part of an export's file name that a new export format, stemsplit or torch changes (their exports
    are never used again by this installation)."""
    return _safe(f"{_FORMAT}-{__version__}-{torch.__version__}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", name)


def _prune(cache_dir: Path, blobs: Path) -> None:
    """Remove the exports of other generations (about 170 MB each for ``htdemucs``) and the compiled blobs of
    other OpenVINO versions (about 180 MB per export and thread count), so that upgrades do not pile them
    up. This generation's exports and ``blobs`` stay (other models, windows, weights); a file another
    process still has open is left for a later run."""
    keep = f"trunk-{_generation()}-"
    for path in cache_dir.glob("trunk-*.onnx"):
        if not path.name.startswith(keep):
            with contextlib.suppress(OSError):
                path.unlink()
    for folder in cache_dir.glob("blobs-*"):
        if folder != blobs:
            shutil.rmtree(folder, ignore_errors=True)


def _export(model: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    """Export the trunk to ``path`` through a process-unique temp file and a rename (never a half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                _Trunk(model).eval(),
                example,
                str(temp),
                input_names=["x", "xt"],
                output_names=["y", "yt"],
                opset_version=18,
                dynamo=True,
                external_data=False,
                verbose=False,  # no progress lines on stdout, which carries only results
            )
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


_EXPORTER_NOISE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
"""A warning torch's exporter gives about its own internals (torch 2.13, a deprecation in torch)."""

_PY3130_NOISE = r"Guards may run slower on Python 3\.13\.0"
"""Dynamo's advice to upgrade Python 3.13.0 (its guards are slower there): the exported graph does not
run guards, so nothing of it applies to an export."""


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs notes about packages it does not need (torchvision) and warns about its own
    internals: neither is the user's business. Only those warnings are filtered, by their text: the warnings
    filters are process-wide, and other threads (stem writers) warn while the export runs."""
    warnings.filterwarnings("ignore", message=_EXPORTER_NOISE, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_PY3130_NOISE, category=RuntimeWarning)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
