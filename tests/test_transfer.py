"""The staging buffers of :mod:`stemsplit.inference.transfer`: a block handed out stays right when its buffer
is reused (the CUDA copies themselves need a GPU: ``tests/test_cuda.py``)."""

from __future__ import annotations

import torch

from stemsplit.inference.transfer import MAX_STAGING, HostBlock, HostFlag, Transfers, _Ring, _Staging

CPU = torch.device("cpu")


class Copied:
    """Stands for a CUDA event: done or not yet, and records that the host waited for it."""

    def __init__(self, done: bool = True) -> None:
        self.done = done
        self.waited = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited = self.done = True


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


def test_the_ring_adds_a_buffer_rather_than_wait_and_waits_only_when_full() -> None:
    """Several tracks finishing blocks in one step: a copy still in flight is not waited for while the ring
    may grow; once it has MAX_STAGING buffers, the oldest is reused (after its copy)."""
    ring = _Ring()
    taken = []
    for _ in range(MAX_STAGING):
        staging = ring.next()
        assert staging not in taken
        staging.take(torch.Size([3]), CPU)
        staging.done = Copied(done=False)
        taken.append(staging)
    assert len(ring.items) == MAX_STAGING
    oldest = ring.next()
    assert oldest is taken[0] and not oldest.done.waited
    oldest.take(torch.Size([3]), CPU)
    assert taken[0].done is None  # waited for, then cleared
    taken[3].done.done = True  # a copy that finished: reused before any older busy one
    assert ring.next() is taken[3]
