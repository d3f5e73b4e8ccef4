"""Hybrid Transformer Demucs: a spectral and a temporal U-Net joined by a cross-domain transformer.

Implements htdemucs-spec §1.3 in eval mode. Shape letters: ``B`` batch, ``S`` sources, ``C`` audio
channels, ``L`` input samples, ``T`` the training window in samples, ``Fq`` frequency bins, ``Fr`` STFT
frames, ``D`` transformer width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stemsplit.model.config import HTDemucsConfig
from stemsplit.model.layers import DecoderLayer, EncoderLayer, ScaledEmbedding
from stemsplit.model.spectral import istft, stft
from stemsplit.model.transformer import CrossTransformer

_STD_EPS = 1e-5  # added to the std on the way in only (htdemucs-spec §5.3)


@dataclass(frozen=True)
class Analysis:
    """What :meth:`HTDemucs.analyse` hands to the networks and, for de-normalising, to the synthesis.

    Attributes:
        x: (B, 2C, Fq, Fr) normalised spectrogram, complex as channels.
        xt: (B, C, T) normalised waveform (padded to the window).
        mean, std: (B, 1, 1, 1) statistics of the spectrogram.
        meant, stdt: (B, 1, 1) statistics of the waveform.
        length: ``L``, the input length before padding.
    """

    x: torch.Tensor
    xt: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    meant: torch.Tensor
    stdt: torch.Tensor
    length: int


class HTDemucs(nn.Module):
    """The HT Demucs network; its ``state_dict`` has exactly the official checkpoints' keys and shapes.

    Args:
        config: the architecture, usually read from a checkpoint by :mod:`stemsplit.weights.checkpoint`.
    """

    def __init__(self, config: HTDemucsConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        S = len(cfg.sources)
        widths = [cfg.channels * cfg.growth**i for i in range(cfg.depth)]  # 48, 96, 192, 384
        enc_dconv = (cfg.dconv_comp, cfg.dconv_depth) if cfg.dconv_mode & 1 else None
        dec_dconv = (cfg.dconv_comp, cfg.dconv_depth) if cfg.dconv_mode & 2 else None
        conv = {"kernel_size": cfg.kernel_size, "stride": cfg.stride}

        self.encoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()
        for i, width in enumerate(widths):
            chin_f = widths[i - 1] if i else 2 * cfg.audio_channels  # complex as channels
            chin_t = widths[i - 1] if i else cfg.audio_channels
            for freq, chin, encoders in ((True, chin_f, self.encoder), (False, chin_t, self.tencoder)):
                encoders.append(
                    EncoderLayer(chin, width, freq=freq, context=cfg.context_enc, dconv=enc_dconv, **conv)
                )
        for i in reversed(range(cfg.depth)):  # decoder.0 is the innermost
            out_f = widths[i - 1] if i else S * 2 * cfg.audio_channels
            out_t = widths[i - 1] if i else S * cfg.audio_channels
            for freq, chout, decoders in ((True, out_f, self.decoder), (False, out_t, self.tdecoder)):
                decoders.append(
                    DecoderLayer(
                        widths[i], chout, freq=freq, context=cfg.context, dconv=dec_dconv, last=i == 0, **conv
                    )
                )

        self.freq_emb = ScaledEmbedding(cfg.nfft // 2 // cfg.stride, widths[0], cfg.emb_scale)
        inner, dim = cfg.inner_channels, cfg.transformer_dim
        if cfg.bottom_channels:
            self.channel_upsampler = nn.Conv1d(inner, dim, 1)
            self.channel_downsampler = nn.Conv1d(dim, inner, 1)
            self.channel_upsampler_t = nn.Conv1d(inner, dim, 1)
            self.channel_downsampler_t = nn.Conv1d(dim, inner, 1)
        self.crosstransformer = CrossTransformer(
            dim,
            heads=cfg.t_heads,
            layers=cfg.t_layers,
            hidden=int(dim * cfg.t_hidden_scale),
            cross_first=cfg.t_cross_first,
            norm_in=cfg.t_norm_in,
            norm_out=cfg.t_norm_out,
            layer_scale=cfg.t_layer_scale,
            gelu=cfg.t_gelu,
            max_period=cfg.t_max_period,
            weight_pos_embed=cfg.t_weight_pos_embed,
        )

    @property
    def sources(self) -> tuple[str, ...]:
        """Stem names in output order."""
        return self.config.sources

    @property
    def samplerate(self) -> int:
        """Sample rate in Hz."""
        return self.config.samplerate

    @property
    def audio_channels(self) -> int:
        """Channels of the input and of each output stem."""
        return self.config.audio_channels

    @property
    def segment_samples(self) -> int:
        """Window length ``T`` in samples; shorter inputs are zero-padded to it, longer ones refused."""
        return self.config.segment_samples

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate one window per batch item.

        Args:
            mix: (B, C, L) waveform at ``samplerate``, ``L <= segment_samples``.

        Returns:
            (B, S, C, L) stems in ``sources`` order.

        Raises:
            ValueError: if ``L > segment_samples`` (cut the track into windows first).
        """
        analysis = self.analyse(mix)
        x, xt = self.trunk(analysis.x, analysis.xt)
        return self.synthesise(x, xt, analysis)

    # The three stages below are public so that a caller can run the complex-valued ones (STFT, iSTFT)
    # on another device than the networks (Apple's MPS lacks complex support); none has parameters
    # except ``trunk``.

    def analyse(self, mix: torch.Tensor) -> Analysis:
        """Stage 1, complex-valued: pad to the window, STFT, and normalise both branches' inputs.

        Args:
            mix: (B, C, L) waveform, ``L <= segment_samples``.

        Raises:
            ValueError: if ``L > segment_samples``.
        """
        L = mix.shape[-1]
        T = self.segment_samples
        if L > T:
            raise ValueError(f"input of {L} samples is longer than the model's window of {T} samples")
        mix = F.pad(mix, (0, T - L))  # right zero-padding to the training length
        z = stft(mix, self.config.nfft)  # (B, C, Fq, Fr) complex
        B, C, Fq, Fr = z.shape
        x = torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, Fq, Fr)  # [c0.re, c0.im, c1.re, …]
        x, mean, std = _normalise(x, dims=(1, 2, 3))
        xt, meant, stdt = _normalise(mix, dims=(1, 2))
        return Analysis(x, xt, mean, std, meant, stdt, L)

    def trunk(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2, real-valued: both U-Nets and the transformer.

        Args:
            x: (B, 2C, Fq, Fr) normalised spectrogram, complex as channels.
            xt: (B, C, T) normalised waveform.

        Returns:
            (B, 2SC, Fq, Fr) and (B, SC, T): every source's spectrogram and waveform, still normalised.
        """
        return self._unets(x, xt)

    def synthesise(self, x: torch.Tensor, xt: torch.Tensor, analysis: Analysis) -> torch.Tensor:
        """Stage 3, complex-valued: de-normalise, iSTFT, add the two branches, crop to the input length.

        Returns:
            (B, S, C, L) stems.
        """
        B, C, T = analysis.xt.shape
        S = len(self.sources)
        a = analysis
        x = x.view(B, S, 2 * C, *x.shape[-2:]) * a.std[:, None] + a.mean[:, None]  # (B, S, 2C, Fq, Fr)
        xt = xt.view(B, S, C, T) * a.stdt[:, None] + a.meant[:, None]  # (B, S, C, T)
        Fq, Fr = x.shape[-2:]
        x = x.view(B, S, C, 2, Fq, Fr).permute(0, 1, 2, 4, 5, 3)  # (B, S, C, Fq, Fr, re/im)
        waves = istft(torch.view_as_complex(x.contiguous()), T)  # (B, S, C, T)
        return (xt + waves)[..., : a.length]

    def _unets(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both U-Nets and the transformer: (B, 2C, Fq, Fr), (B, C, T) → (B, 2SC, Fq, Fr), (B, SC, T)."""
        skips, skips_t, lengths_t = [], [], []
        for idx, (encode, encode_t) in enumerate(zip(self.encoder, self.tencoder, strict=True)):
            lengths_t.append(xt.shape[-1])
            xt = encode_t(xt)
            x = encode(x)
            if idx == 0:  # frequency embedding, one row per bin, broadcast over batch and frames
                rows = torch.arange(x.shape[-2], device=x.device)
                x = x + self.config.freq_emb * self.freq_emb(rows).t()[None, :, :, None]
            skips.append(x)
            skips_t.append(xt)
        x, xt = self._bottleneck(x, xt)
        for decode, decode_t in zip(self.decoder, self.tdecoder, strict=True):
            x = decode(x, skips.pop(), 0)
            xt = decode_t(xt, skips_t.pop(), lengths_t.pop())
        return x, xt

    def _bottleneck(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-domain transformer, with 1x1 width changes around it when ``bottom_channels`` is set."""
        B, C, Fq, Fr = x.shape  # (B, 384, 8, 336) for the released models
        if self.config.bottom_channels:
            x = self.channel_upsampler(x.reshape(B, C, Fq * Fr)).view(B, -1, Fq, Fr)  # (B, D, Fq, Fr)
            xt = self.channel_upsampler_t(xt)  # (B, D, T')
        x, xt = self.crosstransformer(x, xt)
        if self.config.bottom_channels:
            x = self.channel_downsampler(x.reshape(B, -1, Fq * Fr)).view(B, C, Fq, Fr)
            xt = self.channel_downsampler_t(xt)
        return x, xt


def _normalise(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-item standardisation with the unbiased std: returns ``(x - mean) / (eps + std)``, mean, std."""
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (_STD_EPS + std), mean, std
