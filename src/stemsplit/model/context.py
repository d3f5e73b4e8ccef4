"""Long-range context inside a DConv branch of Hybrid Demucs (htdemucs-spec §1.6): a chunked BiLSTM and
local attention over time.

Both work on (B, C, T) maps, ``T`` being STFT frames (or half of them after the last strided layer), and
both are residual: they return ``x + f(x)``. Attribute names (``lstm``, ``linear``, ``content``, ``query``,
``key``, ``query_decay``, ``proj``) are fixed by the official checkpoints' state_dict keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BLSTM(nn.Module):
    """A bidirectional LSTM as wide as its input, then a linear map back to that width, added to the input.

    Sequences longer than ``max_steps`` are cut into chunks of ``max_steps`` steps every ``max_steps / 2``
    steps, each run separately; of each chunk only the middle half is kept (plus the first quarter of the
    first chunk and the last quarter of the last), so every kept step has at least ``max_steps / 4`` steps of
    context on both sides and the cost stays linear in the length.

    Args:
        dim: ``C``, the input, hidden and output width.
        layers: stacked LSTM layers.
        max_steps: chunk length (a multiple of 4), or None for one pass over the whole sequence.
    """

    def __init__(self, dim: int, layers: int = 2, max_steps: int | None = 200) -> None:
        super().__init__()
        if max_steps is not None and max_steps % 4:
            raise ValueError(f"max_steps must be a multiple of 4, got {max_steps}")
        self.max_steps = max_steps
        self.lstm = nn.LSTM(dim, dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, T)."""
        width = self.max_steps
        T = x.shape[-1]
        if width is None or T <= width:
            y = self.lstm(x.permute(2, 0, 1))[0].transpose(0, 1)  # (B, T, 2C)
        else:
            y = self._chunked(x, width)
        out: torch.Tensor = self.linear(y).transpose(1, 2)  # (B, C, T)
        return x + out

    def _chunked(self, x: torch.Tensor, width: int) -> torch.Tensor:
        """The LSTM over overlapping chunks, stitched: (B, C, T) → (B, T, 2C) before the linear map."""
        B, C, T = x.shape
        hop, edge = width // 2, width // 4
        n = math.ceil(T / hop)
        frames = F.pad(x, (0, (n - 1) * hop + width - T)).unfold(-1, width, hop)  # (B, C, n, width)
        seq = frames.permute(3, 0, 2, 1).reshape(width, B * n, C)  # one sequence per (item, chunk)
        y = self.lstm(seq)[0].view(width, B, n, 2 * C)
        middle = y[edge : width - edge].permute(1, 2, 0, 3).reshape(B, n * hop, 2 * C)  # chunk k: hop steps
        head = y[:edge, :, 0].transpose(0, 1)  # (B, edge, 2C) the first chunk's first quarter
        tail = y[width - edge :, :, n - 1].transpose(0, 1)  # the last chunk's last quarter
        return torch.cat([head, middle, tail], dim=1)[:, :T]  # (B, T, 2C)


class LocalState(nn.Module):
    """Attention over time without positional embeddings, biased towards nearby steps.

    Each head's query at step ``s`` scores every other step ``t`` by ``q_s·k_t / sqrt(c) − r_s·|t − s|``;
    the decay rate ``r_s = Σ_j j · sigmoid(d_s,j) / 2 / sqrt(ndecay)`` (``j = 1 … ndecay``) is computed from
    the input at ``s``. A step never attends to itself (its score is set to −100). The heads' results are
    projected and added to the input.

    Args:
        channels: ``C``, a multiple of ``heads``.
        heads: attention heads (head width ``c = C / heads``).
        ndecay: learned decay terms per head.
    """

    def __init__(self, channels: int, heads: int = 4, ndecay: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be a multiple of heads {heads}")
        self.heads = heads
        self.ndecay = ndecay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, T)."""
        B, C, T = x.shape
        H = self.heads
        q = self.query(x).view(B * H, C // H, T)
        k = self.key(x).view(B * H, C // H, T)
        v = self.content(x).view(B * H, C // H, T)
        terms = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)[:, None]  # (ndecay, 1)
        decay = torch.sigmoid(self.query_decay(x).view(B * H, self.ndecay, T)) / 2
        rate = (decay * terms).sum(1) / math.sqrt(self.ndecay)  # (B*H, T) per query step
        steps = torch.arange(T, device=x.device, dtype=x.dtype)
        distance = (steps[:, None] - steps[None, :]).abs()  # (T, T)
        scores = torch.baddbmm(
            -rate[:, :, None] * distance, q.transpose(1, 2), k, alpha=1 / math.sqrt(C // H)
        )  # (B*H, Tq, Tk)
        # A step does not attend to itself: its score is -100 (out of place, so the trunk exports to ONNX).
        scores = scores.masked_fill(torch.eye(T, dtype=torch.bool, device=x.device), -100.0)
        weights = torch.softmax(scores, dim=-1)
        out = torch.bmm(v, weights.transpose(1, 2)).view(B, C, T)  # out[c, s] = Σ_t v[c, t] w[s, t]
        result: torch.Tensor = self.proj(out)
        return x + result
