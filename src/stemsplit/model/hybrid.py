"""What both hybrid networks share: the spectral and temporal inputs, and the sum of both outputs.

A hybrid network separates a waveform in three stages (htdemucs-spec §1.3): :meth:`HybridModel.analyse`
(STFT, complex as channels, normalisation of both branches' inputs), :meth:`HybridModel.trunk` (the
networks, real-valued, the only stage with parameters) and :meth:`HybridModel.synthesise` (de-normalisation,
iSTFT, the two branches added). The stages are public so that a caller can run the complex-valued ones on
another device than the trunk (Apple's MPS lacks complex support) or compile the trunk alone.

Shape letters: ``B`` batch, ``S`` sources, ``C`` audio channels, ``L`` input samples, ``T`` samples the
networks run on (``L`` padded to the window for HT Demucs), ``Fq`` frequency bins, ``Fr`` STFT frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stemsplit.model.config import HybridConfig
from stemsplit.model.spectral import istft, stft

_STD_EPS = 1e-5  # added to the std on the way in only (htdemucs-spec §5.3)


@dataclass(frozen=True)
class Analysis:
    """What :meth:`HybridModel.analyse` hands to the trunk and, for de-normalising, to the synthesis.

    Attributes:
        x: (B, 2C, Fq, Fr) normalised spectrogram, complex as channels.
        xt: (B, C, T) normalised waveform.
        mean, std: (B, 1, 1, 1) statistics of the spectrogram.
        meant, stdt: (B, 1, 1) statistics of the waveform.
        length: ``L``, the input length before any padding.
    """

    x: torch.Tensor
    xt: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    meant: torch.Tensor
    stdt: torch.Tensor
    length: int


class HybridModel(nn.Module):
    """Base of :class:`~stemsplit.model.HTDemucs` and :class:`~stemsplit.model.HDemucs`: the stages around
    the trunk, and the metadata the engine reads.

    Args:
        config: the architecture.
    """

    fixed_window = False
    """Whether every forward runs on the whole training window (HT Demucs pads to it) or on the input's
    own length (Hybrid Demucs)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config

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
        """The training window in samples: the longest input of HT Demucs, the default window of Hybrid Demucs."""
        return self.config.segment_samples

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate one window per batch item.

        Args:
            mix: (B, C, L) waveform at ``samplerate`` (HT Demucs: ``L <= segment_samples``).

        Returns:
            (B, S, C, L) stems in ``sources`` order.
        """
        analysis = self.analyse(mix)
        x, xt = self.trunk(analysis.x, analysis.xt)
        return self.synthesise(x, xt, analysis)

    def fit_window(self, mix: torch.Tensor) -> torch.Tensor:
        """The waveform the networks run on: ``mix`` itself here; HT Demucs pads it to its window."""
        return mix

    def analyse(self, mix: torch.Tensor) -> Analysis:
        """Stage 1, complex-valued: fit the window, STFT, and normalise both branches' inputs.

        Args:
            mix: (B, C, L) waveform.
        """
        L = mix.shape[-1]
        mix = self.fit_window(mix)  # (B, C, T)
        z = stft(mix, self.config.nfft)  # (B, C, Fq, Fr) complex
        B, C, Fq, Fr = z.shape
        x = torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, Fq, Fr)  # [c0.re, c0.im, c1.re, …]
        x, mean, std = _normalise(x, dims=(1, 2, 3))
        xt, meant, stdt = _normalise(mix, dims=(1, 2))
        return Analysis(x, xt, mean, std, meant, stdt, L)

    def trunk(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2, real-valued: the networks.

        Args:
            x: (B, 2C, Fq, Fr) normalised spectrogram, complex as channels.
            xt: (B, C, T) normalised waveform.

        Returns:
            (B, 2SC, Fq, Fr) and (B, SC, T): every source's spectrogram and waveform, still normalised.
        """
        raise NotImplementedError

    def synthesise(self, x: torch.Tensor, xt: torch.Tensor, analysis: Analysis) -> torch.Tensor:
        """Stage 3, complex-valued: de-normalise, iSTFT, add the two branches, crop to the input length.

        Returns:
            (B, S, C, L) stems.
        """
        B, C, T = analysis.xt.shape
        S = len(self.sources)
        a = analysis
        Fq, Fr = x.shape[-2:]
        # De-normalised straight into a complex spectrogram whose frames are contiguous rows (what the
        # inverse FFT reads), in one pass: x's channels are [c0.re, c0.im, c1.re, …] per source.
        z = torch.empty(B, S, C, Fr, Fq, dtype=x.dtype.to_complex(), device=x.device)
        parts = torch.view_as_real(z).permute(0, 1, 2, 5, 4, 3)  # (B, S, C, re/im, Fq, Fr) view of z
        torch.addcmul(a.mean[:, None, None], x.view(B, S, C, 2, Fq, Fr), a.std[:, None, None], out=parts)
        waves = istft(z.transpose(-1, -2), T)  # (B, S, C, T)
        xt = xt.view(B, S, C, T) * a.stdt[:, None] + a.meant[:, None]  # (B, S, C, T)
        return (xt + waves)[..., : a.length]


def _normalise(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-item standardisation with the unbiased std: returns ``(x - mean) / (eps + std)``, mean, std."""
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (_STD_EPS + std), mean, std
