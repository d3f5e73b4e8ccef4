"""Parity of our model with the reference demucs 4.1.0 on random weights of the released architectures.

The reference's weights are saved by the test in the official ``.th`` format (pickling the real
``demucs.htdemucs.HTDemucs`` class) and read back through our loader, so the loader is covered too.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from checkpoints import random_state, reference_kwargs, save_th, six_stem_kwargs
from stemsplit.weights.checkpoint import load_checkpoint

pytestmark = [pytest.mark.parity, pytest.mark.slow]

WINDOW = 343980


def music_like(length: int, seed: int) -> torch.Tensor:
    """(1, 2, length) stereo test signal at the scale the model sees (track-normalised: unit std).

    Harmonic tones with vibrato, decaying noise bursts (drum-like) and broadband noise.
    """
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 44100
    x = torch.zeros(2, length, dtype=torch.float64)
    for f0 in (55.0, 220.0, 330.0, 1244.5):
        phase = 2 * math.pi * f0 * t + 3 * torch.sin(2 * math.pi * 5 * t)
        for h in range(1, 5):
            x += torch.rand(2, 1, generator=gen, dtype=torch.float64) / h * torch.sin(h * phase)
    beat = torch.exp(-30 * torch.remainder(t, 0.5))
    x += 2 * beat * torch.randn(2, length, generator=gen, dtype=torch.float64)
    x += 0.1 * torch.randn(2, length, generator=gen, dtype=torch.float64)
    x = (x - x.mean()) / x.std()
    return x.float()[None]


def _reference_model(kwargs: dict[str, Any], seed: int) -> torch.nn.Module:
    htdemucs = pytest.importorskip("demucs.htdemucs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = htdemucs.HTDemucs(**kwargs)
    model.load_state_dict(random_state(model, seed))
    # The file stores fp16; give the reference the same (exactly representable) weights.
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return model.eval()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("htdemucs", reference_kwargs()), ("htdemucs_6s", six_stem_kwargs())],
    ids=["4s", "6s"],
)
def test_forward_equals_reference(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:
    reference = _reference_model(kwargs, seed=len(name))
    path = save_th(tmp_path / f"{name}.th", kwargs, reference.state_dict(), klass=type(reference))
    ours = load_checkpoint(path).build()
    for length, seed in ((WINDOW, 1), (200_001, 2)):
        mix = music_like(length, seed)
        with torch.no_grad():
            expected = reference(mix)
            actual = ours(mix)
        assert actual.shape == expected.shape == (1, len(kwargs["sources"]), 2, length)
        assert expected.abs().max() > 0.1  # the comparison is not between two near-zero tensors
        error = (actual - expected).abs().max().item()
        assert error <= 1e-4, f"{name}, {length} samples: max abs difference {error:.3g}"


def test_hdemucs_mmi_forward_equals_reference_at_any_length(tmp_path: Path) -> None:
    """Hybrid Demucs from an official-format file that pickles the real ``demucs.hdemucs.HDemucs``: it takes
    any length, so a long odd one and a very short one."""
    from checkpoints import hdemucs_kwargs
    from engine_models import make_reference_hdemucs

    reference = make_reference_hdemucs(seed=6)
    path = save_th(tmp_path / "75fc33f5.th", hdemucs_kwargs(), reference.state_dict(), klass=type(reference))
    ours = load_checkpoint(path).build()
    for length, seed in ((300_001, 3), (5_000, 4)):
        mix = music_like(length, seed)
        with torch.no_grad():
            expected = reference(mix)
            actual = ours(mix)
        assert actual.shape == expected.shape == (1, 4, 2, length)
        assert expected.abs().max() > 0.1
        error = (actual - expected).abs().max().item()
        assert error <= 1e-4, f"hdemucs_mmi, {length} samples: max abs difference {error:.3g}"
