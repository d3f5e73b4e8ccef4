"""Shapes, keys and invariants of the model and its blocks (no reference needed)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoints import FOUR, SIX, reference_kwargs, six_stem_kwargs, tiny_kwargs
from stemsplit.model import HTDemucs, HTDemucsConfig, layers
from stemsplit.model.layers import DConv, DConvSpec, DecoderLayer, EncoderLayer, _dconv_rows, glu_conv
from stemsplit.model.norms import GroupNorm
from stemsplit.model.spectral import istft, pad1d_reflect, stft
from stemsplit.model.transformer import CrossTransformer, sin_embedding_1d, sin_embedding_2d
from stemsplit.weights.checkpoint import config_from_kwargs

SPEC = Path(__file__).resolve().parents[2] / "shared" / "docs" / "htdemucs-spec.md"


def _appendix_a() -> dict[str, tuple[int, ...]]:
    """Key → shape table of the official htdemucs state_dict, parsed from the spec's Appendix A."""
    text = SPEC.read_text(encoding="utf-8")
    block = text[text.index("## Appendix A") : text.index("## Appendix B")]
    table = {}
    for line in block.splitlines():
        match = re.match(r"^(\S+)\s+\(([\d, ]*)\)$", line.strip())
        if match:
            table[match.group(1)] = tuple(int(v) for v in match.group(2).split(",") if v.strip())
    return table


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.skipif(not SPEC.is_file(), reason="the shared spec is not checked out beside the repo")
def test_htdemucs_state_dict_equals_the_official_key_and_shape_table() -> None:
    model = HTDemucs(config_from_kwargs(reference_kwargs()))
    expected = _appendix_a()
    assert len(expected) == 533
    assert _shapes(model) == expected


def test_parameter_counts_of_the_released_architectures() -> None:
    four = HTDemucs(config_from_kwargs(reference_kwargs()))
    six = HTDemucs(config_from_kwargs(six_stem_kwargs()))
    assert (len(four.state_dict()), sum(p.numel() for p in four.parameters())) == (533, 41_984_456)
    assert (len(six.state_dict()), sum(p.numel() for p in six.parameters())) == (525, 27_414_996)


def test_six_stem_model_differs_from_four_stem_only_as_documented() -> None:
    four = _shapes(HTDemucs(config_from_kwargs(reference_kwargs())))
    six = _shapes(HTDemucs(config_from_kwargs(six_stem_kwargs())))
    assert set(four) - set(six) == {
        f"channel_{kind}sampler{t}.{p}"
        for kind in ("up", "down")
        for t in ("", "_t")
        for p in ("weight", "bias")
    }
    assert six["decoder.3.conv_tr.weight"] == (48, 24, 8, 1)
    assert six["tdecoder.3.conv_tr.weight"] == (48, 12, 8)
    assert six["crosstransformer.layers.0.self_attn.in_proj_weight"] == (1152, 384)
    assert six["crosstransformer.layers.1.linear1.weight"] == (1536, 384)


def test_full_size_forward_activation_shapes() -> None:
    """Appendix C: every encoder/decoder output shape for one 343980-sample window."""
    model = HTDemucs(config_from_kwargs(reference_kwargs())).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name in ("encoder", "tencoder", "decoder", "tdecoder"):
        for i, layer in enumerate(getattr(model, name)):
            layer.register_forward_hook(
                lambda _m, _i, out, key=f"{name}.{i}": seen.__setitem__(key, tuple(out.shape))
            )
    with torch.no_grad():
        out = model(torch.randn(1, 2, 343980))
    assert out.shape == (1, 4, 2, 343980)
    assert seen == {
        "tencoder.0": (1, 48, 85995), "tencoder.1": (1, 96, 21499), "tencoder.2": (1, 192, 5375),
        "tencoder.3": (1, 384, 1344), "encoder.0": (1, 48, 512, 336), "encoder.1": (1, 96, 128, 336),
        "encoder.2": (1, 192, 32, 336), "encoder.3": (1, 384, 8, 336), "decoder.0": (1, 192, 32, 336),
        "decoder.1": (1, 96, 128, 336), "decoder.2": (1, 48, 512, 336), "decoder.3": (1, 16, 2048, 336),
        "tdecoder.0": (1, 192, 5375), "tdecoder.1": (1, 96, 21499), "tdecoder.2": (1, 48, 85995),
        "tdecoder.3": (1, 8, 343980),
    }  # fmt: skip


@pytest.fixture(params=[1, 3], ids=lambda b: f"B{b}")
def batch(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(params=[FOUR, SIX], ids=["4stems", "6stems"])
def sources(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


@pytest.fixture(params=[0, 32], ids=["no-bottleneck", "bottleneck"])
def bottom_channels(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(params=[1, 2, 3], ids=["dconv-enc", "dconv-dec", "dconv-both"])
def dconv_mode(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_tiny_model_grid_keeps_input_length(
    batch: int, sources: list[str], bottom_channels: int, dconv_mode: int
) -> None:
    cfg = config_from_kwargs(
        tiny_kwargs(sources=sources, bottom_channels=bottom_channels, dconv_mode=dconv_mode)
    )
    model = HTDemucs(cfg).eval()
    for length in (cfg.segment_samples, cfg.segment_samples - 1001, 1):
        with torch.no_grad():
            out = model(torch.randn(batch, 2, length))
        assert out.shape == (batch, len(sources), 2, length)
        assert torch.isfinite(out).all()


def test_state_dict_keys_depend_on_dconv_mode() -> None:
    keys = {m: set(HTDemucs(config_from_kwargs(tiny_kwargs(dconv_mode=m))).state_dict()) for m in (1, 2, 3)}
    assert any(k.startswith("encoder.0.dconv") for k in keys[1])
    assert not any(k.startswith("decoder.0.dconv") for k in keys[1])
    assert any(k.startswith("decoder.0.dconv") for k in keys[2])
    assert not any(k.startswith("encoder.0.dconv") for k in keys[2])
    assert keys[3] == keys[1] | keys[2]


def test_batch_items_are_independent() -> None:
    model = HTDemucs(config_from_kwargs(tiny_kwargs())).eval()
    x = torch.randn(3, 2, model.segment_samples)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_short_input_equals_explicitly_zero_padded_input() -> None:
    model = HTDemucs(config_from_kwargs(tiny_kwargs())).eval()
    T = model.segment_samples
    x = torch.randn(1, 2, T - 777)
    with torch.no_grad():
        short = model(x)
        padded = model(torch.nn.functional.pad(x, (0, 777)))[..., : T - 777]
    torch.testing.assert_close(short, padded)


def test_input_longer_than_the_window_is_refused() -> None:
    model = HTDemucs(config_from_kwargs(tiny_kwargs())).eval()
    with pytest.raises(ValueError, match="longer than the model's window"):
        model(torch.zeros(1, 2, model.segment_samples + 1))


def test_forward_is_deterministic_and_leaves_global_rng_alone() -> None:
    import random

    model = HTDemucs(config_from_kwargs(tiny_kwargs())).eval()
    x = torch.randn(1, 2, model.segment_samples)
    random.seed(1)
    torch_state = torch.get_rng_state()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    assert random.random() == random.Random(1).random()
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_segment_samples_is_exact_for_the_released_segment() -> None:
    cfg = HTDemucsConfig(sources=tuple(FOUR), segment=Fraction(39, 5))
    assert cfg.segment_samples == 343980


# Dynamo's advice on Python 3.13.0 (a RuntimeWarning the suite would turn into an error): not this test's
# subject; stemsplit's own export filters it the same way (inference/cpu_backend.py).
@pytest.mark.filterwarnings("ignore:Guards may run slower on Python 3.13.0:RuntimeWarning")
@pytest.mark.parametrize("segment", [Fraction(39, 5), Fraction(7, 3)])
def test_segment_samples_truncates_like_int_and_traces_in_a_strict_export(segment: Fraction) -> None:
    """The OpenVINO export traces code that reads ``segment_samples``; Python 3.10 has no ``Fraction.__int__``
    (3.11 added it), which dynamo cannot trace through there. The samples are ``int(segment × rate)``."""
    cfg = HTDemucsConfig(sources=tuple(FOUR), segment=segment)

    class Crop(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[..., : cfg.segment_samples]

    assert cfg.segment_samples == int(segment * cfg.samplerate)
    x = torch.arange(2.0 * 400_000).reshape(2, -1)
    exported = torch.export.export(Crop(), (x,), strict=True)
    assert exported.module()(x).shape == (2, min(400_000, int(segment * cfg.samplerate)))


# --- blocks ------------------------------------------------------------------------------------


def _numpy_stft(x: np.ndarray, nfft: int) -> np.ndarray:
    """Independent NumPy statement of htdemucs-spec §1.3 step 2 for one channel: (T,) → (nfft/2, frames)."""
    hop = nfft // 4
    frames = -(-len(x) // hop)
    padded = np.pad(x, (3 * hop // 2, 3 * hop // 2 + frames * hop - len(x)), mode="reflect")
    padded = np.pad(padded, (nfft // 2, nfft // 2), mode="reflect")  # the STFT's own centring
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nfft) / nfft)  # periodic Hann
    starts = [(j + 2) * hop for j in range(frames)]  # frames 2 .. 2 + frames - 1 of the centred STFT
    spec = np.stack([np.fft.rfft(window * padded[s : s + nfft]) for s in starts], axis=1) / np.sqrt(nfft)
    return spec[:-1]  # Nyquist dropped


@pytest.mark.parametrize("length", [4096, 10001, 44100])
def test_stft_matches_an_independent_numpy_implementation(length: int) -> None:
    x = torch.randn(1, 1, length, dtype=torch.float64)
    ours = stft(x, 1024)[0, 0].numpy()
    np.testing.assert_allclose(ours, _numpy_stft(x[0, 0].numpy(), 1024), atol=1e-9)


def test_istft_inverts_stft_away_from_the_edges() -> None:
    """With no energy at Nyquist, only the dropped edge frames keep the round trip from being exact."""
    t = torch.arange(40000, dtype=torch.float64) / 44100
    x = sum(torch.sin(2 * torch.pi * f * t + f) for f in (55.0, 440.0, 3000.0, 12000.0))[None, None]
    y = istft(stft(x, 4096), 40000)
    assert y.shape == x.shape
    torch.testing.assert_close(y[..., 4096:-4096], x[..., 4096:-4096], atol=1e-6, rtol=0)


@pytest.mark.parametrize(("nfft", "length"), [(4096, 40000), (256, 1000), (256, 1024), (64, 331)])
def test_istft_equals_torch_istft_with_the_spec_padding(nfft: int, length: int) -> None:
    """The hand-rolled overlap-add against ``torch.istft`` (what demucs calls), on a random spectrogram
    in float64 and in a non-contiguous layout: the Nyquist bin and two frames on each side put back as
    zeros, then the crop by the analysis's left pad (htdemucs-spec §1.3)."""
    hop = nfft // 4
    frames = -(-length // hop)
    generator = torch.Generator().manual_seed(nfft + length)
    z = torch.randn(2, 3, frames, nfft // 2, dtype=torch.complex128, generator=generator).transpose(-1, -2)
    padded = torch.nn.functional.pad(z.reshape(-1, nfft // 2, frames), (2, 2, 0, 1))
    side = hop // 2 * 3
    window = torch.hann_window(nfft, periodic=True, dtype=torch.float64)
    full = torch.istft(
        padded, nfft, hop, nfft, window, center=True, normalized=True, length=hop * frames + 2 * side
    )
    expected = full[:, side : side + length].reshape(2, 3, length)
    torch.testing.assert_close(istft(z, length), expected, atol=1e-12, rtol=0)


def test_pad1d_reflect_short_input_matches_documented_example() -> None:
    # htdemucs-spec §1.4: [1, 2, 3] padded (5, 5) → [0, 0, 0, 3, 2, 1, 2, 3, 0, 0, 0, 0, 0]
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    assert pad1d_reflect(x, 5, 5).flatten().tolist() == [0, 0, 0, 3, 2, 1, 2, 3, 0, 0, 0, 0, 0]
    torch.testing.assert_close(pad1d_reflect(x, 1, 2), torch.nn.functional.pad(x, (1, 2), mode="reflect"))


@pytest.mark.parametrize("spec", [DConvSpec(4, 2), DConvSpec(2, 2, lstm=True, attn=True)])
def test_frequency_dconv_on_the_map_equals_the_row_batch(
    spec: DConvSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form the ONNX export takes (2-D ops on the map, no transposed copies) computes what the row batch
    does; a DConv with a BiLSTM or local attention keeps the row batch (the map form has no such blocks)."""
    real_on_rows = layers._on_rows
    torch.manual_seed(0)
    dconv = DConv(8, spec).eval()
    with torch.no_grad():
        for parameter in dconv.parameters():  # non-trivial norms' affines and layer scales
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(2, 8, 5, 37, dtype=torch.float64)
    dconv.double()
    with torch.no_grad():
        rows = _dconv_rows(dconv, x)
        on_map: list[torch.nn.Module] = []
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        monkeypatch.setattr(layers, "_on_rows", lambda m, y: (on_map.append(m), real_on_rows(m, y))[1])
        mapped = _dconv_rows(dconv, x)
    torch.testing.assert_close(mapped, rows, atol=1e-10, rtol=0)
    assert bool(on_map) == (not spec.lstm)  # the map form ran, or was not used


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in float64 with every parameter moved off its initial value (norm affines included)."""
    module.double().eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return module


@pytest.mark.parametrize(
    ("norm_groups", "affine", "bias", "conv_groups"),
    [(0, True, True, 1), (1, True, True, 1), (2, True, False, 1), (4, False, True, 1), (3, True, True, 1),
     (1, True, True, 2)],
)  # fmt: skip
@pytest.mark.parametrize("dims", [1, 2])
def test_glu_of_a_conv_exports_as_two_convs(
    norm_groups: int, affine: bool, bias: bool, conv_groups: int, dims: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exported, a conv · norm · GLU runs as two convs of half the channels (the norm on the halves) and
    computes what the ordinary form does; a norm whose groups straddle the halves (3) or a grouped conv (a
    half of its filters would read the wrong input groups) keeps the ordinary form."""
    torch.manual_seed(norm_groups)
    conv_type = torch.nn.Conv2d if dims == 2 else torch.nn.Conv1d
    conv = _perturbed(conv_type(6, 12, 3, padding=1, bias=bias, groups=conv_groups))
    norm = _perturbed(GroupNorm(norm_groups, 12, affine=affine) if norm_groups else torch.nn.Identity())
    x = torch.randn(2, 6, *(9,) * (dims - 1), 300, dtype=torch.float64)
    expected = torch.nn.functional.glu(norm(conv(x)), dim=1)
    convs: list[tuple[int, ...]] = []
    real = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv1d
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    monkeypatch.setattr(
        torch.nn.functional,
        f"conv{dims}d",
        lambda x, w, *a: (convs.append(tuple(w.shape)), real(x, w, *a))[1],
    )
    with torch.no_grad():
        exported = glu_conv(conv, norm, x)
    torch.testing.assert_close(exported, expected, atol=1e-10, rtol=0)
    whole = (12, 6 // conv_groups, *(3,) * dims)
    split = norm_groups != 3 and conv_groups == 1
    assert convs == ([(6, 6, *(3,) * dims)] * 2 if split else [whole])  # two halves, or the whole conv once


@pytest.mark.parametrize("freq", [True, False])
def test_layers_export_what_they_compute(freq: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder and a decoder layer (rewrite conv, GLU, DConv with its one-group norms) give the same
    output in their exported form, with and without GroupNorms before the GLUs."""
    torch.manual_seed(int(freq))
    shape = (2, 8, 12, 50) if freq else (2, 8, 200)
    for groups in (0, 4):
        kw = {"freq": freq, "kernel_size": 8, "stride": 4, "dconv": DConvSpec(4, 2), "norm_groups": groups}
        encoder = _perturbed(EncoderLayer(8, 8, context=0, **kw))
        decoder = _perturbed(DecoderLayer(8, 8, context=1, last=False, **kw))
        x, skip = (torch.randn(shape, dtype=torch.float64) for _ in range(2))
        with torch.no_grad(), monkeypatch.context() as patch:
            eager = (encoder(x), decoder.inner(x, skip))
            patch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
            patch.setattr(torch.nn.functional, "glu", lambda *a, **k: pytest.fail("a GLU was not split"))
            exported = (encoder(x), decoder.inner(x, skip))
        for got, want in zip(exported, eager, strict=True):
            torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    ("freq", "shape", "expected"), [(True, (2, 4, 64, 7), (2, 8, 16, 7)), (False, (2, 4, 103), (2, 8, 26))]
)
def test_encoder_layer_shapes(freq: bool, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    layer = EncoderLayer(4, 8, freq=freq, kernel_size=8, stride=4, context=0, dconv=DConvSpec(4, 2))
    assert layer(torch.randn(shape)).shape == expected


@pytest.mark.parametrize(
    ("freq", "shape", "length", "expected"),
    [(True, (2, 8, 16, 7), 0, (2, 4, 64, 7)), (False, (2, 8, 26), 103, (2, 4, 103))],
)
def test_decoder_layer_shapes(
    freq: bool, shape: tuple[int, ...], length: int, expected: tuple[int, ...]
) -> None:
    layer = DecoderLayer(
        8, 4, freq=freq, kernel_size=8, stride=4, context=1, dconv=DConvSpec(4, 2), last=False
    )
    x = torch.randn(shape)
    assert layer(x, torch.randn(shape), length).shape == expected


def test_dconv_is_residual() -> None:
    dconv = DConv(16, DConvSpec(4, 2))
    for branch in dconv.layers:
        torch.nn.init.zeros_(branch[6].scale)  # LayerScale 0 → the branch contributes nothing
    x = torch.randn(2, 16, 50)
    torch.testing.assert_close(dconv(x), x)


def test_sinusoidal_embeddings_follow_the_spec_formulas() -> None:
    like = torch.zeros(())
    emb2 = sin_embedding_2d(8, rows=3, frames=5, max_period=100.0, like=like)  # (1, 15, 8)
    assert emb2.shape == (1, 15, 8)
    t, f = 4, 2
    token = emb2[0, t * 3 + f]
    for k in range(2):
        omega = torch.exp(torch.tensor(-2.0 * k * torch.log(torch.tensor(100.0)).item() / 4))
        torch.testing.assert_close(token[2 * k], torch.sin(t * omega))
        torch.testing.assert_close(token[2 * k + 1], torch.cos(t * omega))
        torch.testing.assert_close(token[4 + 2 * k], torch.sin(f * omega))
        torch.testing.assert_close(token[4 + 2 * k + 1], torch.cos(f * omega))
    emb1 = sin_embedding_1d(6, 8, max_period=100.0, like=like)  # (1, 6, 8)
    p, i = 5, 3
    phase = torch.tensor(p / 100.0 ** (i / 3))
    torch.testing.assert_close(emb1[0, p, i], torch.cos(phase))
    torch.testing.assert_close(emb1[0, p, 4 + i], torch.sin(phase))


def test_cross_layers_read_the_other_streams_input() -> None:
    """Layer kinds alternate self/cross; with cross_first they start with cross."""
    plain = CrossTransformer(16, heads=2, layers=3, hidden=32, cross_first=False, norm_in=True, norm_out=True,
                             layer_scale=True, gelu=True, max_period=1e4, weight_pos_embed=1.0)  # fmt: skip
    first = CrossTransformer(16, heads=2, layers=3, hidden=32, cross_first=True, norm_in=True, norm_out=True,
                             layer_scale=True, gelu=True, max_period=1e4, weight_pos_embed=1.0)  # fmt: skip
    assert plain.cross == [False, True, False]
    assert first.cross == [True, False, True]
    x, xt = plain(torch.randn(2, 16, 3, 5), torch.randn(2, 16, 9))
    assert x.shape == (2, 16, 3, 5) and xt.shape == (2, 16, 9)
