"""Benchmark: writing one track as a ``stem.mp4`` (AAC, ALAC) against writing its 4 WAV stems.

Self-contained: generates a stereo track of ``--seconds`` (four band-limited "stems" and their sum as the
master) and feeds the writers exactly as the pipeline does: 65,536-frame blocks at 44.1 kHz, every stem in
step, the master beside them. Cases run interleaved (the order rotates every repeat) and each keeps its
fastest repeat, so a shared machine hurts every case alike.

The model's time for the same track is measured too: the full-size ``htdemucs`` architecture with random
weights (the same arithmetic as the released weights) separates ``--model-seconds`` of the track in
float32, and that time is scaled linearly to ``--seconds`` (the engine's work is proportional to the
number of windows). Clearly labelled as scaled.

Usage::

    python benchmarks/bench_stem_mp4.py [--seconds 240] [--repeat 2] [--model-seconds 30]

The last line is machine-readable: ``seconds=… wav4_cpu_s=… aac_cpu_s=… alac_cpu_s=… model_s=…``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers that build a full-size random model

from stemsplit.audio import StemMp4Writer, TrackWriter, WriteOptions  # noqa: E402

SR = 44100
BLOCK = 65536
SOURCES = ("drums", "bass", "other", "vocals")


def make_track(seconds: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four (2, n) float32 stems, each noise in its own band plus a sweep, and their sum (peak < 1)."""
    n = round(SR * seconds)
    rng = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(n, 1 / SR)
    t = np.arange(n) / SR
    stems = {}
    for i, (name, (low, high)) in enumerate(
        zip(SOURCES, [(40, 8000), (30, 300), (200, 12000), (150, 6000)], strict=True)
    ):
        spec = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
        spec[:, (freqs < low) | (freqs > high)] = 0
        noise = np.fft.irfft(spec, n=n, axis=1)
        tone = np.sin(2 * np.pi * (low + 2 * i) * t * (1 + t / seconds))
        stems[name] = (0.12 * noise / np.abs(noise).max() + 0.08 * tone).astype(np.float32)
    mix = np.sum(list(stems.values()), axis=0, dtype=np.float32)
    return stems, mix


def write_wav4(stems: dict[str, np.ndarray], mix: np.ndarray, out: Path) -> None:
    paths = {name: out / f"{name}.wav" for name in SOURCES}
    with TrackWriter(paths, WriteOptions(), samplerate=SR, channels=2, frames=mix.shape[1]) as writer:
        for start in range(0, mix.shape[1], BLOCK):
            writer.write_all({name: x[:, start : start + BLOCK] for name, x in stems.items()})


def stem_file(codec: str) -> Callable[[dict[str, np.ndarray], np.ndarray, Path], None]:
    options = WriteOptions(format="stem.mp4", stem_codec=codec)  # type: ignore[arg-type]

    def run(stems: dict[str, np.ndarray], mix: np.ndarray, out: Path) -> None:
        path = out / "track.stem.mp4"
        with StemMp4Writer(path, options, sources=SOURCES, samplerate=SR, frames=mix.shape[1]) as writer:
            for start in range(0, mix.shape[1], BLOCK):
                writer.write_master(mix[:, start : start + BLOCK])
                writer.write_all({name: x[:, start : start + BLOCK] for name, x in stems.items()})

    return run


CASES: dict[str, Callable[[dict[str, np.ndarray], np.ndarray, Path], None]] = {
    "wav4": write_wav4,
    "aac": stem_file("aac"),
    "alac": stem_file("alac"),
}
LABELS = {
    "wav4": "4 WAV stems, 16-bit (reference)",
    "aac": "stem.mp4, AAC 256 kbit/s",
    "alac": "stem.mp4, ALAC 16-bit",
}


def model_seconds(mix: np.ndarray, seconds: float) -> float:
    """Wall time of the full-size random htdemucs (float32) on the first ``seconds`` of ``mix``."""
    import torch

    from checkpoints import random_state, reference_kwargs
    from stemsplit.inference import EngineOptions, ModelBag, separate_tensor
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    model = HTDemucs(config_from_kwargs(reference_kwargs()))
    model.load_state_dict(random_state(model))
    bag = ModelBag.single(model.eval())
    wav = torch.from_numpy(mix[:, : round(SR * seconds)].copy())
    start = time.perf_counter()
    separate_tensor(bag, wav, options=EngineOptions(device="cpu", precision="float32"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="length of the track (4 minutes)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest counts")
    parser.add_argument("--model-seconds", type=float, default=30.0, help="audio the model is timed on")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    stems, mix = make_track(args.seconds)
    best = {name: (float("inf"), float("inf"), 0) for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeat):
            names = list(CASES)
            names = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in names:
                out = Path(tmp) / f"{name}-{repeat}"
                out.mkdir()
                wall0, cpu0 = time.perf_counter(), time.process_time()
                CASES[name](stems, mix, out)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                size = sum(p.stat().st_size for p in out.iterdir())
                w, c, _ = best[name]
                best[name] = (min(w, wall), min(c, cpu), size)
    model_s = model_seconds(mix, args.model_seconds) * args.seconds / args.model_seconds
    print(f"# {args.seconds:g} s stereo track at {SR} Hz, best of {args.repeat}, cases interleaved")
    print(f"{'case':34} {'wall s':>8} {'cpu s':>8} {'cpu ×rt':>8} {'× wav4':>7} {'% model':>8} {'MB':>7}")
    ref_cpu = best["wav4"][1]
    for name, (wall, cpu, size) in best.items():
        print(
            f"{LABELS[name]:34} {wall:8.2f} {cpu:8.2f} {args.seconds / cpu:8.0f} {cpu / ref_cpu:7.2f} "
            f"{100 * wall / model_s:7.1f}% {size / 1e6:7.1f}"
        )
    print(
        f"model: full-size htdemucs (random weights, float32, CPU): {model_s:.1f} s for the track "
        f"(scaled from {args.model_seconds:g} s measured)"
    )
    print(
        f"seconds={args.seconds:g} wav4_cpu_s={best['wav4'][1]:.2f} aac_cpu_s={best['aac'][1]:.2f} "
        f"alac_cpu_s={best['alac'][1]:.2f} aac_wall_s={best['aac'][0]:.2f} alac_wall_s={best['alac'][0]:.2f} "
        f"model_s={model_s:.1f}"
    )


if __name__ == "__main__":
    main()
