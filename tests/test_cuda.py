"""GPU checks (marker ``cuda``): skipped without a CUDA device, run on a GPU machine with ``pytest -m cuda``."""

from __future__ import annotations

import pytest
import torch

from checkpoints import random_state, reference_kwargs
from stemsplit.inference import EngineOptions, ModelBag, separate_tensor
from stemsplit.model import HTDemucs
from stemsplit.weights.checkpoint import config_from_kwargs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def model() -> HTDemucs:
    net = HTDemucs(config_from_kwargs(reference_kwargs()))
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
    gpu = separate_tensor(bag, wav, options=EngineOptions(device="cuda", precision="float32", batch_size=4))
    assert (cpu - gpu).abs().max() <= 1e-3


def test_auto_precision_on_cuda_keeps_40_db(model: HTDemucs) -> None:
    wav = _track(20.0)
    bag = ModelBag.single(model)
    exact = separate_tensor(bag, wav, options=EngineOptions(device="cuda", precision="float32"))
    auto = separate_tensor(bag, wav, options=EngineOptions(device="cuda", precision="auto"))
    assert _snr_db(exact, auto) >= 40.0


def test_batch_size_does_not_change_cuda_output(model: HTDemucs) -> None:
    wav = _track(30.0)
    bag = ModelBag.single(model)
    one = separate_tensor(bag, wav, options=EngineOptions(device="cuda", precision="float32", batch_size=1))
    many = separate_tensor(bag, wav, options=EngineOptions(device="cuda", precision="float32", batch_size=8))
    assert (one - many).abs().max() <= 1e-4
