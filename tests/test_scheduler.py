"""The device runner and the scheduler: batches shared across tracks change nothing of any track's output.

The tiny real HT Demucs (random weights) runs in float32 on the CPU; "alone" is each track through its own
runner and scheduler, "together" is all of them sharing one, for several batch sizes and streams in flight.
"""

from __future__ import annotations

import pytest
import torch

from separation_helpers import OneThread, make_tiny_th
from stemsplit.errors import NonFiniteWarning
from stemsplit.inference import (
    DeviceRunner,
    EngineOptions,
    HostBlock,
    ModelBag,
    Scheduler,
    TrackStream,
    bag_plan,
    make_runner,
    track_stats,
)
from stemsplit.inference.runner import batch_buckets
from stemsplit.inference.stream import InputBuffer
from stemsplit.weights.loading import describe_model, load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> ModelBag:
    return load_model(describe_model(str(make_tiny_th(tmp_path_factory.mktemp("model")))))


@pytest.fixture(autouse=True)
def _one_thread():
    with OneThread():
        yield


def tracks(bag: ModelBag) -> list[torch.Tensor]:
    """Tracks of different lengths: shorter than one window, a window and a bit, several windows."""
    window = bag.segment_samples
    lengths = [window // 3, window + 17, 3 * window + 501, 2 * window - 40, 5 * window // 2]
    g = torch.Generator().manual_seed(7)
    return [0.3 * torch.randn(2, n, generator=g) for n in lengths]


def complete(wav: torch.Tensor) -> InputBuffer:
    audio = InputBuffer(wav.shape[0])
    audio.append(wav)
    audio.close()
    return audio


def separate(
    bag: ModelBag, wavs: list[torch.Tensor], *, batch_size: int, options: EngineOptions
) -> list[torch.Tensor]:
    """Every track in ``wavs`` through one shared runner and scheduler; their outputs, in order."""
    plan = bag_plan(bag, options)
    runner = make_runner(
        bag, plan, EngineOptions(device="cpu", precision="float32", batch_size=batch_size).compute(None)
    )
    outputs: list[list[torch.Tensor]] = [[] for _ in wavs]
    scheduler = Scheduler(runner, plan.members)
    with runner:
        for out, wav in zip(outputs, wavs, strict=True):
            scheduler.add(TrackStream(plan, complete(wav), track_stats(wav), _collect(out), CPU))
        while scheduler.step():
            pass
        scheduler.drain()
    return [torch.cat(out, dim=-1) for out in outputs]


def _collect(out: list[torch.Tensor]):
    def sink(block: HostBlock) -> None:
        out.append(block.get())

    return sink


@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize("shifts", [0, 1])
def test_tracks_together_give_bit_identical_outputs_to_each_alone(
    bag: ModelBag, batch_size: int, shifts: int
) -> None:
    options = EngineOptions(shifts=shifts, seed=3)
    wavs = tracks(bag)
    alone = [separate(bag, [wav], batch_size=batch_size, options=options)[0] for wav in wavs]
    together = separate(bag, wavs, batch_size=batch_size, options=options)
    for wav, a, t in zip(wavs, alone, together, strict=True):
        assert a.shape == (4, 2, wav.shape[-1])
        assert torch.equal(a, t)
    pairs = separate(bag, wavs[:2], batch_size=batch_size, options=options)  # fewer in flight
    assert all(torch.equal(a, p) for a, p in zip(alone, pairs, strict=False))


def test_the_scheduler_equals_the_streamed_engine(bag: ModelBag) -> None:
    """The streaming API (blocks arriving) and the pipeline's situation (the track complete) agree."""
    from stemsplit.inference import separate_tensor

    wav = tracks(bag)[2]
    options = EngineOptions(device="cpu", precision="float32", batch_size=2, block_samples=9001)
    streamed = separate_tensor(bag, wav, options=options)
    (scheduled,) = separate(bag, [wav], batch_size=2, options=options)
    assert (streamed - scheduled).abs().max() <= 1e-6


def test_batches_are_filled_from_several_tracks(bag: ModelBag) -> None:
    sizes: list[int] = []
    plan = bag_plan(bag, EngineOptions())
    runner = make_runner(
        bag, plan, EngineOptions(device="cpu", precision="float32", batch_size=4).compute(None)
    )
    launch = runner.launch
    runner.launch = lambda member, windows: sizes.append(windows.shape[0]) or launch(member, windows)  # type: ignore[method-assign]
    scheduler = Scheduler(runner, plan.members)
    short = tracks(bag)[0]  # one window each
    for _ in range(4):
        scheduler.add(TrackStream(plan, complete(short), track_stats(short), lambda b: None, CPU))
    with runner:
        while scheduler.step():
            pass
    assert sizes == [4]  # four one-window tracks, one forward


def test_batch_buckets_are_fixed_and_one_window_runs_padded_to_two() -> None:
    assert batch_buckets(1) == (1,)
    assert batch_buckets(2) == (2,)
    assert batch_buckets(5) == (2, 4, 5)
    assert batch_buckets(32) == (2, 4, 8, 16, 32)
    seen: list[int] = []

    def model(mix: torch.Tensor) -> torch.Tensor:
        seen.append(mix.shape[0])
        return mix[:, None]

    runner = DeviceRunner([model], CPU, torch.float32, 8)
    for n in (1, 3, 8):
        out = runner.result(runner.launch(0, torch.ones(n, 2, 10)))
        assert out.shape == (n, 1, 2, 10)
    assert seen == [2, 4, 8]


class NanInReducedPrecision:
    """A model that overflows (returns NaN) when autocast is on, and is fine in float32."""

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        out = mix[:, None] * 2
        if torch.is_autocast_enabled("cpu"):
            out = out.to(torch.bfloat16) * float("nan")
        return out


def test_a_non_finite_batch_in_reduced_precision_is_redone_in_float32() -> None:
    runner = DeviceRunner([NanInReducedPrecision()], CPU, torch.bfloat16, 2)
    windows = torch.randn(2, 2, 16)
    with pytest.warns(NonFiniteWarning, match="redone in float32"):
        out = runner.result(runner.launch(0, windows))
    assert torch.isfinite(out).all() and torch.equal(out, windows[:, None] * 2)
    exact = DeviceRunner([NanInReducedPrecision()], CPU, torch.float32, 2)
    assert torch.equal(exact.result(exact.launch(0, windows)), windows[:, None] * 2)  # nothing to redo


def test_host_blocks_hand_over_cpu_tensors() -> None:
    data = torch.arange(6.0).reshape(1, 2, 3)
    block = HostBlock(data)
    assert block.frames == 3 and block.get() is data


def test_runner_settings_are_applied_once_and_restored() -> None:
    previous = torch.get_num_threads()  # 1, from the fixture
    runner = DeviceRunner([lambda m: m[:, None]], CPU, torch.float32, 1, threads=previous + 1)
    with runner:
        assert torch.get_num_threads() == previous + 1
        with runner:  # re-entered by a nested call: nothing changes, nothing is restored early
            assert torch.get_num_threads() == previous + 1
        assert torch.get_num_threads() == previous + 1
    assert torch.get_num_threads() == previous
