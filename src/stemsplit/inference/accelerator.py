"""Whether a GPU can run this torch's kernels, and what an accelerator failure means, in words.

A GPU that torch sees may still be unable to run its kernels: a torch built before the card's
architecture (an RTX 50-series card, ``sm_120``, under a torch built for CUDA 12.6 or older) fails on the
first kernel with "no kernel image is available for execution on the device". That is known before any
work: :func:`usable_devices` compares the card's compute capability with the architectures torch was built
for and runs one tiny kernel, and then refuses a named GPU (exit code 2) or, with ``--device auto``, runs
on the CPU with a note. What can only show up later (a cuDNN or cuBLAS error in the first batch) becomes
an :class:`~stemsplit.errors.AcceleratorError` naming the device and what to do (:func:`accelerator_error`),
so the track fails with that one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from stemsplit.errors import AcceleratorError, InvalidOptionError, first_line

__all__ = ["WHAT_TO_DO", "accelerator_error", "accelerator_errors", "kernel_gap", "usable_devices"]

WHAT_TO_DO = (
    "install a torch built for this GPU (https://pytorch.org/get-started/locally/; an RTX 50-series card "
    "needs CUDA 12.8 or later), or use --device cpu; `stemsplit doctor` shows the details"
)

_ACCELERATOR = re.compile(
    r"no kernel image|CUDA error|CUDNN_STATUS|cuDNN error|CUBLAS_STATUS|device-side assert|"
    r"CUDA driver|cudaError|HIP error",
    re.IGNORECASE,
)


def kernel_gap(capability: tuple[int, int], arch_list: Sequence[str], name: str) -> str | None:
    """Why a GPU of ``capability`` cannot run kernels built for ``arch_list`` (pure), or None when it can.

    A kernel built for ``sm_XY`` runs on cards ``X.Z`` with ``Z >= Y``; PTX (``compute_XY``) is compiled
    at load time for any card ``>= X.Y``. An empty ``arch_list`` (a build that does not say) passes.
    """
    if not arch_list:
        return None
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit() or len(digits) < 2:
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return None
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return None
    return (
        f"this torch {torch.__version__} has no kernels for the {name} (sm_{major}{minor}); it was built for "
        f"{', '.join(arch_list)}"
    )


def _probe(device: torch.device) -> str | None:
    """Run one tiny kernel on ``device``: None when it works, else the error's first line."""
    try:
        x = torch.ones(4, device=device)
        (x * 2).sum().item()
    except Exception as err:
        return first_line(err)
    return None


def _why_unusable(device: torch.device) -> str | None:
    name = torch.cuda.get_device_name(device)
    gap = kernel_gap(torch.cuda.get_device_capability(device), torch.cuda.get_arch_list(), name)
    if gap is not None:
        return gap
    failed = _probe(device)
    return None if failed is None else f"the {name} cannot run torch's kernels ({failed[:200]})"


def usable_devices(
    devices: Sequence[torch.device], spec: str | torch.device
) -> tuple[list[torch.device], str | None]:
    """The devices to run on, once each CUDA one ran a kernel (before any input is read).

    Args:
        devices: resolved from ``spec``.
        spec: the ``--device`` value (``auto`` may fall back to the CPU).

    Returns:
        The devices, and None; or with ``spec`` ``auto`` and a GPU that cannot run this torch, the CPU and
        the note to warn with.

    Raises:
        InvalidOptionError: a named GPU cannot run this torch's kernels (the message says what to do).
    """
    for device in devices:
        if device.type != "cuda":
            continue
        why = _why_unusable(device)
        if why is None:
            continue
        if spec == "auto":
            return [torch.device("cpu")], f"{why}; running on the CPU instead (slower): {WHAT_TO_DO}"
        raise InvalidOptionError(f"--device {spec}: {why}; {WHAT_TO_DO}", option="--device")
    return list(devices), None


def accelerator_error(err: BaseException, device: torch.device) -> AcceleratorError | None:
    """``err`` as an :class:`AcceleratorError` naming ``device`` and what to do, when it is a GPU failure
    (no kernel image, a CUDA, cuDNN or cuBLAS error); None for any other error (out of memory included)."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(err, oom) or not isinstance(err, RuntimeError) or not _ACCELERATOR.search(str(err)):
        return None
    return AcceleratorError(f"{device} failed running the model ({first_line(err)[:200]}): {WHAT_TO_DO}")


@contextmanager
def accelerator_errors(device: torch.device) -> Iterator[None]:
    """Raise a GPU failure inside as an :class:`AcceleratorError` (:func:`accelerator_error`); anything else
    passes unchanged.

    Raises:
        AcceleratorError: the block failed on the accelerator; the original error is its cause.
    """
    try:
        yield
    except RuntimeError as err:
        failure = accelerator_error(err, device)
        if failure is None:
            raise
        raise failure from err
