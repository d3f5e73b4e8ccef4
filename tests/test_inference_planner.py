"""Pure planners of the inference engine: window plans, cross-fade weights, shift delays, stats, devices."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stemsplit.errors import InvalidOptionError
from stemsplit.inference import devices
from stemsplit.inference.planner import (
    draw_shift_delays,
    plan_lane,
    plan_window,
    stride_samples,
    triangle_weights,
)
from stemsplit.inference.stats import RunningStats, stats_from_blocks, track_stats


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 5000),
    segment=st.integers(1, 700),
    overlap=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]),
)
def test_lane_plan_covers_every_sample_with_a_centred_read(length: int, segment: int, overlap: float) -> None:
    try:
        stride = stride_samples(segment, overlap)
    except ValueError:
        assert int((1 - overlap) * segment) < 1
        return
    plans = plan_lane(length, segment, stride)
    assert [p.offset for p in plans] == list(range(0, length, stride))
    covered = np.zeros(length, dtype=bool)
    for p in plans:
        assert 1 <= p.length <= segment
        assert p.offset + p.length <= length
        covered[p.offset : p.offset + p.length] = True
        # the model's read holds the chunk, centred: left pad is delta // 2 of delta = segment - length
        delta = segment - p.length
        assert p.trim == delta // 2
        assert p.read_start <= p.offset and p.offset + p.length <= p.read_start + segment
        if p.offset + segment <= length:  # a full window reads exactly its own samples
            assert (p.length, p.read_start) == (segment, p.offset)
    assert covered.all()


@pytest.mark.parity
@pytest.mark.parametrize(
    ("total", "offset", "segment"), [(1000, 0, 300), (1000, 900, 300), (250, 0, 300), (1001, 999, 301)]
)
def test_plan_window_reads_what_the_reference_tensorchunk_reads(
    total: int, offset: int, segment: int
) -> None:
    from demucs.apply import TensorChunk

    signal = torch.arange(1, total + 1, dtype=torch.float32)[None]  # (1, total), no zeros inside
    expected = TensorChunk(TensorChunk(signal), offset, segment).padded(segment)[0]
    p = plan_window(offset, total, segment)
    idx = torch.arange(p.read_start, p.read_start + segment)
    ours = torch.where((idx >= 0) & (idx < total), idx.clamp(0, total - 1).float() + 1, torch.zeros(()))
    assert torch.equal(ours, expected)
    assert p.length == min(segment, total - offset)


@pytest.mark.parametrize("segment", [1, 2, 7, 100, 343980])
def test_triangle_weights_match_the_integer_ramp(segment: int) -> None:
    half = segment // 2
    ramp = np.concatenate([np.arange(1, half + 1), np.arange(segment - half, 0, -1)]).astype(np.float64)
    expected = (ramp / ramp.max()).astype(np.float32)
    w = triangle_weights(segment)
    assert w.dtype == torch.float32 and w.shape == (segment,)
    np.testing.assert_array_equal(w.numpy(), expected)


def test_stride_and_its_validation() -> None:
    assert stride_samples(343980, 0.25) == 257985
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="overlap"):
            stride_samples(100, bad)
    with pytest.raises(ValueError, match="stride"):
        stride_samples(1, 0.5)


def test_shift_delays_come_from_the_given_generator_only() -> None:
    assert draw_shift_delays(0, 22050, random.Random(1)) == (0,)
    a = draw_shift_delays(5, 22050, random.Random(7))
    random.seed(123)  # global state must not matter
    b = draw_shift_delays(5, 22050, random.Random(7))
    check = random.Random(7)
    assert a == b == tuple(22050 - check.randint(0, 22050) for _ in range(5))
    assert all(0 <= d <= 22050 for d in a)
    assert draw_shift_delays(5, 22050, random.Random(8)) != a


def _reference_stats(wav: torch.Tensor) -> tuple[float, float]:
    """demucs.api.Separator.separate_tensor (4.1.0): mono mix mean, unbiased std + 1e-8."""
    ref = wav.mean(0)
    return float(ref.mean()), float(ref.std() + 1e-8)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16), length=st.integers(2, 20000), cuts=st.lists(st.integers(0, 20000), max_size=6)
)
def test_streamed_stats_equal_whole_track_stats(seed: int, length: int, cuts: list[int]) -> None:
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(2, length, generator=g) * 0.3 + 0.05
    bounds = sorted({0, length, *(c % (length + 1) for c in cuts)})
    blocks = [wav[:, a:b].numpy() for a, b in itertools.pairwise(bounds)]
    streamed = stats_from_blocks(blocks)
    whole = track_stats(wav)
    mean, std = _reference_stats(wav)
    assert streamed.frames == whole.frames == length
    assert float(whole.mean) == pytest.approx(mean, abs=1e-7)
    assert float(whole.std) == pytest.approx(std, rel=1e-6)
    assert float(streamed.mean) == pytest.approx(mean, abs=1e-6)
    assert float(streamed.std) == pytest.approx(std, rel=1e-5)


def test_stats_of_tiny_tracks_stay_finite() -> None:
    assert float(RunningStats().result().std) == pytest.approx(1e-8)
    assert float(track_stats(torch.ones(2, 1)).std) == pytest.approx(1e-8)
    silent = track_stats(torch.zeros(2, 100))
    assert float(silent.std) == pytest.approx(1e-8) and float(silent.mean) == 0.0


# Flag sets of the CPUs the suite must pass on (from their /proc/cpuinfo), and an Arm one.
AVX2_EPYC = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})
AVX512_BF16_EPYC = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}
AMX_XEON = AVX512_BF16_EPYC | {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"}
ARM_BF16 = frozenset({"fp", "asimd", "asimdhp", "sve", "bf16", "i8mm"})


@pytest.mark.parametrize(
    ("flags", "expected", "flag_named"),
    [
        (AVX2_EPYC, torch.float32, "amx_bf16"),
        (AVX512_BF16_EPYC, torch.float32, "avx512_bf16"),
        (AMX_XEON, torch.bfloat16, "amx_bf16"),
        (ARM_BF16, torch.float32, "amx_bf16"),
    ],
    ids=["avx2", "avx512_bf16", "amx", "arm_bf16"],
)
def test_auto_precision_on_cpu_is_bfloat16_only_with_amx(
    flags: frozenset[str], expected: torch.dtype, flag_named: str
) -> None:
    choice = devices.cpu_precision("auto", flags)
    assert choice.dtype == expected
    assert flag_named in choice.why  # doctor and -v name the flag the choice rests on
    assert choice.slow is None


@pytest.mark.parametrize("flags", [AVX2_EPYC, AVX512_BF16_EPYC, AMX_XEON, ARM_BF16])
def test_auto_precision_follows_the_flags_it_is_given(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]
) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    cpu = torch.device("cpu")
    assert devices.resolve_dtype("auto", cpu) == devices.cpu_precision("auto", flags).dtype
    assert devices.resolve_dtype("float32", cpu) == torch.float32
    assert devices.resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16
    with pytest.raises(InvalidOptionError):
        devices.resolve_dtype("float64", cpu)


@pytest.mark.parametrize(
    ("precision", "flags", "measured"),
    [
        ("bfloat16", AVX2_EPYC, "32x slower"),
        ("bfloat16", AVX512_BF16_EPYC, "1.27x slower"),
        ("bfloat16", ARM_BF16, "32x slower"),
        ("float16", AVX2_EPYC, "13x to 35x slower"),
        ("float16", AMX_XEON, "13x to 35x slower"),
    ],
)
def test_explicit_reduced_precision_on_a_cpu_that_is_slower_in_it_is_honoured_with_a_warning(
    precision: str, flags: frozenset[str], measured: str
) -> None:
    choice = devices.cpu_precision(precision, flags)
    assert choice.dtype == getattr(torch, precision)
    assert choice.slow is not None
    assert measured in choice.slow and "--precision auto" in choice.slow


@pytest.mark.parametrize(("precision", "flags"), [("bfloat16", AMX_XEON), ("float32", AVX2_EPYC)])
def test_no_warning_where_the_precision_is_fast(precision: str, flags: frozenset[str]) -> None:
    assert devices.cpu_precision(precision, flags).slow is None


def test_cpu_flags_are_read_from_every_flags_line_of_cpuinfo() -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\n"
    assert devices.parse_cpu_flags(x86) == {"fpu", "avx2", "amx_bf16"}
    assert devices.parse_cpu_flags(arm) == {"fp", "asimd", "bf16"}
    assert devices.parse_cpu_flags("model name\t: AMD EPYC\n") == frozenset()


def test_device_resolution_on_this_machine() -> None:
    assert devices.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidOptionError):
        devices.resolve_device("tpu")
    if not torch.cuda.is_available():
        assert devices.resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(InvalidOptionError, match="CUDA"):
            devices.resolve_device("cuda:0")
    else:
        with pytest.raises(InvalidOptionError, match="does not exist"):
            devices.resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_compile_and_batch_policies() -> None:
    from stemsplit.inference.compute import COLD_COMPILE_S, compile_choice

    def should_compile(requested: bool | None, device: torch.device, seconds: float | None) -> bool:
        return compile_choice(requested, device, seconds, warm=False).on

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert devices.auto_batch_size(cpu, torch.float32, 343980) == 1
    assert not should_compile(None, cpu, 10_000.0)
    assert not should_compile(None, cuda, 60.0)  # too short to repay compilation
    assert not should_compile(None, cuda, None)
    assert should_compile(None, cuda, 2 * COLD_COMPILE_S / (1 / 574 - 1 / 1650))
    assert should_compile(True, cpu, 1.0) and not should_compile(False, cuda, 1e9)
    assert devices.thread_count(3) == 3 and devices.thread_count(None) >= 1


def test_compiling_pays_when_the_saving_exceeds_the_compile_time() -> None:
    """The policy's break-even, from its stated speeds and compile times (issue 26's H100 figures): the saving
    per audio second is 1/eager - 1/compiled; a warm cache pays back sooner than a cold one."""
    from stemsplit.inference import compute

    cuda = torch.device("cuda", 0)
    saving = 1 / compute.EAGER_SPEED - 1 / compute.COMPILED_SPEED
    for warm, cost in ((True, compute.WARM_COMPILE_S), (False, compute.COLD_COMPILE_S)):
        even = cost / saving
        assert not compute.compile_choice(None, cuda, 0.99 * even, warm=warm).on
        choice = compute.compile_choice(None, cuda, 1.01 * even, warm=warm)
        assert choice.on and f"{cost:.0f} s" in choice.why and f"{even / 3600:.1f} h" in choice.why
    warm_even = compute.WARM_COMPILE_S / saving
    assert warm_even < compute.COLD_COMPILE_S / saving
    assert not compute.compile_choice(None, cuda, 1800.0, warm=True).on  # bench_folder's 30 minutes: eager


def test_a_compiled_runner_runs_one_batch_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled, every batch is padded to the batch size (one shape, one compile); eager keeps its buckets;
    the first compiled batch marks the kernel cache warm, once."""
    from stemsplit.inference.runner import DeviceRunner

    shapes: list[int] = []

    def recording_compile(fn, **kwargs):
        def compiled(mix: torch.Tensor) -> torch.Tensor:
            shapes.append(mix.shape[0])
            return fn(mix)

        return compiled

    monkeypatch.setattr(torch, "compile", recording_compile)
    marks: list[int] = []

    def model(mix: torch.Tensor) -> torch.Tensor:
        return mix[:, None]

    runner = DeviceRunner(
        [model],
        torch.device("cpu"),
        torch.float32,
        8,
        compile_trunk=True,
        on_compiled=lambda: marks.append(1),
    )
    for n in (8, 3, 1):
        out = runner.result(runner.launch(0, torch.ones(n, 2, 10)))
        assert out.shape[0] == n
    assert shapes == [8, 8, 8] and marks == [1]
    eager = DeviceRunner([model], torch.device("cpu"), torch.float32, 8)
    assert eager.buckets == (2, 4, 8)


def test_the_kernel_cache_is_warm_after_a_compile_on_that_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from stemsplit.inference import compute

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert not compute.compile_cache_warm(tmp_path, cuda)
    compute.mark_compile_cache_warm(tmp_path, cuda)
    assert compute.compile_cache_warm(tmp_path, cuda)
    assert not compute.compile_cache_warm(tmp_path, cpu)  # only CUDA compiles automatically
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    assert not compute.compile_cache_warm(tmp_path, cuda)  # another GPU's kernels do not count


def test_the_kernel_cache_lives_under_the_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from stemsplit import settings as stemsplit_settings
    from stemsplit.inference import compute

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compute.compile_cache_dir() == stemsplit_settings.cache_dir() / "compiled"
    assert compute.compile_cache_dir(tmp_path) == tmp_path
    # torch sets the variable itself once Inductor or the ONNX exporter ran: the exports must not move then
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    assert compute.compile_cache_dir() == stemsplit_settings.cache_dir() / "compiled"
