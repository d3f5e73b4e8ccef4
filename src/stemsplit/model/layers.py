"""Convolutional building blocks of HT Demucs (htdemucs-spec §1.4).

Attribute names (``conv``, ``rewrite``, ``dconv.layers.j.k``, ``conv_tr``, ``embedding``, ``scale``) are
fixed by the official checkpoints' state_dict keys. Shape letters: ``B`` batch, ``C`` channels, ``Fq``
frequency bins, ``T`` time steps (STFT frames in the spectral branch, samples in the temporal one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch.

    Args:
        channels: number of channels ``C``.
        channel_last: scale the last axis (transformer tokens) instead of axis 1 (convolution maps).
    """

    def __init__(self, channels: int, channel_last: bool = False) -> None:
        super().__init__()
        self.channel_last = channel_last
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) or (B, T, C) when ``channel_last`` → same shape."""
        if self.channel_last:
            return self.scale * x
        return self.scale[:, None] * x


class DConv(nn.Module):
    """Stack of dilated residual convolutions along time.

    Sub-layer ``j`` is ``x + branch_j(x)`` with the branch (indices fixed by the checkpoints):
    0 Conv1d(C → H, 3, dilation 2**j) · 1 GroupNorm(1, H) · 2 GELU · 3 Conv1d(H → 2C, 1) ·
    4 GroupNorm(1, 2C) · 5 GLU · 6 LayerScale(C), where ``H = int(C / compress)``.

    Args:
        channels: ``C``.
        compress: channel compression of the hidden layer.
        depth: number of residual sub-layers.
    """

    def __init__(self, channels: int, compress: int, depth: int) -> None:
        super().__init__()
        hidden = int(channels / compress)
        self.layers = nn.ModuleList()
        for j in range(depth):
            dilation = 2**j
            self.layers.append(
                nn.Sequential(
                    nn.Conv1d(channels, hidden, 3, dilation=dilation, padding=dilation),
                    nn.GroupNorm(1, hidden),
                    nn.GELU(),
                    nn.Conv1d(hidden, 2 * channels, 1),
                    nn.GroupNorm(1, 2 * channels),
                    nn.GLU(1),
                    LayerScale(channels),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, T)."""
        for branch in self.layers:
            x = x + branch(x)
        return x


def _dconv_rows(dconv: DConv, x: torch.Tensor) -> torch.Tensor:
    """Run a DConv along time on every frequency row of a (B, C, Fq, T) map separately."""
    B, C, Fq, T = x.shape
    rows = x.permute(0, 2, 1, 3).reshape(B * Fq, C, T)  # (B*Fq, C, T)
    rows = dconv(rows)
    out: torch.Tensor = rows.reshape(B, Fq, C, T).permute(0, 2, 1, 3)  # (B, C, Fq, T)
    return out


class EncoderLayer(nn.Module):
    """One encoder layer: strided conv, GELU, optional DConv, 1x1 "rewrite" conv and GLU.

    The spectral variant (``freq=True``) convolves over frequency only, kernel ``(K, 1)``, and divides the
    bins by the stride; the temporal variant convolves the waveform (or its features) over time.

    Args:
        chin: input channels.
        chout: output channels.
        freq: spectral (Conv2d over frequency) or temporal (Conv1d over time) layer.
        kernel_size: ``K``.
        stride: ``S``; also the factor the frequency bins / time steps shrink by.
        context: half-width of the rewrite conv (0 → 1x1).
        dconv: DConv settings ``(compress, depth)``, or None for no DConv.
    """

    def __init__(
        self,
        chin: int,
        chout: int,
        *,
        freq: bool,
        kernel_size: int,
        stride: int,
        context: int,
        dconv: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.freq = freq
        self.stride = stride
        pad = kernel_size // 4
        if freq:
            self.conv: nn.Module = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1), (pad, 0))
            self.rewrite: nn.Module = nn.Conv2d(chout, 2 * chout, 1 + 2 * context, 1, context)
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, pad)
            self.rewrite = nn.Conv1d(chout, 2 * chout, 1 + 2 * context, 1, context)
        self.dconv = DConv(chout, *dconv) if dconv is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spectral: (B, chin, Fq, T) → (B, chout, Fq / S, T). Temporal: (B, chin, T) → (B, chout, ceil(T / S))."""
        if not self.freq and x.shape[-1] % self.stride:
            x = F.pad(x, (0, self.stride - x.shape[-1] % self.stride))  # whole number of strides
        y = F.gelu(self.conv(x))
        if self.dconv is not None:
            y = _dconv_rows(self.dconv, y) if self.freq else self.dconv(y)
        return F.glu(self.rewrite(y), dim=1)


class DecoderLayer(nn.Module):
    """One decoder layer: add the skip, 3x3 "rewrite" conv and GLU, optional DConv, transposed conv.

    Args:
        chin: input channels (also the skip's channels).
        chout: output channels.
        freq: spectral (over frequency) or temporal layer.
        kernel_size: ``K``.
        stride: ``S``; the frequency bins / time steps grow by it.
        context: half-width of the rewrite conv (1 → 3x3 over frequency and time).
        dconv: DConv settings ``(compress, depth)``, or None for no DConv.
        last: the outermost layer, which has no output GELU.
    """

    def __init__(
        self,
        chin: int,
        chout: int,
        *,
        freq: bool,
        kernel_size: int,
        stride: int,
        context: int,
        dconv: tuple[int, int] | None,
        last: bool,
    ) -> None:
        super().__init__()
        self.freq = freq
        self.last = last
        self.pad = kernel_size // 4
        if freq:
            self.conv_tr: nn.Module = nn.ConvTranspose2d(chin, chout, (kernel_size, 1), (stride, 1))
            self.rewrite: nn.Module = nn.Conv2d(chin, 2 * chin, 1 + 2 * context, 1, context)
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
            self.rewrite = nn.Conv1d(chin, 2 * chin, 1 + 2 * context, 1, context)
        self.dconv = DConv(chin, *dconv) if dconv is not None else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, length: int) -> torch.Tensor:
        """Spectral: (B, chin, Fq, T) → (B, chout, S * Fq, T). Temporal: (B, chin, T) → (B, chout, length).

        Args:
            x: output of the previous (inner) decoder or of the transformer.
            skip: the matching encoder's output, same shape as ``x``.
            length: temporal layers only: the time length the matching encoder received.
        """
        y = F.glu(self.rewrite(x + skip), dim=1)
        if self.dconv is not None:
            y = _dconv_rows(self.dconv, y) if self.freq else self.dconv(y)
        z = self.conv_tr(y)  # frequency or time axis: (n - 1) * S + K = S * n + 2 * pad
        if self.freq:
            z = z[:, :, self.pad : z.shape[2] - self.pad]
        else:
            z = z[..., self.pad : self.pad + length]
        return z if self.last else F.gelu(z)


class ScaledEmbedding(nn.Module):
    """Embedding table whose rows are multiplied by a fixed scale when read.

    Args:
        num: number of rows (frequency bins after the first spectral encoder).
        dim: row width (channels of the first spectral encoder).
        scale: multiplier applied on lookup.
    """

    def __init__(self, num: int, dim: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.embedding = nn.Embedding(num, dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(N,) integer indices → (N, dim)."""
        rows: torch.Tensor = self.embedding(idx)
        return rows * self.scale
