"""The frozen configurations of the two hybrid networks: only what changes inference.

``HTDemucsConfig`` (Hybrid Transformer Demucs, v4) and ``HDemucsConfig`` (Hybrid Demucs, v3) carry the
constructor arguments of the reference classes that shape the network or its arithmetic (htdemucs-spec §1.1,
§1.6); what both have is in ``HybridConfig``. Training-only arguments (dropout, weight decay, init scales …)
are accepted by :mod:`stemsplit.weights.checkpoint` and dropped there; arguments that would select a variant
we do not implement are rejected there with an error naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction


@dataclass(frozen=True)
class HybridConfig:
    """What both hybrid networks share: a spectral and a temporal U-Net over one window.

    Attributes:
        sources: stem names, in the order the model outputs them.
        audio_channels: channels of the waveform (2 for every released model).
        samplerate: sample rate the model works at, in Hz.
        segment: training window, in seconds, as an exact fraction (``int(segment * samplerate)`` samples).
        channels: width of the first encoder layer; each further layer multiplies it by ``growth``.
        growth: channel growth factor per layer.
        nfft: STFT size; the hop is ``nfft // 4``.
        depth: number of encoder (and decoder) layers.
        freq_emb: weight of the frequency embedding added after the first frequency encoder.
        emb_scale: scale the frequency embedding table is multiplied by.
        kernel_size: kernel of the strided (transposed) convolutions.
        stride: stride of those convolutions (frequency bins and time samples shrink by it per layer).
        context: half-width of the decoders' 3x3 "rewrite" convolution (kernel ``1 + 2 * context``).
        context_enc: same for the encoders (0 → 1x1).
        dconv_mode: bit 1 puts a DConv residual branch in each encoder, bit 2 in each decoder.
        dconv_depth: residual sub-layers per DConv.
        dconv_comp: channel compression inside a DConv (hidden width ``channels // dconv_comp``).
    """

    sources: tuple[str, ...]
    audio_channels: int = 2
    samplerate: int = 44100
    segment: Fraction = field(default_factory=lambda: Fraction(10))
    channels: int = 48
    growth: int = 2
    nfft: int = 4096
    depth: int = 4
    freq_emb: float = 0.2
    emb_scale: float = 10.0
    kernel_size: int = 8
    stride: int = 4
    context: int = 1
    context_enc: int = 0
    dconv_mode: int = 1
    dconv_depth: int = 2
    dconv_comp: int = 8

    def __post_init__(self) -> None:
        # Internal invariants: weights/checkpoint.py validates user files before building a config, so a failure
        # here means a programming error, not a bad file.
        if not self.sources:
            raise ValueError(f"{type(self).__name__}.sources must not be empty")

    @property
    def segment_samples(self) -> int:
        """The training window in samples (343980 for the HT models)."""
        # Floor division, not int(Fraction): dynamo cannot trace Fraction.__int__ on Python 3.10 (it exists
        # from 3.11), and the OpenVINO export traces this.
        return self.segment.numerator * self.samplerate // self.segment.denominator

    @property
    def hop_length(self) -> int:
        """STFT hop in samples."""
        return self.nfft // 4

    def width(self, layer: int) -> int:
        """Channels out of encoder ``layer`` (48, 96, 192 … for the released models)."""
        return int(self.channels * self.growth**layer)


@dataclass(frozen=True)
class HTDemucsConfig(HybridConfig):
    """Hyperparameters of a Hybrid Transformer Demucs network (v4): two U-Nets of ``depth`` layers each,
    joined only by a cross-domain transformer; every forward runs on the whole training window.

    The defaults are those of the reference constructor; the released ``htdemucs`` checkpoint differs in
    ``segment`` (39/5 s), ``dconv_mode`` (3) and ``bottom_channels`` (512). Fields of
    :class:`HybridConfig` as documented there, plus:

    Attributes:
        bottom_channels: transformer width via 1x1 convolutions (0: use the innermost width).
        t_layers: transformer layers per branch.
        t_hidden_scale: feed-forward width as a multiple of the transformer width.
        t_heads: attention heads.
        t_norm_in: LayerNorm the tokens before adding positional embeddings.
        t_norm_out: GroupNorm(1) at the end of each transformer layer.
        t_layer_scale: LayerScale on both residual branches of each transformer layer.
        t_gelu: GELU (True) or ReLU (False) in the feed-forward blocks.
        t_max_period: base period of the sinusoidal positional embeddings.
        t_weight_pos_embed: weight of the positional embeddings.
        t_cross_first: whether layer 0 is a cross-attention layer (else layers 1, 3, … are).
    """

    bottom_channels: int = 0
    t_layers: int = 5
    t_hidden_scale: float = 4.0
    t_heads: int = 8
    t_norm_in: bool = True
    t_norm_out: bool = True
    t_layer_scale: bool = True
    t_gelu: bool = True
    t_max_period: float = 10000.0
    t_weight_pos_embed: float = 1.0
    t_cross_first: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.transformer_dim % 4 or self.transformer_dim % self.t_heads:
            raise ValueError(
                f"transformer width {self.transformer_dim} must be a multiple of 4 and of t_heads={self.t_heads}"
            )
        bins = self.nfft // 2
        for _ in range(self.depth):
            if bins <= self.kernel_size:
                raise ValueError(
                    f"nfft={self.nfft} with depth={self.depth} reaches {bins} frequency bins, not more than "
                    f"kernel_size={self.kernel_size}; that layer plan is not supported"
                )
            bins //= self.stride

    @property
    def inner_channels(self) -> int:
        """Channels at the bottom of both U-Nets (384 for the released models)."""
        return self.width(self.depth - 1)

    @property
    def transformer_dim(self) -> int:
        """Width of the cross-domain transformer (512 for ``htdemucs``, 384 for ``htdemucs_6s``)."""
        return self.bottom_channels or self.inner_channels


@dataclass(frozen=True)
class HDemucsConfig(HybridConfig):
    """Hyperparameters of a Hybrid Demucs network (v3, ``hdemucs_mmi``; htdemucs-spec §1.6).

    The spectral layers divide the frequency bins by ``stride`` until at most ``kernel_size`` are left; the
    next one (the *merge* layer) convolves them all into one row and adds the output of a convolution-only
    temporal layer, after which a single branch of temporal layers (kernel ``2 * time_stride``, stride
    ``time_stride``) goes on to ``depth``. It runs on windows of any length. The defaults are those of the
    reference constructor; ``hdemucs_mmi`` differs in ``dconv_init`` only, which inference ignores. Fields
    of :class:`HybridConfig` as documented there, plus:

    Attributes:
        time_stride: stride of the layers after the merge.
        norm_starts: first layer with GroupNorm(``norm_groups``) after its convolutions.
        norm_groups: groups of those GroupNorms.
        dconv_attn: first layer whose DConv has local attention.
        dconv_lstm: first layer whose DConv has a bidirectional LSTM.
    """

    segment: Fraction = field(default_factory=lambda: Fraction(40))
    depth: int = 6
    dconv_comp: int = 4
    time_stride: int = 2
    norm_starts: int = 4
    norm_groups: int = 4
    dconv_attn: int = 4
    dconv_lstm: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        merge = self.merge_layer  # the layer plan must merge the branches …
        if self.stride ** (merge + 1) != self.hop_length:  # … where both have the same time step
            raise ValueError(
                f"the branches merge at layer {merge}, after a time stride of {self.stride ** (merge + 1)} "
                f"samples, but the STFT hop is {self.hop_length}; that layer plan is not supported"
            )

    @property
    def merge_layer(self) -> int:
        """The layer where the spectral branch reaches one row and takes in the temporal one (4 for
        ``hdemucs_mmi``); every later layer is temporal.

        Raises:
            ValueError: the bins never get down to ``kernel_size`` within ``depth`` layers.
        """
        bins = self.nfft // 2
        for layer in range(self.depth):
            if bins <= self.kernel_size:
                return layer
            bins //= self.stride
        raise ValueError(
            f"nfft={self.nfft} with depth={self.depth} never gets down to kernel_size={self.kernel_size} "
            "frequency bins, so the two branches never merge; that layer plan is not supported"
        )

    def bins(self, layer: int) -> int:
        """Frequency bins entering spectral layer ``layer`` (2048, 512, 128, 32, 8 for ``hdemucs_mmi``)."""
        return int(self.nfft // 2 // self.stride**layer)
