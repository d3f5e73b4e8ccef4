"""Copies between the host and one device that never make the host wait for the device.

On CUDA a :class:`Transfers` owns two copy streams of its device (one per direction, so an upload never
queues behind a download that waits for the compute stream) and pinned staging buffers per direction,
reused in turn: two to begin with, another one (up to :data:`MAX_STAGING`) when the next is still in use,
each grown when a copy needs more. An upload is copied by the host into a staging buffer, then to the
device on the upload stream, and the compute stream waits for it there (an event, not the host). A
download waits on the device for the compute stream's event, is copied on the download stream into a
staging buffer and handed out as a :class:`HostBlock`, whose reader waits for that copy alone. The host
waits only when every staging buffer of a direction is in use: for the oldest one's copy, and a download
not read by then is first taken out of its buffer (a slow reader costs a host copy, never a wrong block).

Everywhere else (CPU, MPS) the same calls are plain copies (on the CPU, none at all), so the batch loop is
one code path on every device.

A :class:`Transfers` belongs to the thread driving its device (one device thread per device): get it with
:func:`transfers_for`.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["HostBlock", "HostFlag", "Transfers", "transfers_for"]


class HostBlock:
    """A block of stems on the host, perhaps still in flight from the device (see the module docstring).

    :meth:`get` waits for its copy (not for anything queued after it) and returns the (S, C, n) float32 CPU
    tensor, so the thread that writes the stems waits, not the one that drives the device.
    """

    def __init__(self, data: torch.Tensor, ready: Any = None) -> None:
        self._data = data
        self._ready = ready  # a CUDA event: the copy into a staging buffer is done
        self._lock = threading.Lock()

    @property
    def frames(self) -> int:
        """Samples per channel in the block."""
        return int(self._data.shape[-1])

    def get(self) -> torch.Tensor:
        """The block, (S, C, n) float32 on the CPU (its own memory: the staging buffer is reused)."""
        with self._lock:
            self._settle()
            return self._data

    @property
    def taken(self) -> bool:
        """Whether the block is in its own memory (read, or never staged)."""
        return self._ready is None

    def release(self) -> None:
        """Take the block out of its staging buffer now (before that buffer is reused)."""
        with self._lock:
            self._settle()

    def _settle(self) -> None:
        if self._ready is not None:
            self._ready.synchronize()
            self._data = self._data.clone()
            self._ready = None


class HostFlag:
    """A device boolean copied to the host without waiting; :meth:`get` waits for that copy alone."""

    def __init__(self, host: torch.Tensor, ready: Any = None) -> None:
        self._host = host
        self._ready = ready

    def get(self) -> bool:
        """The value (waits for the copy, on CUDA for the work queued before it)."""
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        # A host tensor: reading it through numpy needs no device (the event above made it valid).
        return bool(self._host.numpy())


MAX_STAGING = 8
"""Pinned staging buffers per direction at most (a step copies one span per track in its batch)."""


class _Staging:
    """One pinned staging buffer, and what must happen before it is reused."""

    def __init__(self) -> None:
        self.buffer = torch.empty(0)
        self.done: Any = None  # event of the last copy through it
        self.block: HostBlock | None = None  # the download it holds, perhaps unread

    def free(self) -> bool:
        """Whether it can be reused without waiting (its copy done, its download read)."""
        return (self.done is None or bool(self.done.query())) and (self.block is None or self.block.taken)

    def take(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The buffer, free for a new copy, viewed as float32 ``shape`` (waits if it was not :meth:`free`)."""
        if self.block is not None:
            self.block.release()
            self.block = None
        if self.done is not None:
            self.done.synchronize()
            self.done = None
        need = shape.numel()
        if self.buffer.numel() < need:
            size = max(need, 2 * self.buffer.numel())
            self.buffer = torch.empty(size, pin_memory=device.type == "cuda")
        return self.buffer[:need].view(shape)


class _Ring:
    """The staging buffers of one direction, used in turn (see the module docstring)."""

    def __init__(self) -> None:
        self.items = [_Staging(), _Staging()]
        self._next = 0

    def next(self) -> _Staging:
        """The next free buffer; a new one while there are fewer than :data:`MAX_STAGING`; else the oldest."""
        n = len(self.items)
        for i in range(n):
            item = self.items[(self._next + i) % n]
            if item.free():
                self._next = (self._next + i + 1) % n
                return item
        if n < MAX_STAGING:
            self.items.insert(self._next, _Staging())  # just before the oldest: the last to be reused
            self._next = (self._next + 1) % (n + 1)
            return self.items[self._next - 1]
        item = self.items[self._next]
        self._next = (self._next + 1) % n
        return item


class Transfers:
    """Uploads and downloads for one device (see the module docstring).

    Args:
        device: the device; copy streams and pinned staging buffers on CUDA, plain copies elsewhere.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        streams: Any = [torch.cuda.Stream(device=device) for _ in "ud"] if self._cuda else [None, None]  # type: ignore[no-untyped-call]
        self._up_stream, self._down_stream = streams
        self._up = _Ring()
        self._down = _Ring()

    def upload(self, host: torch.Tensor) -> torch.Tensor:
        """A float32 CPU tensor, on the device: usable by the compute stream at once (it waits there)."""
        if not self._cuda:
            return host.to(self.device, dtype=torch.float32)
        staging = self._up.next()
        buffer = staging.take(host.shape, self.device)
        buffer.copy_(host)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._up_stream):
            dest = torch.empty(host.shape, device=self.device)
            dest.copy_(buffer, non_blocking=True)
            staging.done = self._record(self._up_stream)
        compute.wait_event(staging.done)
        dest.record_stream(compute)  # freed only after the compute stream is done with it
        return dest

    def download(self, block: torch.Tensor) -> HostBlock:
        """A device tensor's values on the host, once the compute stream has made them (no host wait)."""
        if not self._cuda:
            return HostBlock(block.to("cpu"))
        staging = self._down.next()
        buffer = staging.take(block.shape, self.device)
        self._down_stream.wait_event(self._record(torch.cuda.current_stream(self.device)))
        with torch.cuda.stream(self._down_stream):
            buffer.copy_(block, non_blocking=True)
            staging.done = self._record(self._down_stream)
        block.record_stream(self._down_stream)  # not reused before the copy has read it
        staging.block = HostBlock(buffer, staging.done)
        return staging.block

    def flag(self, value: torch.Tensor) -> HostFlag:
        """A 0-d device boolean, copied to pinned host memory behind the work that makes it."""
        if not self._cuda:
            return HostFlag(value.to("cpu"))
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(value, non_blocking=True)
        return HostFlag(host, self._record(torch.cuda.current_stream(self.device)))

    @staticmethod
    def _record(stream: Any) -> Any:
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(stream)
        return event


_LOCAL = threading.local()


def transfers_for(device: torch.device) -> Transfers:
    """This thread's :class:`Transfers` for ``device`` (made on first use)."""
    table: dict[torch.device, Transfers] = getattr(_LOCAL, "table", None) or {}
    _LOCAL.table = table
    if device not in table:
        table[device] = Transfers(device)
    return table[device]
