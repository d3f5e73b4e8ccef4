"""The CPU backend of a staged model's trunk: PyTorch, or one ONNX export run by OpenVINO or ONNX Runtime.

The trunk (both U-Nets and the transformer, between ``analyse`` and ``synthesise``) is nearly the whole cost
of a window. It is exported once to ONNX (the same file serves both runtimes) and run by whichever runtime was
measured faster on the CPU's family (:func:`choose_cpu_backend` states the figures); PyTorch runs it where
neither is installed (no wheel for the platform), where a runtime fails (with a warning), and for inputs of
another shape. Both runtimes are default dependencies (``pyproject.toml``; the README's design notes).

:class:`ExportedTrunk` exports the trunk once per weights to ONNX (``torch.onnx.export``, of its graph
optimiser only the constant folding, :func:`_export`; 15 s for the full-size ``htdemucs`` on a quiet 2-core
Xeon) into the cache, keyed by a hash of the weights, the architecture, the trunk's input shapes, the versions
of stemsplit and torch and the model package's source, written atomically (temp name, then rename; exports of
other stemsplit or torch versions are removed then). While exporting, the model takes the forms the runtimes
run fast and exactly (:mod:`stemsplit.model.norms`: norms with two-level sums, without which OpenVINO's norms
were 4e-4 off; the frequency DConv on the map, without transposed copies; each convolution · norm · GLU as two
convolutions of half the channels, :func:`stemsplit.model.layers.glu_conv`, without the GLU's split copy).
OpenVINO compiles the export the first time (about 4 s) and keeps the compiled model beside it
(``blobs-<openvino version>/``, about 180 MB per export, thread count and precision; other versions' folders
are removed), which later runs read back in 0.3-1 s; ONNX Runtime builds its session from the export each run
(about 0.8 s). Windows run one at a time, so a window's output never depends on what shares its batch; inputs
of another shape run in PyTorch.
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
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from stemsplit import settings
from stemsplit._version import __version__
from stemsplit.errors import InvalidOptionError
from stemsplit.inference.devices import cpu_flags

__all__ = [
    "CPU_BACKENDS",
    "RUNTIME_PACKAGES",
    "BackendChoice",
    "CpuBackend",
    "ExportDeferred",
    "ExportedTrunk",
    "Runtime",
    "choose_cpu_backend",
    "cpu_vendor",
    "import_onnxruntime",
    "import_openvino",
    "missing_packages",
    "resolve_cpu_backend",
    "trunk_key",
]

CpuBackend = Literal["auto", "torch", "openvino", "onnxruntime"]
CPU_BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino", "onnxruntime")

Runtime = Literal["openvino", "onnxruntime"]
"""The runtimes that run the exported trunk."""

_EXPORTER = ("onnx", "onnxscript")  # what torch.onnx.export needs
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "openvino": ("openvino", *_EXPORTER),
    "onnxruntime": ("onnxruntime", *_EXPORTER),
}
"""What each runtime's backend imports: the runtime, and the packages ``torch.onnx.export`` needs."""

_NAMES = {"torch": "PyTorch", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
_FORMAT = 3  # bump when the export changes in a way the other key parts do not show (3: constants folded)


class ExportDeferred(Exception):
    """The trunk is not exported yet and the caller did not allow an export now (its budget is spent)."""


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the trunk on the CPU, and why (one line for ``doctor`` and ``-v``)."""

    name: Literal["torch", "openvino", "onnxruntime"]
    why: str


def missing_packages() -> tuple[str, ...]:
    """The packages of :data:`RUNTIME_PACKAGES` that are not installed (found without importing them)."""
    wanted = dict.fromkeys(name for names in RUNTIME_PACKAGES.values() for name in names)
    return tuple(name for name in wanted if importlib.util.find_spec(name) is None)


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
    requested: str, dtype: torch.dtype, vendor: str, missing: tuple[str, ...], *, amx: bool = False
) -> BackendChoice:
    """The trunk's CPU backend (pure: the caller gathers the facts).

    The figures the rule rests on, per CPU family (the trunk of one full-size ``htdemucs`` window, unit-order
    layer scales, 2 threads, ``benchmarks/bench_cpu_levers.py``; ``benchmarks/RESULTS.md``):

    * Intel Xeon, family 6 model 207, AMX (2026-12-06): against PyTorch float32, on the quiet machine
      OpenVINO float32 1.28x and OpenVINO bfloat16 2.51x at 37.9 dB SNR against float32; on a loaded one
      (an older export) OpenVINO float32 1.60x, ONNX Runtime float32 0.89x (slower), OpenVINO bfloat16 2.78x,
      PyTorch bfloat16 1.13x at 37.5 dB. End to end against the demucs command (quiet): 2.16x-2.27x with
      the default options (bfloat16), 1.37x in float32 (median of 20 pairs). Earlier, model 167: OpenVINO
      float32 1.14x-1.31x. int8 (static, VNNI/AMX) fails the 35-dB bar at about 5 dB. So on Intel: OpenVINO,
      in bfloat16 too where the CPU has AMX (``--precision auto`` picks bfloat16 there; the bar is 35 dB).
    * AMD EPYC (2 cores, issue 29's turn-2 probe, an older export without the two-level-sum norms): ONNX
      Runtime 1.30x PyTorch, OpenVINO 0.91x. Not measured with the current export. So elsewhere: ONNX
      Runtime, in float32 only.
    * Arm: unmeasured. ONNX Runtime, as on AMD, until someone measures it.

    Args:
        requested: ``auto``, ``torch``, ``openvino`` or ``onnxruntime``.
        dtype: the compute dtype on the CPU.
        vendor: from :func:`cpu_vendor`.
        missing: from :func:`missing_packages`.
        amx: the CPU has AMX (``amx_bf16``), where OpenVINO's bfloat16 was measured.

    Raises:
        InvalidOptionError: an unknown name, or a runtime asked for whose packages are not installed.
    """
    if requested not in CPU_BACKENDS:
        raise InvalidOptionError.bad_value(
            settings.ENV_CPU_BACKEND, requested, "auto, torch, openvino or onnxruntime"
        )
    absent = {name: [p for p in RUNTIME_PACKAGES[name] if p in missing] for name in RUNTIME_PACKAGES}
    if absent.get(requested):
        raise InvalidOptionError(
            f"the {requested} CPU backend was asked for ({settings.ENV_CPU_BACKEND} or cpu_backend), but "
            f"{', '.join(absent[requested])} is not installed: pip install {' '.join(absent[requested])}",
            option=settings.ENV_CPU_BACKEND,
        )
    if requested == "torch":
        return BackendChoice("torch", "PyTorch, as asked")
    precision = str(dtype).removeprefix("torch.")
    if requested == "openvino" and dtype in (torch.float32, torch.bfloat16):
        return BackendChoice("openvino", f"OpenVINO in {precision}, as asked")
    if requested == "onnxruntime" and dtype == torch.float32:
        return BackendChoice("onnxruntime", "ONNX Runtime, as asked")
    if requested != "auto":
        return BackendChoice("torch", f"PyTorch: {_NAMES[requested]} is not used for {precision}")
    intel = vendor == "GenuineIntel"
    if dtype == torch.bfloat16:
        if intel and amx and not absent["openvino"]:
            return BackendChoice(
                "openvino", "OpenVINO in bfloat16: measured 2.5x PyTorch float32 at 37.9 dB on an AMX Xeon"
            )
        return BackendChoice("torch", "PyTorch: OpenVINO's bfloat16 is measured on Intel CPUs with AMX only")
    if dtype != torch.float32:
        return BackendChoice(
            "torch", f"PyTorch: the exported trunk runs float32 and bfloat16, not {precision}"
        )
    if intel:
        if not absent["openvino"]:
            return BackendChoice(
                "openvino", "OpenVINO: an Intel CPU, where it measured 1.14x to 1.31x PyTorch when quiet"
            )
        return BackendChoice(
            "torch",
            f"PyTorch: OpenVINO is not installed ({', '.join(absent['openvino'])}); ONNX Runtime measured "
            "0.89x PyTorch on an Intel Xeon",
        )
    if not absent["onnxruntime"]:
        family = "an AMD CPU" if vendor == "AuthenticAMD" else "not an Intel CPU"
        return BackendChoice(
            "onnxruntime",
            f"ONNX Runtime: {family} (measured 1.30x PyTorch on an AMD EPYC with an older export; Arm unmeasured)",
        )
    return BackendChoice(
        "torch", f"PyTorch: ONNX Runtime is not installed ({', '.join(absent['onnxruntime'])})"
    )


def resolve_cpu_backend(
    requested: str | None, dtype: torch.dtype, *, compiled: bool = False
) -> BackendChoice:
    """:func:`choose_cpu_backend` with this machine's facts; ``requested`` None reads
    ``STEMSPLIT_CPU_BACKEND`` (default ``auto``). With ``compiled`` (``--compile on``), ``torch.compile``
    runs the trunk where a runtime would have.

    Raises:
        InvalidOptionError: as :func:`choose_cpu_backend`.
    """
    name = requested if requested is not None else settings.cpu_backend()
    choice = choose_cpu_backend(name, dtype, cpu_vendor(), missing_packages(), amx="amx_bf16" in cpu_flags())
    if compiled and choice.name != "torch":
        return BackendChoice(
            "torch", f"PyTorch compiled, as --compile on asks (instead of {_NAMES[choice.name]})"
        )
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


Pair = tuple[torch.Tensor, torch.Tensor]


class _Trunk(torch.nn.Module):
    """A staged model's ``trunk`` as a module's forward (what the exporter takes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        staged: Any = self.model
        out: tuple[torch.Tensor, torch.Tensor] = staged.trunk(x, xt)
        return out


class ExportedTrunk:
    """A staged model's trunk through OpenVINO or ONNX Runtime, from an ONNX export cached per weights.

    Args:
        model: a staged model (``analyse`` / ``trunk`` / ``synthesise``) with ``audio_channels``, on the
            CPU, in eval mode.
        cache_dir: where exports are kept (created if missing).
        threads: the runtime's inference threads.
        window: the runner's window in samples (the bag's segment, which may differ from the model's own);
            the trunk is exported for the shapes that window analyses to.
        runtime: ``openvino`` or ``onnxruntime``.
        dtype: float32, or bfloat16 (OpenVINO only: its inference precision hint; inputs and outputs stay
            float32).
        on_export: called before an export starts (not when the export is cached).
        allow_export: False: raise :class:`ExportDeferred` instead of exporting when no export is cached,
            and leave a note (``<export>.deferred``) so that the next run exports it whatever its budget:
            a bag's members are all fast from its second run.

    Attributes:
        export_s: seconds the export took here (0 when it was cached).

    Raises:
        ExportDeferred: no export is cached, ``allow_export`` is False and no earlier run deferred it.
        Exception: whatever the exporter or the runtime raise (the runner falls back to PyTorch).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cache_dir: Path,
        threads: int,
        window: int,
        *,
        runtime: Runtime = "openvino",
        dtype: torch.dtype = torch.float32,
        on_export: Callable[[], None] | None = None,
        allow_export: bool = True,
    ) -> None:
        if dtype not in (torch.float32, torch.bfloat16) or (runtime != "openvino" and dtype != torch.float32):
            raise ValueError(
                f"{runtime} runs the exported trunk in float32 (OpenVINO also bfloat16), not {dtype}"
            )
        staged: Any = model
        with torch.no_grad():
            analysis = staged.analyse(torch.zeros(1, int(staged.audio_channels), window))
        example = (analysis.x, analysis.xt)
        self.runtime = runtime
        self.shapes = tuple(tuple(t.shape[1:]) for t in example)  # per window
        self.path = cache_dir / f"trunk-{_generation()}-{trunk_key(model, self.shapes)[:32]}.onnx"
        self.blobs: Path | None = None
        if runtime == "openvino":
            self.blobs = cache_dir / f"blobs-{_safe(import_openvino().__version__)}"
        self.export_s = 0.0
        _remove_stale(cache_dir)  # what killed exports left
        if not self.path.is_file():
            deferred = self.path.with_name(self.path.name + ".deferred")
            if not allow_export and not deferred.is_file():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                deferred.touch()
                raise ExportDeferred(self.path.name)
            if on_export is not None:
                on_export()
            started = time.perf_counter()
            _export(model, example, self.path)
            self.export_s = time.perf_counter() - started
            deferred.unlink(missing_ok=True)
            _prune(cache_dir, self.blobs)
        elif self.blobs is not None and not self.blobs.is_dir():  # a new OpenVINO: old blobs are no use
            _prune(cache_dir, self.blobs)
        if runtime == "openvino":
            self._infer = self._openvino(threads, "bf16" if dtype == torch.bfloat16 else "f32")
        else:
            self._infer = self._onnxruntime(threads)

    def _openvino(self, threads: int, precision: str) -> Callable[[torch.Tensor, torch.Tensor], Pair]:
        openvino = import_openvino()
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        config["INFERENCE_NUM_THREADS"] = str(threads)
        # OpenVINO's compiled model, read back in place of a compile: one folder per export file as written
        # (_blob_folder) and, in it, per precision and thread count, written whole or not at all.
        folder = _blob_folder(self.path, self.blobs or self.path.parent) / f"{precision}-{threads}"
        compiled: Any = _compile_once(
            folder,
            lambda cache: openvino.Core().compile_model(
                str(self.path), "CPU", config | {"CACHE_DIR": str(cache)}
            ),
        )
        request: Any = compiled.create_infer_request()

        def infer(x: torch.Tensor, xt: torch.Tensor) -> Pair:
            """One window; inputs read in place, outputs as views of OpenVINO's buffers."""
            result = request.infer(
                [x.contiguous().numpy(), xt.contiguous().numpy()], share_inputs=True, share_outputs=True
            )
            y, yt = (torch.from_numpy(result[port]) for port in compiled.outputs)
            return y, yt

        return infer

    def _onnxruntime(self, threads: int) -> Callable[[torch.Tensor, torch.Tensor], Pair]:
        onnxruntime = import_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its notes about the graph are not the user's business
        session: Any = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )

        def infer(x: torch.Tensor, xt: torch.Tensor) -> Pair:
            """One window; outputs are arrays ONNX Runtime allocated for this call."""
            y, yt = session.run(None, {"x": x.contiguous().numpy(), "xt": xt.contiguous().numpy()})
            return torch.from_numpy(y), torch.from_numpy(yt)

        return infer

    def fits(self, x: torch.Tensor, xt: torch.Tensor) -> bool:
        """Whether the trunk's inputs have the exported shapes (a model that runs a short last window at
        its own length does not, for that window)."""
        return (tuple(x.shape[1:]), tuple(xt.shape[1:])) == self.shapes

    def __call__(self, x: torch.Tensor, xt: torch.Tensor) -> Pair:
        """(B, 2C, Fq, Fr), (B, C, T) float32 of the exported shapes (:meth:`fits`) → the trunk's two
        float32 outputs, one window at a time.

        For one window on OpenVINO the outputs are OpenVINO's own output buffers, not copies: they are valid
        until the next call, which overwrites them (the runner synthesises each window before it runs the
        next). A batch is copied, window by window, into tensors this call allocates.
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


def import_openvino() -> Any:
    """``openvino``'s runtime, imported without its model-conversion tools (``openvino.tools.ovc``).

    ``import openvino`` otherwise imports them, and their import counts itself in ``~/intel/stats``, writes a
    client id to ``~/intel/openvino_ga_cid`` and sends a Google Analytics event from a forked process (3-s
    timeout), on every run, unless the user opted out (openvino 2026.4). stemsplit uses only the runtime, which
    ``openvino`` imports without the tools when they fail to import (its ``__init__`` allows that). Afterwards
    the tools import normally again (``from openvino.tools.ovc import convert_model``); only the shortcut
    ``openvino.convert_model`` is missing in a process where stemsplit imported ``openvino`` first.
    """
    with _IMPORTING:  # another thread must not see a half-imported openvino, nor lift the block early
        if "openvino" in sys.modules:
            return sys.modules["openvino"]
        tools = "openvino.tools.ovc"
        blocked = tools not in sys.modules
        if blocked:
            sys.modules[tools] = None  # type: ignore[assignment]  # its import raises ImportError
        try:
            import openvino
        finally:
            if blocked and sys.modules.get(tools, 0) is None:
                del sys.modules[tools]
        return openvino


_IMPORTING = threading.Lock()


def import_onnxruntime() -> Any:
    """``onnxruntime``, imported with its telemetry off (``ORT_DISABLE_TELEMETRY=1`` unless the user set it).

    On Linux, ONNX Runtime 1.32 otherwise writes a device id and an event store under
    ``~/.cache/Microsoft/DeveloperTools/`` on its first session, for Microsoft's event collector; the
    variable must be set before the import (``onnxruntime.disable_telemetry_events()`` after it is too late).
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


def _generation() -> str:
    """The part of an export's file name that a new export format, stemsplit or torch changes (their exports
    are never used again by this installation)."""
    return _safe(f"{_FORMAT}-{__version__}-{torch.__version__}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", name)


STALE_S = 3600.0
"""A temporary file or folder in the cache older than this (seconds) was left by a killed process: an export
takes under a minute, a compile seconds."""

_T = TypeVar("_T")


def _blob_folder(export: Path, blobs: Path) -> Path:
    """The folder of ``export``'s compiled blobs under ``blobs``, named by the export file as written (name,
    size, modification time): a blob never meets an export file other than the one it was compiled from (a
    blob that did, after the file was written again, crashed OpenVINO's inference)."""
    return blobs / _blob_name(export)


def _blob_name(export: Path) -> str:
    made = export.stat()
    return f"{export.stem}-{made.st_size}-{made.st_mtime_ns}"


def _compile_once(folder: Path, compile: Callable[[Path], _T]) -> _T:
    """``compile(cache)``, OpenVINO's compile with its model cache in ``cache``: ``folder`` when it exists (its
    blob is read back), else a new temporary folder of the call's own (unique even where process ids repeat,
    as in containers), renamed to ``folder`` once the compile (which writes the blob) returned. So a blob is
    seen whole or not at all: a process killed while writing one leaves only its temporary folder (removed by
    a later run after :data:`STALE_S`), and of two processes compiling at once, the second to finish drops its
    copy. (Where ``folder`` exists but OpenVINO finds no blob in it for this model and CPU, OpenVINO writes
    one there itself, not atomically.)"""
    _remove_stale(folder.parent)
    if folder.is_dir():
        return compile(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        result = compile(temp)
        with contextlib.suppress(OSError):  # another process's folder is there first: this one is dropped
            temp.rename(folder)
        return result
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _remove_stale(folder: Path) -> None:
    """Remove the temporary files and folders (``.*.tmp``) in ``folder`` older than :data:`STALE_S` (a folder
    not made yet has none: its glob is empty)."""
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > STALE_S:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()


def _prune(cache_dir: Path, blobs: Path | None) -> None:
    """Remove the exports of other generations (about 170 MB each for ``htdemucs``), the compiled blobs of
    exports no longer there or written again since (about 180 MB per export, precision and thread count) and
    those of other OpenVINO versions, so that upgrades do not pile them up. This generation's exports and
    their blobs stay (other models, windows, weights); a file another process still has open is left for a
    later run. ``blobs`` None (ONNX Runtime, which does not know OpenVINO's version): other versions' blob
    folders stay."""
    keep = f"trunk-{_generation()}-"
    for path in [*cache_dir.glob("trunk-*.onnx"), *cache_dir.glob("trunk-*.onnx.deferred")]:
        if not path.name.startswith(keep):
            with contextlib.suppress(OSError):
                path.unlink()
    # The blob folders are listed before the exports: a folder made meanwhile by another process belongs to
    # an export written before it, which the listing below sees.
    folders = [folder for version in cache_dir.glob("blobs-*") for folder in version.glob("trunk-*")]
    current = set()
    for export in cache_dir.glob("trunk-*.onnx"):
        with contextlib.suppress(OSError):  # removed meanwhile by another process
            current.add(_blob_name(export))
    for folder in folders:
        if folder.name not in current:
            shutil.rmtree(folder, ignore_errors=True)
    for version in cache_dir.glob("blobs-*"):
        if blobs is not None and version != blobs:
            shutil.rmtree(version, ignore_errors=True)


def _export(model: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    """Export the trunk to ``path`` through a process-unique temp file and a rename (never a half file); a
    killed export's temp file is removed by a later run (:func:`_remove_stale`).

    Of ONNX's graph optimisations only two run: constants folded and unused nodes removed (0.8 s for
    ``htdemucs``: 10,919 nodes to 3,772, without which OpenVINO read its compiled model back 0.2 s slower on
    every run). The full optimiser (onnxscript's rewriter) took 25 of the 40 s of that export for nothing
    measurable at run time (``benchmarks/RESULTS.md``, 2026-12-06).
    """
    import onnxscript.optimizer

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                _Trunk(model).eval(),
                example,
                input_names=["x", "xt"],
                output_names=["y", "yt"],
                opset_version=18,
                dynamo=True,
                optimize=False,
                verbose=False,  # no progress lines on stdout, which carries only results
            )
            assert program is not None  # the dynamo exporter returns its program
            onnxscript.optimizer.fold_constants(program.model)
            onnxscript.optimizer.remove_unused_nodes(program.model)
            program.save(str(temp), external_data=False)
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
