"""Shapes, keys and invariants of Hybrid Demucs and its context blocks (no reference needed; parity with
demucs 4.1.0 is in tests/test_parity_model.py and tests/test_inference_parity.py)."""

from __future__ import annotations

import math

import pytest
import torch

from checkpoints import hdemucs_kwargs, random_state, tiny_hdemucs_kwargs
from stemsplit.model import HDemucs, HDemucsConfig, HTDemucs
from stemsplit.model.context import BLSTM, LocalState
from stemsplit.weights.checkpoint import config_from_kwargs

HD = "demucs.hdemucs.HDemucs"


def tiny(seed: int = 0) -> HDemucs:
    model = HDemucs(config_from_kwargs(tiny_hdemucs_kwargs(), klass=HD)).eval()  # type: ignore[arg-type]
    model.load_state_dict(random_state(model, seed))
    return model


def test_hdemucs_mmi_has_the_spec_tensor_and_parameter_counts() -> None:
    model = HDemucs(config_from_kwargs(hdemucs_kwargs(), klass=HD))  # type: ignore[arg-type]
    state = model.state_dict()
    assert (len(state), sum(v.numel() for v in state.values())) == (395, 83_637_832)  # spec §1.1
    assert model.config.merge_layer == 4
    assert model.segment_samples == 40 * 44100 and not model.fixed_window


def test_the_merge_layers_keep_only_their_convolutions() -> None:
    """Spec §1.6: the temporal layer at the merge is the convolution alone (its decoder twin keeps its norm),
    and GroupNorm(4) and the BiLSTM and local attention start at layer 4."""
    keys = HDemucs(config_from_kwargs(hdemucs_kwargs(), klass=HD)).state_dict()  # type: ignore[arg-type]
    assert {k for k in keys if k.startswith("tencoder.4.")} == {
        "tencoder.4.conv.weight",
        "tencoder.4.conv.bias",
    }
    assert {k.split(".", 2)[2] for k in keys if k.startswith("tdecoder.0.")} == {
        "conv_tr.weight", "conv_tr.bias", "norm2.weight", "norm2.bias",
    }  # fmt: skip
    assert "encoder.3.norm1.weight" not in keys and "encoder.4.norm1.weight" in keys
    assert keys["encoder.4.dconv.layers.0.3.lstm.weight_hh_l1_reverse"].shape == (768, 192)
    assert keys["encoder.5.dconv.layers.1.4.query_decay.weight"].shape == (16, 384, 1)
    assert keys["encoder.5.conv.weight"].shape == (1536, 768, 4)  # temporal: kernel 2 * time_stride
    assert not any(".dconv." in k for k in keys if k.startswith(("decoder", "tdecoder")))  # dconv_mode 1


@pytest.mark.parametrize("length", [1, 33_333, 120_001])
def test_any_length_comes_back_at_its_length(length: int) -> None:
    model = tiny()
    with torch.no_grad():
        out = model(torch.randn(2, 2, length, generator=torch.Generator().manual_seed(length)))
    assert out.shape == (2, 4, 2, length)
    assert torch.isfinite(out).all()


def test_batch_items_are_separated_independently() -> None:
    model = tiny()
    mix = torch.randn(3, 2, 30_000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = model(mix)
        alone = torch.cat([model(mix[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_fixed_window_says_how_short_windows_are_run() -> None:
    assert not tiny().fixed_window
    assert HTDemucs.fixed_window


def test_layer_plans_that_never_merge_are_refused() -> None:
    with pytest.raises(ValueError, match="never merge"):
        HDemucsConfig(sources=("a",), depth=4)  # 2048 → 8 bins needs 5 layers
    with pytest.raises(ValueError, match="STFT hop is 128"):
        HDemucsConfig(sources=("a",), nfft=512, depth=5)  # merges at layer 3, after a stride of 256


def _lstm_alone(blstm: BLSTM, x: torch.Tensor) -> torch.Tensor:
    """The BiLSTM and its linear map over one whole (B, C, T) sequence, without the residual."""
    y = blstm.lstm(x.permute(2, 0, 1))[0]  # (T, B, 2C)
    return blstm.linear(y).permute(1, 2, 0)


def test_blstm_runs_long_inputs_in_overlapping_chunks_and_keeps_their_middles() -> None:
    """Step ``p`` of a 450-step input comes from the chunk [100k, 100k + 200) whose kept part holds it:
    the first 150 steps of chunk 0, steps 50-150 of the middle ones, steps 50-200 of the last."""
    torch.manual_seed(0)
    blstm = BLSTM(6, max_steps=200).eval()
    x = torch.randn(2, 6, 450)
    padded = torch.nn.functional.pad(x, (0, 500 - 450))  # 5 chunks: the last is [400, 600)
    with torch.no_grad():
        out = blstm(x) - x
        chunks = [_lstm_alone(blstm, padded[..., 100 * k : 100 * k + 200]) for k in range(5)]
    for p in range(450):
        k = min(max((p - 50) // 100, 0), 4)
        torch.testing.assert_close(out[..., p], chunks[k][..., p - 100 * k], rtol=0, atol=1e-6)


def test_blstm_runs_short_inputs_whole() -> None:
    torch.manual_seed(1)
    blstm = BLSTM(6, max_steps=200).eval()
    x = torch.randn(1, 6, 200)
    with torch.no_grad():
        torch.testing.assert_close(blstm(x), x + _lstm_alone(blstm, x), rtol=0, atol=1e-6)


def test_local_state_follows_its_formula() -> None:
    """Each query step s scores key step t by q·k/sqrt(c) − r_s·|t − s|, never itself, one head at a time."""
    torch.manual_seed(2)
    layer = LocalState(8, heads=2, ndecay=4).eval()
    B, C, T, H = 2, 8, 11, 2
    x = torch.randn(B, C, T)
    with torch.no_grad():
        out = layer(x)
        q, k, v = (m(x).view(B, H, C // H, T) for m in (layer.query, layer.key, layer.content))
        d = torch.sigmoid(layer.query_decay(x).view(B, H, 4, T)) / 2
        expected = torch.zeros(B, H, C // H, T)
        for b in range(B):
            for h in range(H):
                for s in range(T):
                    rate = sum((j + 1) * d[b, h, j, s] for j in range(4)) / 2
                    scores = torch.stack([
                        q[b, h, :, s] @ k[b, h, :, t] / math.sqrt(C // H) - rate * abs(t - s) for t in range(T)
                    ])  # fmt: skip
                    scores[s] = -100.0
                    expected[b, h, :, s] = v[b, h] @ torch.softmax(scores, dim=0)
        expected = x + layer.proj(expected.reshape(B, C, T))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
