"""One device runner: the bag's networks placed once on one device, run on batches of windows.

A :class:`DeviceRunner` is made once per device per run (per process, for the pipeline) and used for every
track. It owns what must not change per batch or per track:

* the models, moved to the device and set to eval once;
* the compute dtype and, for staged models (``analyse`` / ``trunk`` / ``synthesise``), the split: the
  STFT and iSTFT run eager in float32 outside autocast, only the trunk runs in the reduced precision and,
  where asked, compiled (``torch.compile`` of the trunk alone, no complex numbers in the graph) for the
  full window's shape only: a short last window of a model that takes any length runs eager, rather than
  compiling once more for each track;
* batch sizes from a few fixed buckets (1, or 2, 4, 8 … up to the batch size), so a short last batch
  does not pay for a full one; compiled, one bucket only (the batch size: a short last batch is padded),
  so the trunk compiles for one shape; a batch of one window is padded to two when the batch size
  is two or more, because one window alone takes another kernel path (its float32 rounding differs), and a
  track's output must not depend on what shares its batches;
* process settings (CPU threads, TF32 off for exact float32 on CUDA, cuDNN autotuning for fixed shapes) set
  when the runner is entered and restored when it is left, never per batch (the CUDA ones are counted
  across runners, :func:`~stemsplit.inference.devices.cuda_tuning`: the last one leaving restores them);
* in reduced precision, a finite flag per batch copied to the host behind its forward and read when the
  batch is finished (:meth:`DeviceRunner.result`), so launching never waits for the device;
* on the CPU, the trunk's backend as resolved (:mod:`~stemsplit.inference.cpu_backend`; with ``--compile
  on`` that is PyTorch, compiled): PyTorch, or an ONNX export run by OpenVINO (float32 or bfloat16) or ONNX Runtime (float32), exported and loaded for
  each bag member when the runner is prepared (:meth:`DeviceRunner.prepare`), else on its first window;
* what happens when something fails: a failed compile falls back to eager once, with a
  :class:`~stemsplit.errors.CompileFallbackWarning`; a failed export, or a runtime failing to load or run
  it, falls back to PyTorch for the rest of the run, with a :class:`~stemsplit.errors.CpuBackendFallbackWarning`; a batch with
  a non-finite value in reduced precision is redone in float32 with a
  :class:`~stemsplit.errors.NonFiniteWarning`; out of memory first drops the compiled trunk, then halves the
  batch, and at one window falls back to the CPU with a :class:`~stemsplit.errors.DeviceFallbackWarning` (the
  scheduler retries the whole device step); a GPU failure (no kernel image for this card, a CUDA, cuDNN or
  cuBLAS error) is raised as an :class:`~stemsplit.errors.AcceleratorError` that says what to do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch

from stemsplit.errors import (
    CompileFallbackWarning,
    CpuBackendFallbackWarning,
    DeviceFallbackWarning,
    InvalidOptionError,
    NonFiniteWarning,
    first_line,
)
from stemsplit.inference.accelerator import accelerator_errors
from stemsplit.inference.cpu_backend import ExportDeferred, ExportedTrunk
from stemsplit.inference.devices import (
    COMPLEX_ON_CPU,
    autocast,
    cuda_tuning,
    note_compile_failure,
    thread_settings,
)
from stemsplit.inference.transfer import HostFlag, transfers_for

__all__ = ["OOM", "DeviceRunner", "Launched", "ModelFn", "batch_buckets"]

ModelFn = Callable[[torch.Tensor], torch.Tensor]
"""A separation network: ``(B, C, T) float -> (B, S, C, T)``, T <= the window."""

OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

_STAGES = ("analyse", "trunk", "synthesise")


@dataclass(frozen=True)
class Launched:
    """A batch whose forward has been queued (see :meth:`DeviceRunner.launch`)."""

    member: int
    batch: torch.Tensor  # (bucket, C, T) the windows as run, padded
    out: torch.Tensor  # (bucket, S, C, T)
    finite: HostFlag | None  # whether ``out`` is finite, on its way to the host; in reduced precision only
    count: int  # the real windows, first in the batch


def batch_buckets(batch_size: int) -> tuple[int, ...]:
    """The batch sizes a runner uses: ``(1,)`` for 1, else 2, 4, 8 … below ``batch_size``, and itself.

    >>> batch_buckets(1), batch_buckets(6), batch_buckets(32)
    ((1,), (2, 4, 6), (2, 4, 8, 16, 32))
    """
    if batch_size < 1:
        raise InvalidOptionError(f"batch size must be >= 1, got {batch_size}", option="--batch-size")
    if batch_size == 1:
        return (1,)
    sizes = []
    size = 2
    while size < batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, batch_size)


EXPORT_BUDGET_S = 40.0
"""Seconds of trunk exports a bag's first run makes at most (about; see ``DeviceRunner._exported_trunk``):
with each export's compile and the members left in PyTorch, a first run stays under a minute of extra time;
the second run exports the rest."""


class DeviceRunner:
    """The bag's networks on one device, run on batches of windows.

    Args:
        models: the bag's networks (callables; an :class:`torch.nn.Module` is moved to ``device`` and set to
            eval, once).
        device: where they run.
        dtype: the compute dtype of the trunk (float32: exact).
        batch_size: the most windows per forward.
        fallback_device: where to go when even one window does not fit (None: nowhere, the error is raised).
        fallback_dtype: the dtype there.
        compile_trunk: ``torch.compile`` the trunk of staged models (their whole forward otherwise).
        threads: CPU intra-op threads while the runner is entered (None: leave torch's setting).
        window: the full window's length in samples; with ``compile_trunk``, batches of any other length run
            eager (None: every batch may run compiled).
        cpu_backend: what runs the trunk of staged models on the CPU in the runner's dtype (ignored
            elsewhere, and for batches redone in float32): ``openvino`` in float32 or bfloat16,
            ``onnxruntime`` in float32 (from :func:`~stemsplit.inference.cpu_backend.choose_cpu_backend`).
        backend_cache_dir: where the exported trunks are kept (required unless ``cpu_backend`` is torch).
        on_compiled: called once, after the first compiled batch ran (to mark the kernel cache warm).

    Use it as a context manager: entering applies the process settings, leaving restores them.
    """

    def __init__(
        self,
        models: Sequence[ModelFn],
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        *,
        fallback_device: torch.device | None = None,
        fallback_dtype: torch.dtype = torch.float32,
        compile_trunk: bool = False,
        threads: int | None = None,
        window: int | None = None,
        cpu_backend: Literal["torch", "openvino", "onnxruntime"] = "torch",
        backend_cache_dir: Path | None = None,
        on_compiled: Callable[[], None] | None = None,
    ) -> None:
        if cpu_backend != "torch" and backend_cache_dir is None:
            raise ValueError(f"the {cpu_backend} backend needs a backend_cache_dir")
        self.buckets = batch_buckets(batch_size)
        if compile_trunk:  # one compiled shape: every batch padded to the batch size
            self.buckets = self.buckets[-1:]
        self._on_compiled = on_compiled
        self.window = window
        self.device = device
        self.dtype = dtype
        self.fallback_device = fallback_device
        self.fallback_dtype = fallback_dtype
        self.fell_back = False
        self.compiled = compile_trunk
        self.threads = threads
        self.cpu_backend = cpu_backend
        self._backend_cache_dir = backend_cache_dir
        self._exported: dict[int, ExportedTrunk] = {}
        self._deferred: set[int] = set()  # members left in PyTorch this run: exports spread over runs
        self._export_s: list[float] = []  # the exports made by this runner, seconds each
        self._models = list(models)
        self._compiled: list[Callable[..., Any] | None] = []
        self._settings: ExitStack | None = None
        self._depth = 0
        self._place()

    # -- settings ----------------------------------------------------------------------------------

    def __enter__(self) -> DeviceRunner:
        """Apply the runner's process settings (re-entrant: only the outermost ``with`` applies them)."""
        self._depth += 1
        if self._depth == 1:
            stack = ExitStack()
            stack.enter_context(thread_settings(self.threads))
            stack.enter_context(cuda_tuning(self.device, exact=self.dtype == torch.float32))
            self._settings = stack
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._settings is not None:
            self._settings.close()
            self._settings = None

    @property
    def batch_size(self) -> int:
        """The most windows per forward now (halved after out-of-memory errors)."""
        return self.buckets[-1]

    def bucket(self, windows: int) -> int:
        """The batch size that ``windows`` ready windows run at (the smallest bucket that holds them)."""
        return next((b for b in self.buckets if b >= windows), self.buckets[-1])

    # -- running -----------------------------------------------------------------------------------

    def launch(self, member: int, windows: torch.Tensor) -> Launched:
        """Start separating a batch of windows with bag member ``member`` (asynchronous on CUDA).

        Args:
            member: index of the network in ``models``.
            windows: (n, C, T) float32 on :attr:`device`, ``n <= batch_size``.

        Returns:
            A handle for :meth:`result`. Nothing waits for the device here, so the next batch can be
            queued while this one runs.

        Raises:
            OOM: out of memory; call :meth:`shrink` and retry.
        """
        n = windows.shape[0]
        size = self.bucket(n)
        batch = windows
        if size > n:  # pad with silent windows to the bucket: fixed shapes, one kernel path per size
            batch = torch.cat([windows, windows.new_zeros((size - n, *windows.shape[1:]))])
        out = self._run(member, batch, self.dtype, eager=self.window not in (None, batch.shape[-1]))
        finite = None
        if self.dtype != torch.float32:  # copied behind the batch, read when it is finished
            finite = transfers_for(self.device).flag(torch.isfinite(out).all())
        return Launched(member, batch, out, finite, n)

    def result(self, launched: Launched) -> torch.Tensor:
        """The (n, S, C, T) float32 output of a launched batch, on :attr:`device`.

        In reduced precision this waits for that batch (not for later ones: an event behind its finite
        flag, copied to pinned memory when it was launched) to check it is finite; a batch with a
        non-finite value is redone in float32 with a :class:`NonFiniteWarning`.

        Raises:
            OOM: out of memory while redoing; call :meth:`shrink` and retry.
        """
        out = launched.out
        if launched.finite is not None and not launched.finite.get():
            warnings.warn(
                NonFiniteWarning(
                    f"{str(self.dtype).removeprefix('torch.')} produced a non-finite value on {self.device}; "
                    "that batch was redone in float32"
                ),
                stacklevel=2,
            )
            out = self._run(launched.member, launched.batch, torch.float32, eager=True)
        return out[: launched.count]

    def _run(
        self, member: int, batch: torch.Tensor, dtype: torch.dtype, *, eager: bool = False
    ) -> torch.Tensor:
        model = self._models[member]
        with torch.no_grad(), accelerator_errors(self.device):
            if not _is_staged(model):
                with autocast(self.device, dtype):
                    return cast(torch.Tensor, self._compiled_or_eager(member, model, eager, batch)).float()
            staged = cast(Any, model)
            spectral = torch.device("cpu") if self.device.type in COMPLEX_ON_CPU else self.device
            analysis = staged.analyse(batch.to(spectral))  # float32, outside autocast
            if self._on_exported(dtype):
                x, xt = self._exported_or_eager(member, staged, analysis.x, analysis.xt)
            else:
                with autocast(self.device, dtype):
                    x, xt = self._compiled_or_eager(
                        member, staged.trunk, eager, analysis.x.to(self.device), analysis.xt.to(self.device)
                    )
            # x, xt may be OpenVINO's output buffers, valid until its next call: used up here.
            stems = staged.synthesise(x.float().to(spectral), xt.float().to(spectral), analysis)
            return cast(torch.Tensor, stems).to(self.device)

    def _compiled_or_eager(
        self, member: int, eager_fn: Callable[..., Any], eager: bool, *args: torch.Tensor
    ) -> Any:
        """``eager_fn(*args)`` through its compiled form when there is one; a failing compile (it compiles
        on the first call) falls back to ``eager_fn`` once, with a warning. Out of memory is not a compile
        failure: it is raised for the scheduler to shrink."""
        compiled = None if eager else self._compiled[member]
        if compiled is None:
            return eager_fn(*args)
        try:
            out = compiled(*args)
        except OOM:
            raise
        except Exception as err:
            self._uncompile(err)
            return eager_fn(*args)
        if self._on_compiled is not None:
            self._on_compiled()
            self._on_compiled = None
        return out

    def _on_exported(self, dtype: torch.dtype) -> bool:
        return (
            self.cpu_backend != "torch"
            and self.device.type == "cpu"
            and dtype == self.dtype  # a batch redone in float32 after a non-finite value runs in PyTorch
        )

    @property
    def _runtime_name(self) -> str:
        return "ONNX Runtime" if self.cpu_backend == "onnxruntime" else "OpenVINO"

    def prepare(self, notify: Callable[[str], None] | None = None) -> None:
        """Prepare now what the first batch would: on the OpenVINO or ONNX Runtime backend, each network's
        trunk exported (once per weights, cached) and loaded by the runtime. Call it inside ``with runner``.

        Args:
            notify: told, in one line for people, before an export that takes a while (seconds to a
                minute) starts; nothing is said when the export is cached.
        """
        if not self._on_exported(self.dtype):
            return
        for member, model in enumerate(self._models):
            if _is_staged(model) and self._exported_trunk(member, model, notify) is None:
                if self.cpu_backend == "torch":
                    return  # the runtime failed: the runner is on PyTorch now

    def _exported_trunk(
        self, member: int, staged: Any, notify: Callable[[str], None] | None = None
    ) -> ExportedTrunk | None:
        """Member ``member``'s exported trunk, made on first use; None while it is deferred, or after the
        runtime failed (the runner moves to PyTorch for good, with a warning)."""
        trunk = self._exported.get(member)
        if trunk is not None or self.cpu_backend == "torch" or member in self._deferred:
            return trunk
        assert self._backend_cache_dir is not None
        window = self.window or int(staged.segment_samples)
        announce = None
        runtime = self._runtime_name
        if notify is not None:
            n, name = len(self._models), type(staged).__name__

            def announce() -> None:
                notify(
                    f"preparing the {runtime} backend: exporting {name} ({member + 1} of {n}) once, "
                    f"for this model and window; later runs reuse it ({self._backend_cache_dir})"
                )

        # A bag's exports are spread over two runs so that the first spends at most about EXPORT_BUDGET_S on
        # them: the first export always happens, another one when the time spent so far plus the longest export
        # fits; a member deferred by the run before is exported whatever the budget (ExportedTrunk's note).
        spent = sum(self._export_s)
        allow = not self._export_s or spent + max(self._export_s) <= EXPORT_BUDGET_S
        try:
            trunk = ExportedTrunk(
                staged,
                self._backend_cache_dir,
                torch.get_num_threads(),
                window,
                runtime=cast(Any, self.cpu_backend),
                dtype=self.dtype,
                on_export=announce,
                allow_export=allow,
            )
        except ExportDeferred:
            self._deferred.add(member)
            if notify is not None:
                notify(
                    f"the {runtime} backend: {type(staged).__name__} ({member + 1} of {len(self._models)}) runs in "
                    "PyTorch this time; the next run exports it "
                    f"(a first run spends at most about {EXPORT_BUDGET_S:.0f} s on exports)"
                )
            return None
        except Exception as err:
            self._leave_runtime(err)
            return None
        if trunk.export_s:
            self._export_s.append(trunk.export_s)
        self._exported[member] = trunk
        return trunk

    def _exported_or_eager(
        self, member: int, staged: Any, x: torch.Tensor, xt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk through the runtime (exported and loaded on first use, for the runner's window);
        inputs of another shape run the PyTorch trunk, in the runner's dtype. Anything failing in the
        runtime moves the runner to PyTorch for good, with a warning; errors of the PyTorch trunk are raised
        as they are."""
        trunk = self._exported_trunk(member, staged)
        if trunk is not None and trunk.fits(x, xt):
            try:
                return trunk(x, xt)
            except Exception as err:
                self._leave_runtime(err)
        with autocast(self.device, self.dtype):
            out: tuple[torch.Tensor, torch.Tensor] = staged.trunk(x, xt)
        return out

    def _leave_runtime(self, err: Exception) -> None:
        warnings.warn(
            CpuBackendFallbackWarning(
                f"{self._runtime_name} failed ({first_line(err)[:200]}); continuing with PyTorch (slower)"
            ),
            stacklevel=5,
        )
        self.cpu_backend = "torch"
        self._exported.clear()

    # -- reacting to failures ------------------------------------------------------------------------

    def shrink(self) -> bool:
        """React to an out-of-memory error: drop the compiled trunk, else halve the batch, else go to the
        fallback device. Returns False when nothing is left to try (the caller re-raises)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.compiled:
            self.compiled = False
            self._compiled = [None] * len(self._models)
            self.buckets = batch_buckets(self.batch_size)
            return True
        if self.batch_size > 1:
            self.buckets = batch_buckets(max(1, self.batch_size // 2))
            return True
        if self.fallback_device is None or self.fell_back:
            return False
        warnings.warn(
            DeviceFallbackWarning(
                f"out of memory on {self.device} even with one window per batch; "
                f"continuing on {self.fallback_device} (slower)"
            ),
            stacklevel=2,
        )
        self.device, self.dtype, self.fell_back = self.fallback_device, self.fallback_dtype, True
        self._place()
        return True

    def _uncompile(self, err: Exception) -> None:
        """Drop ``torch.compile`` after it failed (it compiles lazily, on the first batch) and go eager."""
        reason = first_line(err)
        warnings.warn(
            CompileFallbackWarning(
                f"torch.compile failed ({reason[:200]}); continuing without compiling (slower)"
            ),
            stacklevel=3,
        )
        note_compile_failure(err)
        self.compiled = False
        self._compiled = [None] * len(self._models)
        self.buckets = batch_buckets(self.batch_size)

    def _place(self) -> None:
        for model in self._models:
            if isinstance(model, torch.nn.Module):
                model.to(self.device).eval()
        self._compiled = [self._compile(m) if self.compiled else None for m in self._models]

    def _compile(self, model: ModelFn) -> Callable[..., Any]:
        target = cast(Any, model).trunk if _is_staged(model) else model
        return torch.compile(target, dynamic=False)


def _is_staged(model: object) -> bool:
    return all(hasattr(model, stage) for stage in _STAGES) and isinstance(model, torch.nn.Module)
