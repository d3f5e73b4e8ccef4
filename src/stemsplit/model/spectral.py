"""STFT analysis and synthesis with the exact padding conventions of HT Demucs (htdemucs-spec §1.3, §5.2).

Analysis keeps ``ceil(T / hop)`` frames, frame ``j`` centred on sample ``j * hop + hop / 2``: the waveform
is reflect-padded by ``3 * hop / 2`` on the left (and up to a whole number of hops on the right) before a
centred, normalised STFT, then the Nyquist bin and two frames on each side are dropped. Synthesis undoes
each step. ``istft(stft(x)) == x`` to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pad1d_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect-pad the last axis, also when it is too short for a plain reflection.

    A reflection needs more samples than the pad; a shorter signal is first extended with zeros (taken
    from the right pad first), then reflected by what is left of the pads.

    Args:
        x: (..., T) real tensor.
        left: samples to add before.
        right: samples to add after.

    Returns:
        (..., left + T + right) tensor.
    """
    length = x.shape[-1]
    biggest = max(left, right)
    if length <= biggest:
        extra = biggest - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        left, right = left - extra_left, right - extra_right
        x = F.pad(x, (extra_left, extra_right))
    return F.pad(x, (left, right), mode="reflect")


def _window(nfft: int, like: torch.Tensor) -> torch.Tensor:
    # Periodic Hann window, in the real dtype of ``like`` and on its device.
    return torch.hann_window(nfft, periodic=True, dtype=like.dtype, device=like.device)


def stft(x: torch.Tensor, nfft: int) -> torch.Tensor:
    """Complex spectrogram of a waveform, as the model's spectral branch sees it.

    Args:
        x: (B, C, T) float waveform.
        nfft: FFT size; the hop is ``nfft // 4``.

    Returns:
        (B, C, nfft // 2, ceil(T / hop)) complex tensor (Nyquist bin dropped).
    """
    B, C, T = x.shape
    hop = nfft // 4
    frames = math.ceil(T / hop)
    side = hop // 2 * 3
    x = pad1d_reflect(x, side, side + frames * hop - T)  # (B, C, (frames + 3) * hop)
    z = torch.stft(
        x.reshape(B * C, -1),
        n_fft=nfft,
        hop_length=hop,
        win_length=nfft,
        window=_window(nfft, x),
        normalized=True,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )  # (B*C, nfft/2 + 1, frames + 4)
    z = z.reshape(B, C, *z.shape[-2:])
    return z[:, :, :-1, 2 : 2 + frames]  # (B, C, nfft/2, frames)


def istft(z: torch.Tensor, length: int) -> torch.Tensor:
    """Waveform from a spectrogram produced like :func:`stft` (any leading dimensions, any strides).

    The inverse of a centred, normalised STFT with the Nyquist bin and two frames on each side put back as
    zeros, computed as the frames' inverse real FFTs (``norm="ortho"``), windowed, overlap-added four to a
    sample (hop ``nfft / 4``) and divided by the summed squared window, then cropped. That is what
    ``torch.istft`` computes, to float rounding, with fewer passes over memory; a spectrogram whose frames
    are contiguous rows (``z.transpose(-1, -2)`` contiguous) needs no copy before the FFT.

    Args:
        z: (..., Fq, Fr) complex tensor with ``Fq = nfft // 2`` bins.
        length: number of samples to return; ``Fr`` must equal ``ceil(length / hop)``.

    Returns:
        (..., length) real tensor.
    """
    *lead, Fq, Fr = z.shape
    nfft = 2 * Fq
    hop = nfft // 4
    frames = Fr + 4  # with the two zero frames on each side
    window = _window(nfft, z.real)
    parts = torch.fft.irfft(
        z.reshape(-1, Fq, Fr).transpose(1, 2), n=nfft, dim=-1, norm="ortho"
    )  # (N, Fr, nfft)
    parts = parts.mul_(window).view(-1, Fr, 4, hop)
    summed = parts.new_zeros(parts.shape[0], frames + 3, hop)  # every hop of the overlap-added signal
    envelope = window.new_zeros(frames + 3, hop)
    squared = (window * window).view(4, hop)
    # Frame j's quarter q lands in hop j + q; the zero frames add only to the envelope.
    for quarter in range(4):
        summed[:, 2 + quarter : 2 + quarter + Fr] += parts[:, :, quarter]
        envelope[quarter : quarter + frames] += squared[quarter]
    start = nfft // 2 + hop // 2 * 3  # the centring, then the analysis's left pad
    span = slice(start, start + length)
    x: torch.Tensor = summed.view(summed.shape[0], -1)[:, span] / envelope.view(-1)[span]
    return x.reshape(*lead, length)
