"""Cross-domain transformer of HT Demucs (htdemucs-spec §1.5).

Two token streams, the spectral one (``Fr * T1`` tokens, one per frequency row and frame) and the temporal
one (``T2`` tokens), each go through ``t_layers`` pre-norm layers; self-attention and cross-attention
layers alternate, and a cross layer of each stream attends to the other stream's input to that layer.
Shape letters: ``B`` batch, ``N``/``M`` tokens, ``D`` transformer width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stemsplit.model.layers import LayerScale
from stemsplit.model.norms import exporting, normalise


def sin_embedding_2d(
    channels: int, rows: int, frames: int, max_period: float, like: torch.Tensor
) -> torch.Tensor:
    """2-D sinusoidal positions for the spectral tokens.

    The first half of the channels encodes the frame index, the second half the frequency row, each as
    interleaved ``sin, cos`` pairs of angular frequency ``exp(-2k ln(max_period) / (channels / 2))``.

    Args:
        channels: ``D``, a multiple of 4.
        rows: frequency rows ``Fr``.
        frames: frames ``T1``.
        max_period: base period.
        like: tensor whose dtype and device the result takes.

    Returns:
        (1, T1 * Fr, D) embedding, token index ``t * Fr + f`` (time-major).
    """
    half = channels // 2
    omega = torch.exp(
        torch.arange(0.0, half, 2, dtype=torch.float32, device=like.device) * -(math.log(max_period) / half)
    )  # (D/4,)
    t = torch.arange(frames, dtype=torch.float32, device=like.device)[:, None] * omega  # (T1, D/4)
    f = torch.arange(rows, dtype=torch.float32, device=like.device)[:, None] * omega  # (Fr, D/4)
    time_part = torch.stack([t.sin(), t.cos()], dim=-1).reshape(frames, 1, half).expand(frames, rows, half)
    freq_part = torch.stack([f.sin(), f.cos()], dim=-1).reshape(1, rows, half).expand(frames, rows, half)
    emb = torch.cat([time_part, freq_part], dim=-1)  # (T1, Fr, D)
    return emb.reshape(1, frames * rows, channels).to(like.dtype)


def sin_embedding_1d(length: int, channels: int, max_period: float, like: torch.Tensor) -> torch.Tensor:
    """1-D sinusoidal positions for the temporal tokens: ``cos`` half first, then ``sin``.

    Position ``p`` and channel ``i < D/2`` have phase ``p / max_period ** (i / (D/2 - 1))``.

    Args:
        length: tokens ``T2``.
        channels: ``D``, even.
        max_period: base period.
        like: tensor whose dtype and device the result takes.

    Returns:
        (1, T2, D) embedding.
    """
    half = channels // 2
    pos = torch.arange(length, dtype=torch.float32, device=like.device)[:, None]  # (T2, 1)
    dims = torch.arange(half, dtype=torch.float32, device=like.device)[None, :]  # (1, D/2)
    phase = pos / (max_period ** (dims / (half - 1)))  # (T2, D/2)
    return torch.cat([phase.cos(), phase.sin()], dim=-1)[None].to(like.dtype)


class Attention(nn.Module):
    """Multi-head softmax attention with a packed input projection.

    Parameters are named like ``torch.nn.MultiheadAttention``'s (``in_proj_weight`` rows: queries, keys,
    values; ``out_proj``), which is how the checkpoints store them.

    Args:
        dim: ``D``.
        heads: number of heads; the head width is ``D / heads``.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Queries (B, N, D) attend to keys and values from ``memory`` (B, M, D) → (B, N, D)."""
        B, N, D = query.shape
        M = memory.shape[1]
        H = self.heads
        w_q, w_kv = self.in_proj_weight[:D], self.in_proj_weight[D:]
        b_q, b_kv = self.in_proj_bias[:D], self.in_proj_bias[D:]
        q = F.linear(query, w_q, b_q).view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, D/H)
        k, v = (
            F.linear(memory, w_kv, b_kv).view(B, M, 2, H, D // H).permute(2, 0, 3, 1, 4)
        )  # (B, H, M, D/H) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        result: torch.Tensor = self.out_proj(out.transpose(1, 2).reshape(B, N, D))
        return result


class TokenGroupNorm(nn.Module):
    """GroupNorm with one group over all tokens and channels of each item, for (B, N, D) tokens.

    One group normalises over everything but the batch, so this is a layer norm over the last two axes
    followed by the per-channel affine: the same arithmetic as ``group_norm`` on the transposed tokens, to
    float rounding, without the two transposed copies (1.065x on the trunk of a full-size window,
    ``benchmarks/RESULTS.md``).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) → (B, N, D)."""
        if exporting():  # statistics over N * D values, summed exactly (see norms)
            normed = normalise(x, (1, 2), self.eps)
        else:
            normed = F.layer_norm(x, x.shape[-2:], eps=self.eps)
        return torch.addcmul(self.bias, normed, self.weight)


class _Layer(nn.Module):
    """Parts shared by both layer kinds: pre-norms, feed-forward, LayerScales and the output norm."""

    def __init__(self, dim: int, hidden: int, *, gelu: bool, layer_scale: bool, norm_out: bool) -> None:
        super().__init__()
        self.gelu = gelu
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.gamma_1: nn.Module = LayerScale(dim, channel_last=True) if layer_scale else nn.Identity()
        self.gamma_2: nn.Module = LayerScale(dim, channel_last=True) if layer_scale else nn.Identity()
        self.norm_out: nn.Module = TokenGroupNorm(dim) if norm_out else nn.Identity()

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Position-wise MLP ``linear2(act(linear1(x)))``: (B, N, D) → (B, N, D)."""
        h = self.linear1(x)
        out: torch.Tensor = self.linear2(F.gelu(h) if self.gelu else F.relu(h))
        return out


class SelfAttentionLayer(_Layer):
    """``x + γ1·MHA(LN1 x)``, then ``+ γ2·FFN(LN2 ·)``, then the output GroupNorm.

    Args:
        dim: ``D``.
        heads: attention heads.
        hidden: feed-forward width.
        gelu, layer_scale, norm_out: see :class:`~stemsplit.model.config.HTDemucsConfig` (``t_*``).
    """

    def __init__(
        self, dim: int, heads: int, hidden: int, *, gelu: bool, layer_scale: bool, norm_out: bool
    ) -> None:
        super().__init__(dim, hidden, gelu=gelu, layer_scale=layer_scale, norm_out=norm_out)
        self.self_attn = Attention(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) → (B, N, D)."""
        h = self.norm1(x)
        x = x + self.gamma_1(self.self_attn(h, h))
        x = x + self.gamma_2(self._feed_forward(self.norm2(x)))
        out: torch.Tensor = self.norm_out(x)
        return out


class CrossAttentionLayer(_Layer):
    """``q + γ1·MHA(LN1 q, LN2 kv)``, then ``+ γ2·FFN(LN3 ·)``, then the output GroupNorm.

    Args: as :class:`SelfAttentionLayer`.
    """

    def __init__(
        self, dim: int, heads: int, hidden: int, *, gelu: bool, layer_scale: bool, norm_out: bool
    ) -> None:
        super().__init__(dim, hidden, gelu=gelu, layer_scale=layer_scale, norm_out=norm_out)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Queries (B, N, D), other stream (B, M, D) → (B, N, D)."""
        x = q + self.gamma_1(self.cross_attn(self.norm1(q), self.norm2(kv)))
        x = x + self.gamma_2(self._feed_forward(self.norm3(x)))
        out: torch.Tensor = self.norm_out(x)
        return out


class CrossTransformer(nn.Module):
    """The two-stream transformer between the spectral and temporal U-Nets.

    Args:
        dim: ``D``.
        heads: attention heads.
        layers: layers per stream.
        hidden: feed-forward width.
        cross_first: layer 0 is a cross layer (else layers 1, 3, … are).
        norm_in: LayerNorm the tokens before adding the positional embeddings.
        norm_out, layer_scale, gelu: per-layer options (see the layer classes).
        max_period: base period of the positional embeddings.
        weight_pos_embed: weight of the positional embeddings.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        layers: int,
        hidden: int,
        cross_first: bool,
        norm_in: bool,
        norm_out: bool,
        layer_scale: bool,
        gelu: bool,
        max_period: float,
        weight_pos_embed: float,
    ) -> None:
        super().__init__()
        self.max_period = max_period
        self.weight_pos_embed = weight_pos_embed
        self.norm_in: nn.Module = nn.LayerNorm(dim) if norm_in else nn.Identity()
        self.norm_in_t: nn.Module = nn.LayerNorm(dim) if norm_in else nn.Identity()
        self.cross = [(idx % 2 == 0) == cross_first for idx in range(layers)]
        options = {"gelu": gelu, "layer_scale": layer_scale, "norm_out": norm_out}
        self.layers = nn.ModuleList()
        self.layers_t = nn.ModuleList()
        for is_cross in self.cross:
            kind = CrossAttentionLayer if is_cross else SelfAttentionLayer
            self.layers.append(kind(dim, heads, hidden, **options))
            self.layers_t.append(kind(dim, heads, hidden, **options))

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectral map (B, D, Fr, T1) and temporal map (B, D, T2) → maps of the same shapes."""
        B, D, Fr, T1 = x.shape
        T2 = xt.shape[-1]
        x = x.permute(0, 3, 2, 1).reshape(B, T1 * Fr, D)  # token t * Fr + f
        xt = xt.transpose(1, 2)  # (B, T2, D)
        x = self.norm_in(x) + self.weight_pos_embed * sin_embedding_2d(D, Fr, T1, self.max_period, x)
        xt = self.norm_in_t(xt) + self.weight_pos_embed * sin_embedding_1d(T2, D, self.max_period, xt)
        for is_cross, layer, layer_t in zip(self.cross, self.layers, self.layers_t, strict=True):
            if is_cross:  # each stream attends to the other's input to this layer
                x, xt = layer(x, xt), layer_t(xt, x)
            else:
                x, xt = layer(x), layer_t(xt)
        x = x.reshape(B, T1, Fr, D).permute(0, 3, 2, 1)  # (B, D, Fr, T1)
        return x, xt.transpose(1, 2)
