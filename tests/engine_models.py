"""Model factories shared by the engine tests and the engine benchmark.

Every test that needs a real HT Demucs network gets it from :func:`make_reference_htdemucs` (or
:func:`make_small_reference_htdemucs`), so that switching the tests from the reference implementation to
``stemsplit.model.HTDemucs`` means editing this file only. The engine sees the model only as a callable
``model(mix (B, C, T)) -> (B, S, C, T)`` plus plain metadata (:class:`ModelInfo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

FULL_SOURCES = ("drums", "bass", "other", "vocals")


@dataclass(frozen=True)
class ModelInfo:
    """Metadata the engine takes as plain parameters.

    Attributes:
        sources: stem names in output order.
        samplerate: the model's rate in Hz.
        audio_channels: channels the model expects.
        segment_samples: the training window length in samples.
    """

    sources: tuple[str, ...]
    samplerate: int
    audio_channels: int
    segment_samples: int


def model_info(model: torch.nn.Module) -> ModelInfo:
    """Metadata of a reference ``demucs.htdemucs.HTDemucs`` (or of ours, which exposes the same fields)."""
    if hasattr(model, "segment_samples"):
        seg = int(model.segment_samples)
    else:
        seg = int(model.segment * model.samplerate)
    return ModelInfo(tuple(model.sources), int(model.samplerate), int(model.audio_channels), seg)


def make_reference_htdemucs(sources: tuple[str, ...] = FULL_SOURCES, seed: int = 0) -> torch.nn.Module:
    """The full-size ``htdemucs`` architecture (spec §1.1, signature 955717e8) with random weights, in eval mode.

    Args:
        sources: stem names (4 for ``htdemucs``).
        seed: seeds the weight initialisation (a local generator state; global RNG state is restored).
    """
    from demucs.htdemucs import HTDemucs

    from checkpoints import reference_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HTDemucs(**reference_kwargs(sources=list(sources)))
    return model.eval()


def make_small_reference_htdemucs(
    sources: tuple[str, ...] = FULL_SOURCES, seed: int = 0, segment: Fraction = Fraction(1, 2)
) -> torch.nn.Module:
    """A small random-weight reference HT Demucs (cheap enough for unit tests), in eval mode.

    Same code path as the full model (STFT branch, time branch, cross transformer), fewer channels and a
    short training window: ``segment`` seconds at 44.1 kHz (22050 samples by default).
    """
    from demucs.htdemucs import HTDemucs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HTDemucs(
            sources=list(sources),
            audio_channels=2,
            samplerate=44100,
            segment=segment,
            channels=8,
            growth=2,
            nfft=4096,
            depth=4,
            multi_freqs=[],
            dconv_mode=3,
            bottom_channels=0,
            t_layers=1,
            t_heads=2,
            t_hidden_scale=1.0,
        )
    return model.eval()


def make_reference_hdemucs(seed: int = 0, *, small: bool = False) -> torch.nn.Module:
    """A reference ``demucs.hdemucs.HDemucs`` with :func:`checkpoints.random_state` weights, in eval mode:
    the full-size ``hdemucs_mmi`` architecture (spec §1.1), or with ``small`` the tiny one of
    :func:`checkpoints.tiny_hdemucs_kwargs` (every block kind, a 2.5-s window).

    Random weights rather than the reference's init, whose LayerScales of 1e-3 would let a wrong BiLSTM or
    local attention hide under float tolerance. The weights are fp16-representable, as in the files.
    """
    from demucs.hdemucs import HDemucs

    from checkpoints import hdemucs_kwargs, random_state, tiny_hdemucs_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HDemucs(**(tiny_hdemucs_kwargs() if small else hdemucs_kwargs()))
    model.load_state_dict({k: v.half().float() for k, v in random_state(model, seed).items()})
    return model.eval()


def stemsplit_twin(reference: torch.nn.Module) -> torch.nn.Module:
    """Our network (``stemsplit.model.HTDemucs`` or ``HDemucs``, after the reference's class) with the
    reference network's constructor arguments and weights, loaded as a checkpoint would be (strictly).

    The engine parity tests run the reference engine on the reference network and our engine on this
    twin, so they compare the whole of stemsplit (model + engine) with the whole of demucs.
    """
    from stemsplit.weights.checkpoint import LoadedModel, config_from_kwargs

    args, kwargs = reference._init_args_kwargs  # recorded by demucs' capture_init
    klass = f"{type(reference).__module__}.{type(reference).__name__}"
    return LoadedModel(config_from_kwargs(kwargs, args, klass=klass), reference.state_dict()).build()


def reference_separate(model, wav: torch.Tensor, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """demucs 4.1.0 ``Separator.separate_tensor`` maths around ``apply_model`` (the parity reference);
    (C, T) -> (S, C, T). ``kwargs`` override ``shifts=0, split=True, overlap=0.25``."""
    from demucs.apply import apply_model

    ref = wav.mean(0)
    mean = ref.mean()
    std = ref.std() + 1e-8
    kwargs = {"shifts": 0, "split": True, "overlap": 0.25, **kwargs}
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], **kwargs)[0]
    return out * std + mean
