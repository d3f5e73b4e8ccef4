"""Test helpers: reference-style constructor arguments and writers for both checkpoint formats.

The writers produce files the way the official tools do (htdemucs-spec §3.1 and the safetensors export),
so that the loader is tested against the real formats without downloading anything.
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

FOUR = ["drums", "bass", "other", "vocals"]
SIX = [*FOUR, "guitar", "piano"]


def reference_kwargs(**overrides: Any) -> dict[str, Any]:
    """Every reference HTDemucs constructor argument except ``use_train_segment``, as the official
    ``htdemucs`` checkpoint (955717e8) stores them (htdemucs-spec §1.1)."""
    kwargs: dict[str, Any] = {
        "sources": list(FOUR), "audio_channels": 2, "samplerate": 44100, "segment": Fraction(39, 5),
        "channels": 48, "channels_time": None, "growth": 2, "nfft": 4096, "wiener_iters": 0,
        "end_iters": 0, "wiener_residual": False, "cac": True, "depth": 4, "rewrite": True,
        "multi_freqs": [], "multi_freqs_depth": 3, "freq_emb": 0.2, "emb_scale": 10, "emb_smooth": True,
        "kernel_size": 8, "time_stride": 2, "stride": 4, "context": 1, "context_enc": 0, "norm_starts": 4,
        "norm_groups": 4, "dconv_mode": 3, "dconv_depth": 2, "dconv_comp": 8, "dconv_init": 0.001,
        "bottom_channels": 512, "t_layers": 5, "t_emb": "sin", "t_hidden_scale": 4.0, "t_heads": 8,
        "t_dropout": 0.02, "t_max_positions": 10000, "t_norm_in": True, "t_norm_in_group": False,
        "t_group_norm": False, "t_norm_first": True, "t_norm_out": True, "t_max_period": 10000.0,
        "t_weight_decay": 0.0, "t_lr": None, "t_layer_scale": True, "t_gelu": True,
        "t_weight_pos_embed": 1.0, "t_sin_random_shift": 0, "t_cape_mean_normalize": True,
        "t_cape_augment": True, "t_cape_glob_loc_scale": [5000.0, 1.0, 1.4], "t_sparse_self_attn": False,
        "t_sparse_cross_attn": False, "t_mask_type": "diag", "t_mask_random_seed": 42,
        "t_sparse_attn_window": 400, "t_global_window": 100, "t_sparsity": 0.95, "t_auto_sparsity": False,
        "t_cross_first": False, "rescale": 0.1,
    }  # fmt: skip
    kwargs.update(overrides)
    return kwargs


def six_stem_kwargs(**overrides: Any) -> dict[str, Any]:
    """``htdemucs_6s`` (5c90dfd2): six sources and no 512-wide bottleneck."""
    return reference_kwargs(sources=list(SIX), bottom_channels=0, **overrides)


def tiny_kwargs(**overrides: Any) -> dict[str, Any]:
    """A small but complete architecture (every block kind present) that runs in milliseconds."""
    base = {
        "channels": 8, "depth": 2, "nfft": 512, "segment": Fraction(1, 4), "bottom_channels": 32,
        "t_layers": 3, "t_heads": 2, "dconv_comp": 4,
    }  # fmt: skip
    base.update(overrides)
    return reference_kwargs(**base)


def hdemucs_kwargs(**overrides: Any) -> dict[str, Any]:
    """Every reference HDemucs constructor argument as ``hdemucs_mmi`` (75fc33f5) stores them: the demucs
    config's ``hdemucs`` section, segment 40 (htdemucs-spec §1.1; derived there, not dumped)."""
    kwargs: dict[str, Any] = {
        "sources": list(FOUR), "audio_channels": 2, "samplerate": 44100, "segment": 40, "channels": 48,
        "channels_time": None, "growth": 2, "nfft": 4096, "wiener_iters": 0, "end_iters": 0,
        "wiener_residual": False, "cac": True, "depth": 6, "rewrite": True, "hybrid": True, "hybrid_old": False,
        "multi_freqs": [], "multi_freqs_depth": 3, "freq_emb": 0.2, "emb_scale": 10, "emb_smooth": True,
        "kernel_size": 8, "stride": 4, "time_stride": 2, "context": 1, "context_enc": 0, "norm_starts": 4,
        "norm_groups": 4, "dconv_mode": 1, "dconv_depth": 2, "dconv_comp": 4, "dconv_attn": 4, "dconv_lstm": 4,
        "dconv_init": 0.001, "rescale": 0.1,
    }  # fmt: skip
    kwargs.update(overrides)
    return kwargs


def tiny_hdemucs_kwargs(**overrides: Any) -> dict[str, Any]:
    """A small Hybrid Demucs with every block kind: spectral layers 0-2, the merge at 3 (nfft 1024: its hop
    256 is the time stride of 4 layers), one temporal layer 4, GroupNorm, BiLSTM and local attention from 3
    on, and a 2.5-s window in which both BiLSTMs run in chunks (431 and 216 steps > 200)."""
    base = {
        "channels": 4, "nfft": 1024, "depth": 5, "segment": Fraction(5, 2), "norm_starts": 3, "dconv_attn": 3,
        "dconv_lstm": 3,
    }  # fmt: skip
    base.update(overrides)
    return hdemucs_kwargs(**base)


def random_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights that depend only on the architecture and ``seed`` (not on global RNG state).

    Matrices and kernels are uniform in ±1/sqrt(fan_in) (PyTorch's default scale), norm gains 1 ± 0.02,
    biases ±0.02. LayerScales are drawn in [0.25, 0.75]: the reference initialises them at 1e-3 / 1e-4,
    which would let a wrong DConv or transformer hide under float tolerance; these weights give every
    branch unit-order influence.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        shape = value.shape
        if key.endswith(".scale"):
            state[key] = torch.rand(shape, generator=gen) * 0.5 + 0.25
        elif value.dim() >= 2:
            bound = 1.0 / math.sqrt(value[0].numel())
            state[key] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        elif key.endswith("weight"):  # GroupNorm / LayerNorm gains
            state[key] = 1 + 0.02 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=gen)
    return state


@contextmanager
def fake_demucs_class(qualified: str = "demucs.htdemucs.HTDemucs") -> Iterator[type]:
    """Make ``qualified`` importable just long enough to pickle a reference to it (demucs absent)."""
    module_name, class_name = qualified.rsplit(".", 1)
    parts = module_name.split(".")
    created = []
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            created.append(name)
    klass = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
    module = sys.modules[module_name]
    previous = module.__dict__.get(class_name, _ABSENT)  # the real class, when demucs is imported
    setattr(module, class_name, klass)
    try:
        yield klass
    finally:
        if previous is _ABSENT:
            delattr(module, class_name)
        else:
            setattr(module, class_name, previous)
        for name in created:
            del sys.modules[name]


_ABSENT = object()


def save_th(
    path: Path,
    kwargs: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    klass: type | None = None,
    qualified: str = "demucs.htdemucs.HTDemucs",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an official-format package: ``torch.save({klass, args, kwargs, state (fp16), …})``.

    With ``klass=None`` the pickle references ``qualified`` (``demucs.htdemucs.HTDemucs`` or
    ``demucs.hdemucs.HDemucs``) through a stand-in class, so the file is byte-for-byte of the official shape
    without demucs being installed.
    """
    package = {
        "args": (),
        "kwargs": dict(kwargs),
        "state": {k: v.detach().to(torch.float16) for k, v in state.items()},
        "training_args": {"dset": {"segment": 10}, "optim": {"lr": 3e-4}},
        "metrics": ({"nsdr": 8.8}, {"sdr": 9.0}),
        **(extra or {}),
    }
    if klass is not None:
        torch.save({"klass": klass, **package}, path)
        return path
    with fake_demucs_class(qualified) as fake:
        torch.save({"klass": fake, **package}, path)
    return path


def _encode_json(value: Any) -> Any:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(v) for v in value]
    return value


def save_safetensors(
    path: Path,
    kwargs: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    klass: str = "demucs.htdemucs.HTDemucs",
) -> Path:
    """Write the pickle-free export: fp16 tensors, ``klass``/``args``/``kwargs`` as JSON metadata."""
    from safetensors.torch import save_file

    metadata = {"klass": klass, "args": json.dumps([]), "kwargs": json.dumps(_encode_json(dict(kwargs)))}
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, str(path), metadata)
    return path


def damage_tensors(path: Path, dest: Path, *, drop_bytes: int | None = None) -> Path:
    """Copy a checkpoint to ``dest`` with its tensor bytes cut short but its header intact (the format
    and the model arguments still read): a ``.th`` archive's largest tensor entry loses half its bytes
    (or ``drop_bytes``), a ``.safetensors`` file ends 16 bytes after its JSON header."""
    import zipfile

    data = path.read_bytes()
    if not data.startswith(b"PK"):
        dest.write_bytes(data[: 8 + int.from_bytes(data[:8], "little") + 16])
        return dest
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(dest, "w") as target:
        entries = source.infolist()
        largest = max((e for e in entries if "/data/" in e.filename), key=lambda e: e.file_size)
        for entry in entries:
            body = source.read(entry)
            cut = len(body) // 2 if drop_bytes is None else len(body) - drop_bytes
            target.writestr(entry, body[:cut] if entry is largest else body)
    return dest
