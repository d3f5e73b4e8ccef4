"""Normalisations whose statistics stay exact when the model is exported to ONNX for OpenVINO.

PyTorch sums a norm's statistics accurately (pairwise), but OpenVINO's CPU plugin sums each one in a few
long running totals: a GroupNorm(1) over one full-size window's time-branch features (48 channels x 85,995
steps) came out 1.5e-4 from float64 there, 4e-4 over 48 x 172,032 values, against 3e-7 in PyTorch, which
put the OpenVINO backend's stems 4e-4 from the reference's (``benchmarks/RESULTS.md``, 2026-12-03). While
the model is exported, the norms here sum every run of :data:`CHUNK` values first and then the partial
sums, which OpenVINO computes to 4e-7..8e-7; in PyTorch they are the ordinary ``torch.nn.functional`` norms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 1024
"""At most this many values are summed together before the partial sums are added."""


def exporting() -> bool:
    """Whether the model is being exported to ONNX (the OpenVINO backend's export), not run."""
    return torch.onnx.is_in_onnx_export()


def chunked_mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Mean over ``dims`` (which must include the last axis), keeping them as size-1 axes, summed in two
    levels: runs of :func:`chunk_length` values along the last axis, then those partial sums."""
    if x.dim() - 1 not in {d % x.dim() for d in dims}:
        raise ValueError(f"dims {dims} must include the last axis of a {x.dim()}-D tensor")
    count = math.prod(x.shape[d] for d in dims)
    chunk = chunk_length(x.shape[-1])
    remainder = x.shape[-1] % chunk
    padded = F.pad(x, (0, chunk - remainder)) if remainder else x  # no Pad node for nothing
    parts = padded.reshape(*padded.shape[:-1], -1, chunk).sum(-1)  # the same axes, the last one in chunks
    mean: torch.Tensor = parts.sum(dim=dims, keepdim=True) / count
    return mean


def chunk_length(n: int) -> int:
    """The run summed first along an axis of ``n`` values: ``n`` itself up to :data:`CHUNK`, else the
    largest divisor of ``n`` from ``CHUNK / 4`` to ``CHUNK`` (no padding, no copy), else :data:`CHUNK`
    (the axis is zero-padded to a multiple)."""
    if n <= CHUNK:
        return n
    return next((k for k in range(CHUNK, CHUNK // 4 - 1, -1) if n % k == 0), CHUNK)


def normalise(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``dims`` (biased variance, as the norms use), with
    :func:`chunked_mean` for both statistics."""
    centred = x - chunked_mean(x, dims)
    return centred / torch.sqrt(chunked_mean(centred.square(), dims) + eps)


class GroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` (same parameters and state_dict keys), exported with exact statistics.

    Shapes: (B, C, ...) → the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not exporting():
            return super().forward(x)
        return group_norm(x, self.num_groups, *_affine(self), self.eps)


def group_norm(
    x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """:func:`torch.nn.functional.group_norm` with :func:`normalise`'s exact statistics: (B, C, ...) → the
    same; ``weight`` and ``bias`` (C,) or None (no affine)."""
    normed = normalise(x.reshape(x.shape[0], groups, -1), (2,), eps).reshape(x.shape)  # (B, G, C/G * ...)
    return _scale_shift(normed, weight, bias)


def group_norm_halves(
    norm: nn.GroupNorm, a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm`` (a GroupNorm of 2C channels) applied to the channels of ``a`` then ``b`` (each (B, C, ...)),
    returned as its two halves, without joining them (the exported GLU, :func:`stemsplit.model.layers.glu_conv`).

    An even number of groups G: each half is G / 2 groups of its own. One group: the statistics span both
    halves (the mean of their means: they hold equally many values), over ``dims`` (default every axis but
    the batch; the frequency DConv's per-row norm passes (1, 3)).

    Raises:
        ValueError: another odd number of groups (a group would straddle the halves), or ``dims`` given with
            an even number (its groups span every axis but the batch).
    """
    weight, bias = _affine(norm)
    half = a.shape[1]
    weights = (None, None) if weight is None else (weight[:half], weight[half:])
    biases = (None, None) if bias is None else (bias[:half], bias[half:])
    if norm.num_groups % 2 == 0:
        if dims is not None:
            raise ValueError(f"a GroupNorm of {norm.num_groups} groups normalises every axis but the batch")
        return (
            group_norm(a, norm.num_groups // 2, weights[0], biases[0], norm.eps),
            group_norm(b, norm.num_groups // 2, weights[1], biases[1], norm.eps),
        )
    if norm.num_groups != 1:
        raise ValueError(f"a GroupNorm of {norm.num_groups} groups does not split into two halves")
    dims = dims or tuple(range(1, a.dim()))
    mean = (chunked_mean(a, dims) + chunked_mean(b, dims)) / 2
    a, b = a - mean, b - mean
    std = torch.sqrt((chunked_mean(a.square(), dims) + chunked_mean(b.square(), dims)) / 2 + norm.eps)
    return _scale_shift(a / std, weights[0], biases[0]), _scale_shift(b / std, weights[1], biases[1])


def _affine(norm: nn.GroupNorm) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (norm.weight, norm.bias) if norm.affine else (None, None)


def _scale_shift(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """``x * weight + bias`` per channel (axis 1) of (B, C, ...); None: that part left out."""
    affine = (-1,) + (1,) * (x.dim() - 2)
    if weight is not None:
        x = x * weight.view(affine)
    return x if bias is None else x + bias.view(affine)
