"""Hybrid Demucs (v3, ``hdemucs_mmi``): a spectral and a temporal U-Net that merge into one branch.

Implements htdemucs-spec §1.6 (the reference ``HDemucs`` with ``hybrid=True``, complex as channels, no band
splitting) in eval mode; the stages around the networks are :class:`~stemsplit.model.hybrid.HybridModel`'s.
Unlike HT Demucs there is no transformer and no fixed window: the spectral layers shrink the frequency
bins until one row is left (the merge layer, where the temporal branch's convolution is added in), temporal
layers go on from there, and the deepest layers' DConvs add a chunked BiLSTM and local attention. The
innermost latent is zeroed before decoding, so the signal reaches the decoders through the skips only.

Shape letters: ``B`` batch, ``C`` channels, ``Fq`` frequency bins, ``Fr`` STFT frames, ``T`` samples.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from stemsplit.model.config import HDemucsConfig
from stemsplit.model.hybrid import HybridModel
from stemsplit.model.layers import DConvSpec, DecoderLayer, EncoderLayer, ScaledEmbedding


class HDemucs(HybridModel):
    """The Hybrid Demucs network; its ``state_dict`` has exactly the official checkpoint's keys and shapes.

    Layers of ``hdemucs_mmi`` (``encoder.i`` / ``tencoder.i``; the decoders mirror them, innermost first):
    0-3 spectral (bins 2048 → 8) beside temporal ones, 4 the merge (a kernel over the last 8 bins, plus an
    empty temporal layer whose output is added), 5 temporal (kernel 4, stride 2). Layers 4 and 5 have
    GroupNorms and BiLSTM + local attention in their DConvs.

    Args:
        config: the architecture, usually read from a checkpoint by :mod:`stemsplit.weights.checkpoint`.
    """

    config: HDemucsConfig

    def __init__(self, config: HDemucsConfig) -> None:
        super().__init__(config)
        cfg = config
        merge = cfg.merge_layer
        inputs_f, inputs_t = 2 * cfg.audio_channels, cfg.audio_channels  # complex as channels
        outputs_f, outputs_t = len(cfg.sources) * inputs_f, len(cfg.sources) * inputs_t
        self.encoder = nn.ModuleList()
        self.tencoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.tdecoder = nn.ModuleList()
        for i in range(cfg.depth):
            width = cfg.width(i)
            chin_f, chin_t = (cfg.width(i - 1),) * 2 if i else (inputs_f, inputs_t)
            chout_f, chout_t = (cfg.width(i - 1),) * 2 if i else (outputs_f, outputs_t)
            spec = DConvSpec(
                cfg.dconv_comp, cfg.dconv_depth, lstm=i >= cfg.dconv_lstm, attn=i >= cfg.dconv_attn
            )
            enc_dconv = spec if cfg.dconv_mode & 1 else None
            dec_dconv = spec if cfg.dconv_mode & 2 else None
            groups = cfg.norm_groups if i >= cfg.norm_starts else 0
            freq = i <= merge  # after the merge: one temporal branch
            kernel = (cfg.bins(i) if i == merge else cfg.kernel_size) if freq else 2 * cfg.time_stride
            stride = cfg.stride if freq else cfg.time_stride
            self.encoder.append(
                EncoderLayer(
                    chin_f, width, freq=freq, kernel_size=kernel, stride=stride, pad=i != merge,
                    context=cfg.context_enc, dconv=enc_dconv, norm_groups=groups,
                )
            )  # fmt: skip
            self.decoder.insert(
                0,
                DecoderLayer(
                    width, chout_f, freq=freq, kernel_size=kernel, stride=stride, pad=i != merge,
                    context=cfg.context, dconv=dec_dconv, last=i == 0, norm_groups=groups,
                ),
            )  # fmt: skip
            if not freq:
                continue
            # The temporal twin: a regular layer, or at the merge its convolution only.
            self.tencoder.append(
                EncoderLayer(
                    chin_t, width, freq=False, kernel_size=cfg.kernel_size, stride=cfg.stride,
                    context=cfg.context_enc, dconv=enc_dconv, norm_groups=groups, empty=i == merge,
                )
            )  # fmt: skip
            self.tdecoder.insert(
                0,
                DecoderLayer(
                    width, chout_t, freq=False, kernel_size=cfg.kernel_size, stride=cfg.stride,
                    context=cfg.context, dconv=dec_dconv, last=i == 0, norm_groups=groups, empty=i == merge,
                ),
            )  # fmt: skip
        self.freq_emb = ScaledEmbedding(cfg.bins(1), cfg.width(0), cfg.emb_scale)

    def trunk(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both U-Nets, merged and split again: (B, 2C, Fq, Fr), (B, C, T) → (B, 2SC, Fq, Fr), (B, SC, T)
        (see :meth:`HybridModel.trunk`)."""
        skips, lengths, skips_t, lengths_t = self._encode(x, xt)
        return self._decode(skips, lengths, skips_t, lengths_t)

    def _encode(
        self, x: torch.Tensor, xt: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[int], list[torch.Tensor], list[int]]:
        """Every encoder's output (the skips) and the time length each encoder received, per branch."""
        skips: list[torch.Tensor] = []
        lengths: list[int] = []
        skips_t: list[torch.Tensor] = []
        lengths_t: list[int] = []
        encoders_t = cast("list[EncoderLayer]", self.tencoder)
        for idx, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(encoders_t):
                lengths_t.append(xt.shape[-1])
                encode_t = encoders_t[idx]
                xt = encode_t(xt)
                if encode_t.empty:  # the merge: (B, C', Fr) added to the spectral conv's (B, C', 1, Fr)
                    inject = xt[:, :, None]
                else:
                    skips_t.append(xt)
            elif x.dim() == 4:  # (B, C', 1, Fr) → (B, C', Fr): temporal layers from here on
                x = x[:, :, 0]
            x = encode(x, inject)
            if idx == 0:
                x = self.freq_emb.add_to(x, self.config.freq_emb)
            skips.append(x)
        return skips, lengths, skips_t, lengths_t

    def _decode(
        self, skips: list[torch.Tensor], lengths: list[int], skips_t: list[torch.Tensor], lengths_t: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoders from a zero latent: (B, 2SC, Fq, Fr) and (B, SC, T)."""
        x = torch.zeros_like(skips[-1])  # the innermost latent is zeroed: only the skips carry the signal
        xt = x
        decoders_t = cast("list[DecoderLayer]", self.tdecoder)
        offset = len(self.decoder) - len(decoders_t)
        for idx, decode in enumerate(cast("list[DecoderLayer]", self.decoder)):
            skip = skips.pop()
            if skip.dim() == 4 and x.dim() == 3:  # back to one spectral row at the merge
                x = x[:, :, None]
            pre = decode.inner(x, skip)
            x = decode.expand(pre, lengths.pop())
            if idx < offset:
                continue
            decode_t = decoders_t[idx - offset]
            if decode_t.empty:  # the merge, undone: the temporal branch starts from the spectral one
                xt = decode_t.expand(pre[:, :, 0], lengths_t.pop())
            else:
                xt = decode_t(xt, skips_t.pop(), lengths_t.pop())
        return x, xt
