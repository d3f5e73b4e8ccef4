"""The staging buffers of :mod:`stemsplit.inference.transfer`: a block handed out stays right when its buffer
is reused (the CUDA copies themselves need a GPU: ``tests/test_cuda.py``)."""

from __future__ import annotations

import torch

from stemsplit.inference.transfer import HostBlock, HostFlag, Transfers, _Staging

CPU = torch.device("cpu")


class Copied:
    """Stands for a CUDA event: records that the host waited for it."""

    def __init__(self) -> None:
        self.waited = False

    def synchronize(self) -> None:
        self.waited = True


def test_an_unread_block_is_taken_out_before_its_buffer_is_reused() -> None:
    staging = _Staging()
    buffer = staging.take(torch.Size([1, 2, 3]), CPU)
    buffer.copy_(torch.arange(6.0).reshape(1, 2, 3))
    event = Copied()
    staging.done = event
    block = staging.block = HostBlock(buffer, event)
    reused = staging.take(torch.Size([1, 2, 3]), CPU)  # the next copy through this buffer
    assert event.waited
    reused.fill_(-1.0)
    assert torch.equal(block.get(), torch.arange(6.0).reshape(1, 2, 3))


def test_a_read_block_is_its_own_memory_and_a_buffer_grows() -> None:
    staging = _Staging()
    buffer = staging.take(torch.Size([4]), CPU)
    buffer.copy_(torch.ones(4))
    block = HostBlock(buffer, Copied())
    got = block.get()
    buffer.fill_(0.0)
    assert torch.equal(got, torch.ones(4)) and block.frames == 4
    assert staging.take(torch.Size([2, 8]), CPU).shape == (2, 8)


def test_on_the_cpu_transfers_copy_nothing() -> None:
    transfers = Transfers(CPU)
    x = torch.randn(2, 5)
    assert transfers.upload(x) is x
    assert transfers.download(x).get() is x
    assert HostFlag(torch.tensor(False)).get() is False and transfers.flag(torch.tensor(True)).get() is True
