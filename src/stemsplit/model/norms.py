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
    padded = F.pad(x, (0, -x.shape[-1] % chunk))
    parts = padded.view(*padded.shape[:-1], -1, chunk).sum(-1)  # the same axes, the last one in chunks
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
        groups = x.reshape(x.shape[0], self.num_groups, -1)  # (B, G, C/G * ...)
        normed = normalise(groups, (2,), self.eps).reshape(x.shape)
        if not self.affine:
            return normed
        affine = (-1,) + (1,) * (x.dim() - 2)  # per channel
        return normed * self.weight.view(affine) + self.bias.view(affine)
