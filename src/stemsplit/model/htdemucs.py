"""Hybrid Transformer Demucs: a spectral and a temporal U-Net joined by a cross-domain transformer.

Implements htdemucs-spec §1.3 in eval mode; the stages around the networks are
:class:`~stemsplit.model.hybrid.HybridModel`'s. Shape letters: ``B`` batch, ``S`` sources, ``C`` audio
channels, ``L`` input samples, ``T`` the training window in samples, ``Fq`` frequency bins, ``Fr`` STFT
frames, ``D`` transformer width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemsplit.model.config import HTDemucsConfig
from stemsplit.model.hybrid import HybridModel
from stemsplit.model.layers import DConvSpec, DecoderLayer, EncoderLayer, ScaledEmbedding
from stemsplit.model.transformer import CrossTransformer


class HTDemucs(HybridModel):
    """The HT Demucs network; its ``state_dict`` has exactly the official checkpoints' keys and shapes.

    Every forward runs on the training window: shorter inputs are zero-padded on the right (and the output
    cropped back), longer ones refused.

    Args:
        config: the architecture, usually read from a checkpoint by :mod:`stemsplit.weights.checkpoint`.
    """

    config: HTDemucsConfig
    fixed_window = True

    def __init__(self, config: HTDemucsConfig) -> None:
        super().__init__(config)
        cfg = config
        S = len(cfg.sources)
        widths = [cfg.width(i) for i in range(cfg.depth)]  # 48, 96, 192, 384
        spec = DConvSpec(cfg.dconv_comp, cfg.dconv_depth)
        enc_dconv = spec if cfg.dconv_mode & 1 else None
        dec_dconv = spec if cfg.dconv_mode & 2 else None
        k, stride = cfg.kernel_size, cfg.stride

        self.encoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()
        for i, width in enumerate(widths):
            chin_f = widths[i - 1] if i else 2 * cfg.audio_channels  # complex as channels
            chin_t = widths[i - 1] if i else cfg.audio_channels
            for freq, chin, encoders in ((True, chin_f, self.encoder), (False, chin_t, self.tencoder)):
                encoders.append(
                    EncoderLayer(chin, width, freq=freq, kernel_size=k, stride=stride, context=cfg.context_enc,
                                 dconv=enc_dconv)
                )  # fmt: skip
        for i in reversed(range(cfg.depth)):  # decoder.0 is the innermost
            out_f = widths[i - 1] if i else S * 2 * cfg.audio_channels
            out_t = widths[i - 1] if i else S * cfg.audio_channels
            for freq, chout, decoders in ((True, out_f, self.decoder), (False, out_t, self.tdecoder)):
                decoders.append(
                    DecoderLayer(widths[i], chout, freq=freq, kernel_size=k, stride=stride, context=cfg.context,
                                 dconv=dec_dconv, last=i == 0)
                )  # fmt: skip

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

    def fit_window(self, mix: torch.Tensor) -> torch.Tensor:
        """Zero-pad (B, C, L) on the right to the window ``T``: (B, C, T).

        Raises:
            ValueError: if ``L > segment_samples`` (cut the track into windows first).
        """
        L, T = mix.shape[-1], self.segment_samples
        if L > T:
            raise ValueError(f"input of {L} samples is longer than the model's window of {T} samples")
        return F.pad(mix, (0, T - L))  # right zero-padding to the training length

    def trunk(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both U-Nets and the transformer: (B, 2C, Fq, Fr), (B, C, T) → (B, 2SC, Fq, Fr), (B, SC, T)
        (see :meth:`HybridModel.trunk`)."""
        skips, skips_t, lengths_t = [], [], []
        for idx, (encode, encode_t) in enumerate(zip(self.encoder, self.tencoder, strict=True)):
            lengths_t.append(xt.shape[-1])
            xt = encode_t(xt)
            x = encode(x)
            if idx == 0:
                x = self.freq_emb.add_to(x, self.config.freq_emb)
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
