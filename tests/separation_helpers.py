"""Helpers for the separation tests: tiny models in the official formats, a bag, and tiny audio files.

Audio is kept short (well under a second or two) and the model tiny, so a whole separation runs in a
fraction of a second on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_fixtures import bandlimited_noise
from checkpoints import FOUR, random_state, save_th, tiny_hdemucs_kwargs, tiny_kwargs

SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}


TORCH_BACKEND = {"STEMSPLIT_CPU_BACKEND": "torch"}
"""For a CLI run in a subprocess, which sees the real CPU (not conftest's simulated one): the trunk in
PyTorch, so that a runtime's export (tens of seconds on an Intel CPU, where OpenVINO is the automatic
choice) neither slows the test nor makes it depend on the machine. The backends have their own tests."""


def make_tiny_th(folder: Path, signature: str = "0123abcd", seed: int = 0) -> Path:
    """A tiny random HT Demucs saved as ``<signature>-<sha256[:8]>.th`` in ``folder``."""
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = tiny_kwargs()
    state = random_state(HTDemucs(config_from_kwargs(kwargs)), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = save_th(folder / f"{signature}.tmp", kwargs, state)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return path.rename(folder / f"{signature}-{digest}.th")


def make_tiny_hybrid_th(folder: Path, signature: str = "75fc33f5", seed: int = 5) -> Path:
    """A tiny random Hybrid Demucs v3 saved as ``<signature>-<sha256[:8]>.th`` in ``folder``."""
    from stemsplit.model import HDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = tiny_hdemucs_kwargs()
    config = config_from_kwargs(kwargs, klass="demucs.hdemucs.HDemucs")
    folder.mkdir(parents=True, exist_ok=True)
    path = save_th(
        folder / f"{signature}.tmp",
        kwargs,
        random_state(HDemucs(config), seed=seed),
        qualified="demucs.hdemucs.HDemucs",
    )  # type: ignore[arg-type]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return path.rename(folder / f"{signature}-{digest}.th")


FT_SIGNATURES = ("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d")  # one specialist per FOUR stem


def make_ft_bag(folder: Path, name: str = "tiny_ft") -> tuple[Path, tuple[Path, ...]]:
    """An ``htdemucs_ft``-shaped bag: four tiny members beside a yaml with identity weights."""
    members = tuple(make_tiny_th(folder, sig, seed=10 + i) for i, sig in enumerate(FT_SIGNATURES))
    identity = [[1.0 if i == k else 0.0 for k in range(len(FOUR))] for i in range(len(FOUR))]
    yaml = folder / f"{name}.yaml"
    yaml.write_text(f"models: {list(FT_SIGNATURES)}\nweights: {identity}\n")
    return yaml, members


def write_audio(
    path: Path,
    *,
    seconds: float = 0.5,
    rate: int = 44100,
    channels: int = 2,
    seed: int = 0,
    subtype: str = "FLOAT",
    peak: float = 0.5,
) -> np.ndarray:
    """Write band-limited noise (faded in and out) and return it as float32 (channels, frames)."""
    audio = bandlimited_noise(
        rate, seconds, channels, cutoff_hz=min(16000.0, rate / 2.5), seed=seed, fade_s=0.02
    )
    audio = (audio * (peak / 0.5)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, rate, subtype=subtype)
    if subtype == "FLOAT":
        return audio
    decoded, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(decoded.T)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a written stem: float64 (channels, frames) and its rate."""
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return np.ascontiguousarray(data.T), rate


class OneThread:
    """Pin torch to one CPU thread (the test machine's cores are shared; spinning threads would crawl)."""

    def __enter__(self) -> None:
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.previous)
