"""The engine's loop on stand-in models: identity overlap-add, streaming, batching, shifts, bags, OOM."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stemsplit.errors import CompileFallbackWarning, DeviceFallbackWarning, InvalidOptionError
from stemsplit.inference import DeviceRunner, EngineOptions, ModelBag, separate_stream, separate_tensor
from stemsplit.inference.stats import stats_from_blocks


def identity_model(sources: int):
    """Returns the input once per source, scaled by 1..S, so that a mixed-up source order shows."""

    def model(mix: torch.Tensor) -> torch.Tensor:
        return torch.stack([mix * (k + 1) for k in range(sources)], dim=1)

    return model


def bag_of(
    model, sources: int, segment: int, samplerate: int = 1000, channels: int = 2, weights=None
) -> ModelBag:
    names = tuple(f"s{k}" for k in range(sources))
    models = model if isinstance(model, tuple) else (model,)
    return ModelBag(models, names, samplerate, channels, segment, weights)


def cpu(**kw) -> EngineOptions:
    """Engine options on the CPU, in exact float32 unless a test asks for another precision."""
    return EngineOptions(**{"device": "cpu", "precision": "float32", **kw})


def expected_identity(wav: torch.Tensor, sources: int) -> torch.Tensor:
    return torch.stack([wav * (k + 1) for k in range(sources)])


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(0, 3000),
    segment=st.integers(4, 600),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]),
    sources=st.integers(1, 6),
    batch=st.integers(1, 5),
    block=st.integers(1, 4000),
    shifts=st.integers(0, 2),
)
def test_identity_model_gives_back_the_input(length, segment, overlap, sources, batch, block, shifts) -> None:
    wav = torch.randn(2, length, generator=torch.Generator().manual_seed(length))
    bag = bag_of(identity_model(sources), sources, segment, samplerate=200)
    opts = cpu(overlap=overlap, batch_size=batch, block_samples=block, shifts=shifts)
    out = separate_tensor(bag, wav, options=opts, normalise=False)
    assert out.shape == (sources, 2, length)
    torch.testing.assert_close(out, expected_identity(wav, sources), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("length", [1, 99, 1001, 12345])
def test_identity_with_track_normalisation(length: int) -> None:
    wav = torch.randn(2, length, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.01
    out = separate_tensor(bag_of(identity_model(3), 3, 1000), wav, options=cpu())
    mean = wav.mean(0).mean()  # the normalisation's offset comes back once, the scale cancels
    expected = torch.stack([(k + 1) * (wav - mean) + mean for k in range(3)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_a_model_that_ignores_its_padding_shows_the_context_rule() -> None:
    """Each window sees its real left context: a model outputting its own read position proves where it read.

    The input is a ramp (sample i holds i + 1). A short last window must read the ramp to its left and zeros
    past the end; the identity output then equals the ramp, which only holds if nothing was shifted.
    """
    length, segment = 1000, 300
    ramp = torch.arange(1, length + 1, dtype=torch.float32).repeat(2, 1)
    seen: list[torch.Tensor] = []

    def model(mix: torch.Tensor) -> torch.Tensor:
        seen.append(mix[:, 0].clone())
        return mix[:, None]

    out = separate_tensor(bag_of(model, 1, segment), ramp, options=cpu(batch_size=1), normalise=False)
    torch.testing.assert_close(out[0], ramp, rtol=1e-6, atol=1e-4)
    last = seen[-1][0]  # offsets 0, 225, 450, 675, 900: the last chunk has 100 samples, delta 200
    expected = torch.cat([torch.arange(801, 1001, dtype=torch.float32), torch.zeros(100)])
    assert torch.equal(last[:300], expected)


def test_streamed_equals_whole_track_whatever_the_blocks() -> None:
    wav = torch.randn(2, 5003, generator=torch.Generator().manual_seed(0))

    def model(mix: torch.Tensor) -> torch.Tensor:  # non-linear, position-dependent
        return torch.stack([torch.tanh(mix), mix.cumsum(-1) / 100], dim=1)

    bag = bag_of(model, 2, 700)
    whole = separate_tensor(bag, wav, options=cpu())
    pieces: list[torch.Tensor] = []
    sizes = [1, 2, 500, 3, 1700, 2797]
    bounds = np.cumsum([0, *sizes])
    blocks = [wav[:, a:b].numpy() for a, b in itertools.pairwise(bounds)]
    stats = stats_from_blocks(blocks)
    report = separate_stream(bag, iter(blocks), pieces.append, stats=stats, options=cpu(batch_size=2))
    streamed = torch.cat(pieces, dim=-1)
    assert report.samples == 5003 and sum(p.shape[-1] for p in pieces) == 5003
    assert all(p.dtype == torch.float32 and p.shape[:2] == (2, 2) for p in pieces)
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)


def test_output_is_emitted_before_the_input_ends() -> None:
    """Streaming: a finished block reaches the sink while later input is still unread."""
    segment, fed, emitted_when = 400, [0], []
    bag = bag_of(identity_model(1), 1, segment)

    def blocks():
        for _ in range(20):
            fed[0] += 500
            yield torch.ones(2, 500)

    def sink(block: torch.Tensor) -> None:
        emitted_when.append(fed[0])

    separate_stream(bag, blocks(), sink, stats=None, options=cpu(batch_size=1))
    assert emitted_when[0] <= 1000 and len(emitted_when) > 10


def test_buffers_stay_bounded_on_a_long_stream() -> None:
    """Memory does not grow with the track: the largest read/accumulated span is independent of length."""
    segment, biggest = 1000, [0]

    def model(mix: torch.Tensor) -> torch.Tensor:
        return mix[:, None]

    def sink(block: torch.Tensor) -> None:
        biggest[0] = max(biggest[0], block.shape[-1])

    blocks = (torch.zeros(2, 300) for _ in range(3000))  # 900,000 samples, 1200 windows
    report = separate_stream(bag_of(model, 1, segment), blocks, sink, stats=None, options=cpu(batch_size=3))
    assert report.samples == 900_000
    assert biggest[0] <= 3 * 750 + 300  # one batch of strides plus one block


def test_seeded_shifts_are_reproducible_and_seed_dependent() -> None:
    wav = torch.randn(2, 3000, generator=torch.Generator().manual_seed(1))

    def model(mix: torch.Tensor) -> torch.Tensor:  # not shift-equivariant, so delays change the output
        pos = torch.linspace(0, 1, mix.shape[-1])
        return (mix * pos)[:, None]

    bag = bag_of(model, 1, 500, samplerate=1000)
    a = separate_tensor(bag, wav, options=cpu(shifts=2, seed=5))
    b = separate_tensor(bag, wav, options=cpu(shifts=2, seed=5, batch_size=3))
    c = separate_tensor(bag, wav, options=cpu(shifts=2, seed=6))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert torch.equal(a, separate_tensor(bag, wav, options=cpu(shifts=2, seed=5)))
    assert (a - c).abs().max() > 1e-3


def test_bag_weights_and_only_contributing_members_run() -> None:
    wav = torch.randn(2, 2000, generator=torch.Generator().manual_seed(2))
    calls = [0, 0, 0]

    def member(i: int):
        def model(mix: torch.Tensor) -> torch.Tensor:
            calls[i] += 1
            return torch.stack([mix * (i + 1), mix * (10 * (i + 1)), -mix], dim=1)

        return model

    models = (member(0), member(1), member(2))
    weights = ((1.0, 0.0, 2.0), (3.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    bag = bag_of(models, 3, 400, weights=weights)
    out = separate_tensor(bag, wav, options=cpu(), normalise=False)
    # stem k = Σ_m w[m][k] out_m[k] / Σ_m w[m][k]
    s0 = (1 * 1 + 3 * 2) / 4 * wav
    s1 = (1 * 20) / 1 * wav
    s2 = (2 * -1 + 1 * -1) / 3 * wav
    torch.testing.assert_close(out, torch.stack([s0, s1, s2]), rtol=1e-5, atol=1e-5)
    assert calls[0] and calls[1] and calls[2]

    calls[:] = [0, 0, 0]
    only = separate_tensor(bag, wav, options=cpu(stems=("s1",)), normalise=False)
    assert calls[0] == 0 and calls[2] == 0 and calls[1] > 0  # s1 gets weight only from member 1
    torch.testing.assert_close(only, s1[None], rtol=1e-5, atol=1e-5)


def test_stem_selection_order_and_validation() -> None:
    wav = torch.randn(2, 700)
    bag = bag_of(identity_model(3), 3, 300)
    out = separate_tensor(bag, wav, options=cpu(stems=("s2", "s0")), normalise=False)
    torch.testing.assert_close(out, torch.stack([3 * wav, wav]), rtol=1e-6, atol=1e-6)
    for bad in (("nope",), (), ("s1", "s1")):
        with pytest.raises(InvalidOptionError):
            separate_tensor(bag, wav, options=cpu(stems=bad))
    with pytest.raises(InvalidOptionError, match="segment"):
        separate_tensor(bag, wav, options=cpu(segment_samples=301))
    with pytest.raises(ValueError, match="blocks"):
        separate_tensor(bag_of(identity_model(1), 1, 300, channels=1), wav)


def test_progress_counts_every_window() -> None:
    seen: list[tuple[int, int | None]] = []
    wav = torch.randn(2, 2500)
    separate_tensor(
        bag_of(identity_model(1), 1, 400),
        wav,
        options=cpu(batch_size=2, shifts=2),
        progress=lambda d, t: seen.append((d, t)),
    )
    # windows per lane: ceil((2500 + delay) / 300); total is known from the track statistics
    assert seen[-1][0] == seen[-1][1] and seen[-1][0] >= 2 * 9
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


class OomAbove:
    """A fake model that raises CUDA-style out-of-memory for batches larger than ``limit``."""

    def __init__(self, limit: int, sources: int = 2) -> None:
        self.limit, self.sources, self.batches = limit, sources, []

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        self.batches.append(mix.shape[0])
        if mix.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.stack([mix * (k + 1) for k in range(self.sources)], dim=1)


def test_out_of_memory_halves_the_batch_and_loses_nothing() -> None:
    wav = torch.randn(2, 9000, generator=torch.Generator().manual_seed(4))
    fake = OomAbove(limit=2)
    out = separate_tensor(bag_of(fake, 2, 500), wav, options=cpu(batch_size=8), normalise=False)
    torch.testing.assert_close(out, expected_identity(wav, 2), rtol=1e-6, atol=1e-6)
    assert 8 in fake.batches and 4 in fake.batches and max(fake.batches[-3:]) <= 2


def test_out_of_memory_at_batch_one_falls_back_with_a_warning() -> None:
    """The CUDA → CPU fallback path, exercised with a cpu → cpu device pair (same code)."""
    state = {"fail": True}

    def flaky(mix: torch.Tensor) -> torch.Tensor:
        if state["fail"]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return mix[:, None]

    class MovesToCpu(torch.nn.Module):
        def forward(self, mix: torch.Tensor) -> torch.Tensor:
            return flaky(mix)

        def _apply(self, fn, recurse=True):  # called by .to(device): the "GPU" is left behind
            state["fail"] = False
            return super()._apply(fn, recurse)

    model = MovesToCpu()
    state["fail"] = True
    runner = DeviceRunner([model], torch.device("cpu"), torch.float16, 4, fallback_device=torch.device("cpu"))
    state["fail"] = True  # placing the model on its device must not have cured it
    wav = torch.randn(2, 1000, generator=torch.Generator().manual_seed(3))
    bag = bag_of(model, 1, 100)
    with pytest.warns(DeviceFallbackWarning, match="out of memory"):
        out = separate_tensor(bag, wav, options=cpu(batch_size=4), normalise=False, runner=runner)
    assert runner.fell_back and runner.batch_size == 1 and runner.dtype == torch.float32
    torch.testing.assert_close(out, wav[None])


def test_out_of_memory_on_the_cpu_itself_is_raised() -> None:
    with pytest.raises(torch.OutOfMemoryError):
        separate_tensor(bag_of(OomAbove(limit=0), 2, 10), torch.zeros(2, 30), options=cpu(), normalise=False)


def test_a_failing_torch_compile_falls_back_to_the_eager_model(monkeypatch) -> None:
    """torch.compile compiles on the first call; when that fails (no C compiler, no Triton) the batch is
    retried uncompiled with a warning, and later batches stay eager."""
    calls: list[int] = []

    def broken_compile(fn, **kwargs):
        def compiled(mix: torch.Tensor) -> torch.Tensor:
            calls.append(mix.shape[0])
            raise RuntimeError("InductorError: no working C++ compiler found\nlong details")

        return compiled

    from stemsplit.inference.compute import compile_choice

    def should_compile(requested: bool | None, device: torch.device, seconds: float) -> bool:
        return compile_choice(requested, device, seconds, warm=True).on

    monkeypatch.setattr(torch, "compile", broken_compile)
    cuda, hour = torch.device("cuda", 0), 100 * 3600.0  # long enough to repay any compile
    assert should_compile(None, cuda, hour)
    runner = DeviceRunner([identity_model(2)], torch.device("cpu"), torch.float32, 2, compile_trunk=True)
    windows = torch.randn(2, 2, 50)
    with pytest.warns(CompileFallbackWarning, match="no working C\\+\\+ compiler found\\); continuing"):
        out = runner.result(runner.launch(0, windows))
    again = runner.result(runner.launch(0, windows))  # later batches stay eager
    assert calls == [2] and not runner.compiled
    assert not should_compile(None, cuda, hour)  # the next long track does not try again
    assert should_compile(True, cuda, hour)  # asked for explicitly: still tried
    torch.testing.assert_close(out, torch.stack([windows, 2 * windows], dim=1))
    torch.testing.assert_close(again, out)


def test_an_error_of_the_model_itself_is_not_hidden_by_the_compile_fallback(monkeypatch) -> None:
    def broken(mix: torch.Tensor) -> torch.Tensor:
        raise ValueError("the model is broken")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    runner = DeviceRunner([broken], torch.device("cpu"), torch.float32, 2, compile_trunk=True)
    with pytest.warns(CompileFallbackWarning), pytest.raises(ValueError, match="the model is broken"):
        runner.launch(0, torch.zeros(2, 2, 10))
    eager = DeviceRunner([broken], torch.device("cpu"), torch.float32, 2)
    with pytest.raises(ValueError, match="the model is broken"):
        eager.launch(0, torch.zeros(2, 2, 10))


@pytest.mark.parametrize("caller", ["default", "high", "per-backend"])
def test_float32_on_cuda_switches_tf32_off_and_restores_the_callers_setting(caller: str) -> None:
    """float32 is the exact mode: TensorFloat-32 (cuDNN's default for convolutions) must be off inside,
    with both of PyTorch's views of the setting readable (torch.compile reads them). The flags are plain
    process settings, so this runs without a GPU."""
    from stemsplit.inference.devices import cuda_tuning

    cudnn = torch.backends.cudnn
    saved = (torch.get_float32_matmul_precision(), cudnn.allow_tf32)
    try:
        if caller == "high":
            torch.set_float32_matmul_precision("high")
        elif caller == "per-backend" and hasattr(cudnn, "rnn"):
            cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = "tf32", "ieee"  # legacy view unreadable
        before_matmul = torch.get_float32_matmul_precision()
        before_conv = cudnn.conv.fp32_precision if hasattr(cudnn, "conv") else None

        with cuda_tuning(torch.device("cuda", 0), exact=True):
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert cudnn.allow_tf32 is False
            assert cudnn.benchmark is True  # fixed shapes per batch bucket: autotuning pays

        assert torch.get_float32_matmul_precision() == before_matmul
        if before_conv is not None:
            assert cudnn.conv.fp32_precision == before_conv
        with cuda_tuning(torch.device("cpu"), exact=True):  # nothing to switch on the CPU
            assert torch.get_float32_matmul_precision() == before_matmul
    finally:
        torch.set_float32_matmul_precision(saved[0])
        cudnn.allow_tf32 = saved[1]


def test_cuda_settings_stay_until_the_last_runner_leaves() -> None:
    """Two device threads' runners: the settings are the process's, so the one leaving first must not
    restore them under the other; a float32 runner joining a reduced-precision one switches TF32 off."""
    from stemsplit.inference.devices import cuda_tuning

    cudnn = torch.backends.cudnn
    saved = (torch.get_float32_matmul_precision(), cudnn.allow_tf32, cudnn.benchmark)
    try:
        torch.set_float32_matmul_precision("high")
        cudnn.allow_tf32, cudnn.benchmark = True, False
        first = cuda_tuning(torch.device("cuda", 0), exact=False)
        second = cuda_tuning(torch.device("cuda", 1), exact=True)
        first.__enter__()
        assert cudnn.benchmark is True and cudnn.allow_tf32 is True  # reduced precision: TF32 left alone
        second.__enter__()
        assert cudnn.allow_tf32 is False and torch.get_float32_matmul_precision() == "highest"
        first.__exit__(None, None, None)
        assert cudnn.benchmark is True and cudnn.allow_tf32 is False  # the other runner still runs
        second.__exit__(None, None, None)
        assert (torch.get_float32_matmul_precision(), cudnn.allow_tf32, cudnn.benchmark) == (
            "high",
            True,
            False,
        )
    finally:
        torch.set_float32_matmul_precision(saved[0])
        cudnn.allow_tf32, cudnn.benchmark = saved[1], saved[2]


# --- MPS: complex-valued stages on the CPU ---------------------------------------------------------


def test_staged_runner_computes_exactly_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner calls a staged model's analyse / trunk / synthesise itself (STFT and iSTFT in float32,
    on the CPU for MPS); that must be the very same computation as the model's own forward."""
    from checkpoints import random_state, tiny_kwargs
    from stemsplit.inference import devices, runner
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    model = HTDemucs(config_from_kwargs(tiny_kwargs()))
    model.load_state_dict(random_state(model))
    model.eval()
    mix = torch.randn(2, 2, model.segment_samples - 123)
    with torch.no_grad():
        expected = model(mix)
    staged = DeviceRunner([model], torch.device("cpu"), torch.float32, 2)
    assert torch.equal(staged.result(staged.launch(0, mix)), expected)
    monkeypatch.setattr(runner, "COMPLEX_ON_CPU", frozenset({"cpu"}))  # the MPS route, with the CPU as device
    assert devices.COMPLEX_ON_CPU == frozenset({"mps"})
    assert torch.equal(staged.result(staged.launch(0, mix)), expected)


def test_threads_none_keeps_the_callers_torch_threads_and_a_number_is_applied_then_restored() -> None:
    """``--jobs`` absent means torch's own setting (one per physical core, or OMP_NUM_THREADS), as the
    help says: the engine must not override a caller's ``torch.set_num_threads``."""
    seen: list[int] = []

    def model(mix: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return mix[:, None]

    wav = torch.randn(2, 1200, generator=torch.Generator().manual_seed(9))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        separate_tensor(bag_of(model, 1, 500), wav, options=cpu(), normalise=False)
        assert seen and set(seen) == {1}
        seen.clear()
        separate_tensor(bag_of(model, 1, 500), wav, options=cpu(threads=3), normalise=False)
        assert seen and set(seen) == {3}
        assert torch.get_num_threads() == 1  # restored
    finally:
        torch.set_num_threads(previous)
