"""GPU checks (marker ``cuda``): skipped without a CUDA device, run on a GPU machine with ``pytest -m cuda``.

``STEMSPLIT_CUDA_TESTS_ON=cpu`` runs them on the CPU instead (the same code, another device), to check the
tests themselves where there is no GPU (``benchmarks/gpu_check.sh --device cpu --small`` does).
"""

from __future__ import annotations

import os

import pytest
import torch

from checkpoints import random_state, reference_kwargs
from stemsplit.inference import EngineOptions, ModelBag, separate_tensor
from stemsplit.model import HTDemucs
from stemsplit.weights.checkpoint import config_from_kwargs

DEVICE = os.environ.get("STEMSPLIT_CUDA_TESTS_ON", "cuda")
ON_CUDA = DEVICE.startswith("cuda")
SMALL = os.environ.get("STEMSPLIT_CUDA_TESTS_SMALL") == "1"  # a narrow network, for a rehearsal on a CPU

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CROSS_BATCH = 1e-4
"""On CUDA, how far (relative to the track's peak) a track run in batches of another size may move.

cuDNN autotuning (``cudnn.benchmark``) and cuBLAS may pick another kernel per batch size, so float32 sums
are added in another order. One reordered sum of K terms moves by about sqrt(K) * 2^-24 of its magnitude
(K <= 3072 here: 384 channels x kernel 8, or the transformer's 2048-wide feed-forward): 3.3e-6; about 40
such layers in sequence, their errors adding at worst, give 1.3e-4, about 2e-5 if independent. 1e-4 of
the peak sits between the two; an estimate from the arithmetic, not yet measured on a GPU. The CPU uses
one kernel path per batch size here (buckets, a single window padded to two): exact there."""


def _kwargs() -> dict[str, object]:
    """The official ``htdemucs`` configuration (a narrow one with ``STEMSPLIT_CUDA_TESTS_SMALL=1``)."""
    if not SMALL:
        return reference_kwargs()
    return reference_kwargs(channels=8, bottom_channels=0, t_layers=1, t_heads=2, t_hidden_scale=1.0)


@pytest.fixture(scope="module")
def model() -> HTDemucs:
    net = HTDemucs(config_from_kwargs(_kwargs()))
    net.load_state_dict(random_state(net, seed=3))
    return net.eval()


def _track(seconds: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, int(seconds * 44100) | 1, generator=g) * 0.25


def _snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum()))


def test_cuda_float32_equals_cpu(model: HTDemucs) -> None:
    """``precision="float32"`` switches TF32 off itself (PyTorch's default lets cuDNN convolutions use it),
    so the GPU computes the same float32 maths as the CPU, to float rounding, with default settings."""
    wav = _track(9.0)
    bag = ModelBag.single(model)
    cpu = separate_tensor(bag, wav, options=EngineOptions(device="cpu", precision="float32"))
    gpu = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="float32", batch_size=4))
    assert (cpu - gpu).abs().max() <= 1e-3


def test_auto_precision_on_cuda_keeps_40_db(model: HTDemucs) -> None:
    wav = _track(20.0)
    bag = ModelBag.single(model)
    exact = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="float32"))
    auto = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="auto"))
    assert _snr_db(exact, auto) >= 40.0


def test_batch_size_does_not_change_cuda_output(model: HTDemucs) -> None:
    wav = _track(30.0)
    bag = ModelBag.single(model)
    one = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="float32", batch_size=1))
    many = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="float32", batch_size=8))
    assert (one - many).abs().max() <= 1e-4


def test_tracks_sharing_batches_on_cuda_give_the_same_output_as_alone(model: HTDemucs) -> None:
    """The scheduler on the GPU: pinned uploads, device windows, device overlap-add, events on the way out."""
    from stemsplit.inference import Scheduler, TrackStream, bag_plan, make_runner, track_stats
    from stemsplit.inference.stream import InputBuffer

    bag = ModelBag.single(model)
    options = EngineOptions(device=DEVICE, precision="float32", batch_size=4)
    plan = bag_plan(bag, options)
    wavs = [_track(s) for s in (3.0, 11.0, 17.5)]

    def run(group: list[torch.Tensor]) -> list[torch.Tensor]:
        runner = make_runner(bag, plan, options.compute(None))
        outs: list[list[torch.Tensor]] = [[] for _ in group]
        scheduler = Scheduler(runner, plan.members)
        with runner:
            for out, wav in zip(outs, group, strict=True):
                audio = InputBuffer(2)
                audio.append(wav)
                audio.close()
                scheduler.add(
                    TrackStream(
                        plan, audio, track_stats(wav), lambda b, o=out: o.append(b.get()), runner.device
                    )
                )
            while scheduler.step():
                pass
            scheduler.drain()
        return [torch.cat(o, dim=-1) for o in outs]

    together = run(wavs)
    for wav, shared in zip(wavs, together, strict=True):
        (alone,) = run([wav])
        assert shared.shape == (4, 2, wav.shape[-1])
        if ON_CUDA:
            assert (alone - shared).abs().max() <= CROSS_BATCH * alone.abs().max()
        else:
            assert torch.equal(alone, shared)


def test_a_batch_on_cuda_writes_what_the_engine_gives(model: HTDemucs, tmp_path) -> None:
    """The whole pipeline on the GPU (decode ahead, device thread, writers behind) against the engine alone,
    on the model as the pipeline loads it (the checkpoint stores float16 weights)."""
    import numpy as np
    import soundfile as sf

    from checkpoints import save_th
    from stemsplit.pipeline import SeparationOptions, plan_batch, separate_batch
    from stemsplit.weights.loading import describe_model, load_model

    path = save_th(tmp_path / "net.th", _kwargs(), model.state_dict())
    wavs = [_track(s) for s in (4.0, 9.0)]
    for i, wav in enumerate(wavs):
        sf.write(str(tmp_path / f"t{i}.wav"), wav.T.numpy(), 44100, subtype="FLOAT")
    options = SeparationOptions(
        model=str(path),
        out_dir=tmp_path / "out",
        device=DEVICE,
        precision="float32",
        bit_depth="32f",
        clip="none",
    )
    results = separate_batch(
        plan_batch([str(tmp_path / "t0.wav"), str(tmp_path / "t1.wav")], options), options
    )
    assert [r.status for r in results] == ["done", "done"]
    bag = load_model(describe_model(str(path)))
    for wav, result in zip(wavs, results, strict=True):
        expected = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="float32"))
        written = np.stack([sf.read(str(result.outputs[s]), dtype="float32")[0].T for s in bag.sources])
        assert np.abs(written - expected.numpy()).max() <= 1e-4


def test_compiled_trunk_on_cuda_keeps_40_db(model: HTDemucs) -> None:
    """Last in the file: it compiles (tens of seconds), so a run cut short by its time limit loses only it."""
    wav = _track(16.0)
    bag = ModelBag.single(model)
    exact = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="float32"))
    compiled = separate_tensor(bag, wav, options=EngineOptions(device=DEVICE, precision="auto", compile=True))
    assert _snr_db(exact, compiled) >= 40.0
