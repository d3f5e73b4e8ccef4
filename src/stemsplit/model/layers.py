"""Convolutional building blocks of both hybrid networks (htdemucs-spec §1.4, §1.6).

Attribute names (``conv``, ``rewrite``, ``dconv.layers.j.k``, ``conv_tr``, ``embedding``, ``scale``) are
fixed by the official checkpoints' state_dict keys. Shape letters: ``B`` batch, ``C`` channels, ``Fq``
frequency bins, ``T`` time steps (STFT frames in the spectral branch, samples in the temporal one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stemsplit.model.context import BLSTM, LocalState
from stemsplit.model.norms import GroupNorm, exporting, group_norm_halves, normalise


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


@dataclass(frozen=True)
class DConvSpec:
    """The DConv residual branch of one layer.

    Attributes:
        compress: channel compression of the hidden layer (hidden width ``int(C / compress)``).
        depth: number of residual sub-layers.
        lstm: a chunked BiLSTM in each sub-layer (Hybrid Demucs, deep layers).
        attn: local attention in each sub-layer (Hybrid Demucs, deep layers).
    """

    compress: int
    depth: int
    lstm: bool = False
    attn: bool = False


class DConv(nn.Module):
    """Stack of dilated residual convolutions along time.

    Sub-layer ``j`` is ``x + branch_j(x)`` with the branch (indices fixed by the checkpoints):
    0 Conv1d(C → H, 3, dilation 2**j) · 1 GroupNorm(1, H) · 2 GELU · [BLSTM(H)] · [LocalState(H)] ·
    Conv1d(H → 2C, 1) · GroupNorm(1, 2C) · GLU · LayerScale(C), where ``H = int(C / compress)``; the
    bracketed blocks are there only when ``spec`` asks for them, and shift the later indices.

    Args:
        channels: ``C``.
        spec: compression, depth and the optional context blocks.
    """

    def __init__(self, channels: int, spec: DConvSpec) -> None:
        super().__init__()
        hidden = int(channels / spec.compress)
        self.layers = nn.ModuleList()
        for j in range(spec.depth):
            dilation = 2**j
            context = [
                *([BLSTM(hidden)] if spec.lstm else []),
                *([LocalState(hidden)] if spec.attn else []),
            ]
            self.layers.append(
                nn.Sequential(
                    nn.Conv1d(channels, hidden, 3, dilation=dilation, padding=dilation),
                    GroupNorm(1, hidden),
                    nn.GELU(),
                    *context,
                    nn.Conv1d(hidden, 2 * channels, 1),
                    GroupNorm(1, 2 * channels),
                    nn.GLU(1),
                    LayerScale(channels),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, T)."""
        for branch in self.layers:
            x = x + (_exported_branch(branch, x, rows=False) if exporting() else branch(x))
        return x


def _dconv_rows(dconv: DConv, x: torch.Tensor) -> torch.Tensor:
    """Run a DConv along time on every frequency row of a (B, C, Fq, T) map separately.

    In PyTorch the rows become a batch of (C, T) sequences (two transposed copies, the fastest form there).
    While the model is exported to ONNX (the OpenVINO backend), a DConv of convolutions, one-group norms and
    element-wise blocks runs on the map itself instead: each Conv1d as a (1, K) Conv2d, each GroupNorm(1) as a
    norm over (C, T) per row. Same arithmetic to float rounding; OpenVINO ran the full-size ``htdemucs``
    trunk 1.09x faster without the copies (``benchmarks/RESULTS.md``, 2026-12-03), PyTorch 0.83x, hence
    the switch.
    """
    if exporting() and all(_keeps_rows(m) for m in dconv.layers.modules()):
        for branch in dconv.layers:
            x = x + _exported_branch(branch, x, rows=True)
        return x
    B, C, Fq, T = x.shape
    rows = x.permute(0, 2, 1, 3).reshape(B * Fq, C, T)  # (B*Fq, C, T)
    rows = dconv(rows)
    out: torch.Tensor = rows.reshape(B, Fq, C, T).permute(0, 2, 1, 3)  # (B, C, Fq, T)
    return out


def _keeps_rows(module: nn.Module) -> bool:
    """Whether :func:`_on_rows` can run ``module`` (containers count: their children are checked too)."""
    if isinstance(module, nn.GroupNorm):
        return module.num_groups == 1
    if isinstance(module, LayerScale):
        return not module.channel_last
    if isinstance(module, nn.Conv1d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, nn.GLU):
        return module.dim == 1
    return isinstance(module, (nn.ModuleList, nn.Sequential, nn.GELU))


def _exported_branch(branch: nn.Module, x: torch.Tensor, *, rows: bool) -> torch.Tensor:
    """A DConv sub-layer's branch as exported: block by block, each conv · norm · GLU run by
    :func:`glu_conv`; ``rows``: on a (B, C, Fq, T) map row by row (:func:`_on_rows`), else on (B, C, T)."""
    blocks = list(branch.children())
    y = x
    i = 0
    while i < len(blocks):
        module = blocks[i]
        glu = blocks[i + 2] if i + 2 < len(blocks) else None
        if isinstance(module, nn.Conv1d) and isinstance(glu, nn.GLU) and glu.dim == 1:
            y = glu_conv(module, blocks[i + 1], y, rows=rows)
            i += 3
        else:
            y = _on_rows(module, y) if rows else module(y)
            i += 1
    return y


def glu_conv(conv: nn.Module, norm: nn.Module, x: torch.Tensor, *, rows: bool = False) -> torch.Tensor:
    """``glu(norm(conv(x)), dim=1)``: a convolution of 2C channels, a norm (or ``nn.Identity``), then GLU.

    While the model is exported, the convolution runs as two of C channels each (the GLU's two halves) and the
    norm on the halves (:func:`~stemsplit.model.norms.group_norm_halves`): OpenVINO otherwise splits each
    GLU's input with a copy (32 in the full-size ``htdemucs`` trunk), and ran that trunk 7 % faster without
    them (``benchmarks/RESULTS.md``, 2026-12-06). Same arithmetic to float rounding; in PyTorch, the
    ordinary form.

    Args:
        conv: ``nn.Conv1d`` or ``nn.Conv2d`` with ``2C`` output channels.
        norm: ``nn.Identity``, or a GroupNorm of ``2C`` channels.
        x: the convolution's input: (B, Cin, T) or (B, Cin, Fq, T); ``rows``: a DConv's ``nn.Conv1d`` run
            on every frequency row of a (B, Cin, Fq, T) map (:func:`_dconv_rows`), the norm per row.

    Returns:
        (B, C, ...) the GLU's output.
    """
    split = (
        exporting()
        and isinstance(conv, (nn.Conv1d, nn.Conv2d))
        and conv.padding_mode == "zeros"
        and conv.groups == 1  # a half of a grouped conv's filters would read the wrong input groups
        and (isinstance(norm, nn.Identity) or _halves_norm(norm))
    )
    if not split:
        y = _on_rows(conv, x) if rows else conv(x)
        return F.glu(_on_rows(norm, y) if rows else norm(y), dim=1)
    assert isinstance(conv, (nn.Conv1d, nn.Conv2d))
    half = conv.out_channels // 2
    a, b = (_conv(conv, x, part, rows=rows) for part in (slice(None, half), slice(half, None)))
    if isinstance(norm, nn.GroupNorm):
        a, b = group_norm_halves(norm, a, b, (1, 3) if rows else None)
    return a * torch.sigmoid(b)


def _halves_norm(norm: nn.Module) -> bool:
    return isinstance(norm, nn.GroupNorm) and (norm.num_groups == 1 or norm.num_groups % 2 == 0)


def _conv(
    conv: nn.Conv1d | nn.Conv2d, x: torch.Tensor, part: slice = slice(None), *, rows: bool = False
) -> torch.Tensor:
    """``conv`` on ``x`` with the output channels ``part`` only; ``rows``: a Conv1d on every frequency row of a
    (B, C, Fq, T) map, as a (1, K) Conv2d."""
    weight = conv.weight[part]
    bias = None if conv.bias is None else conv.bias[part]
    if rows:
        assert isinstance(conv, nn.Conv1d) and not isinstance(conv.padding, str)
        return F.conv2d(
            x,
            weight[:, :, None],
            bias,
            padding=(0, int(conv.padding[0])),
            dilation=(1, conv.dilation[0]),
            groups=conv.groups,
        )
    if isinstance(conv, nn.Conv2d):
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return F.conv1d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _on_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One DConv block on a (B, C, Fq, T) map, as it would act on each row's (C, T) alone."""
    if isinstance(module, nn.Conv1d):
        return _conv(module, x, rows=True)
    if isinstance(module, nn.GroupNorm):
        y = normalise(x, (1, 3), module.eps)
        return y * module.weight[:, None, None] + module.bias[:, None, None]
    if isinstance(module, LayerScale):
        return module.scale[:, None, None] * x
    out: torch.Tensor = module(x)  # GELU (element-wise), GLU (over dim 1, the channels here too)
    return out


def _norm(groups: int, channels: int) -> nn.Module:
    """GroupNorm(``groups``, ``channels``), or nothing when ``groups`` is 0."""
    return GroupNorm(groups, channels) if groups else nn.Identity()


class EncoderLayer(nn.Module):
    """One encoder layer: strided conv, [GroupNorm], GELU, optional DConv, 1x1 "rewrite" conv, [GroupNorm], GLU.

    The spectral variant (``freq=True``) convolves over frequency only, kernel ``(K, 1)``, and divides the
    bins by the stride; the temporal variant convolves the waveform (or its features) over time. An
    *empty* layer is the strided conv alone (Hybrid Demucs' temporal layer at the merge).

    Args:
        chin: input channels.
        chout: output channels.
        freq: spectral (Conv2d over frequency) or temporal (Conv1d over time) layer.
        kernel_size: ``K``.
        stride: ``S``; also the factor the frequency bins / time steps shrink by.
        context: half-width of the rewrite conv (0 → 1x1).
        dconv: the DConv residual branch, or None for none.
        pad: pad by ``K // 4`` on both sides (False: no padding, for a kernel that spans every bin).
        norm_groups: groups of the GroupNorms after both convolutions (0: no GroupNorm).
        empty: the strided conv only.
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
        dconv: DConvSpec | None,
        pad: bool = True,
        norm_groups: int = 0,
        empty: bool = False,
    ) -> None:
        super().__init__()
        self.freq = freq
        self.stride = stride
        self.empty = empty
        p = kernel_size // 4 if pad else 0
        if freq:
            self.conv: nn.Module = nn.Conv2d(chin, chout, (kernel_size, 1), (stride, 1), (p, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel_size, stride, p)
        if empty:
            return
        conv: type[nn.Conv1d | nn.Conv2d] = nn.Conv2d if freq else nn.Conv1d
        self.norm1 = _norm(norm_groups, chout)
        self.rewrite = conv(chout, 2 * chout, 1 + 2 * context, 1, context)
        self.norm2 = _norm(norm_groups, 2 * chout)
        self.dconv = DConv(chout, dconv) if dconv is not None else None

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        """Spectral: (B, chin, Fq, T) → (B, chout, Fq', T). Temporal: (B, chin, T) → (B, chout, ceil(T / S)).

        Args:
            x: the input map.
            inject: added after the strided conv (Hybrid Demucs' merge: the temporal branch, shaped like
                that conv's output).
        """
        if not self.freq and x.shape[-1] % self.stride:
            x = F.pad(x, (0, self.stride - x.shape[-1] % self.stride))  # whole number of strides
        y = self.conv(x)
        if self.empty:
            return y  # type: ignore[no-any-return]
        if inject is not None:
            y = y + inject
        y = F.gelu(self.norm1(y))
        if self.dconv is not None:
            y = _dconv_rows(self.dconv, y) if self.freq else self.dconv(y)
        return glu_conv(self.rewrite, self.norm2, y)


class DecoderLayer(nn.Module):
    """One decoder layer: add the skip, 3x3 "rewrite" conv, [GroupNorm], GLU, optional DConv (:meth:`inner`),
    then the transposed conv, [GroupNorm] and GELU (:meth:`expand`).

    An *empty* layer has only :meth:`expand` (Hybrid Demucs' temporal layer at the merge, fed by the spectral
    layer's :meth:`inner`).

    Args:
        chin: input channels (also the skip's channels).
        chout: output channels.
        freq: spectral (over frequency) or temporal layer.
        kernel_size: ``K``.
        stride: ``S``; the frequency bins / time steps grow by it.
        context: half-width of the rewrite conv (1 → 3x3 over frequency and time).
        dconv: the DConv residual branch, or None for none.
        last: the outermost layer, which has no output GELU.
        pad: crop ``K // 4`` from both ends of the frequency axis (False: keep all, as the encoder did not pad).
        norm_groups: groups of the GroupNorms after both convolutions (0: no GroupNorm).
        empty: the transposed conv only.
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
        dconv: DConvSpec | None,
        last: bool,
        pad: bool = True,
        norm_groups: int = 0,
        empty: bool = False,
    ) -> None:
        super().__init__()
        self.freq = freq
        self.last = last
        self.empty = empty
        self.pad = kernel_size // 4 if pad else 0
        if freq:
            self.conv_tr: nn.Module = nn.ConvTranspose2d(chin, chout, (kernel_size, 1), (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel_size, stride)
        self.norm2 = _norm(norm_groups, chout)
        if empty:
            return
        conv: type[nn.Conv1d | nn.Conv2d] = nn.Conv2d if freq else nn.Conv1d
        self.rewrite = conv(chin, 2 * chin, 1 + 2 * context, 1, context)
        self.norm1 = _norm(norm_groups, 2 * chin)
        self.dconv = DConv(chin, dconv) if dconv is not None else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, length: int) -> torch.Tensor:
        """Spectral: (B, chin, Fq, T) → (B, chout, S * Fq, T). Temporal: (B, chin, T) → (B, chout, length).

        Args:
            x: output of the previous (inner) decoder or of the transformer.
            skip: the matching encoder's output, same shape as ``x``.
            length: temporal layers only: the time length the matching encoder received.
        """
        return self.expand(self.inner(x, skip), length)

    def inner(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Add the skip, rewrite conv, GLU and DConv: (B, chin, [Fq,] T) → the same shape."""
        y = glu_conv(self.rewrite, self.norm1, x + skip)
        if self.dconv is not None:
            y = _dconv_rows(self.dconv, y) if self.freq else self.dconv(y)
        return y

    def expand(self, y: torch.Tensor, length: int) -> torch.Tensor:
        """Transposed conv, crop, GELU: (B, chin, [Fq,] T) → (B, chout, [S * Fq,] T or ``length``)."""
        z = self.norm2(self.conv_tr(y))  # frequency or time axis: (n - 1) * S + K = S * n + 2 * pad
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

    def add_to(self, x: torch.Tensor, weight: float) -> torch.Tensor:
        """``x + weight · row f`` for every frequency row ``f`` of a (B, dim, num, T) map, broadcast over
        batch and time (the frequency embedding after the first spectral encoder)."""
        table: torch.Tensor = self(torch.arange(x.shape[-2], device=x.device))  # (num, dim)
        return x + weight * table.t()[None, :, :, None]
