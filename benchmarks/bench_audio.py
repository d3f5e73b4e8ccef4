"""Audio I/O throughput on one CPU core: decode + resample + encode, in × real time.

Self-contained: generates its inputs (band-limited stereo noise with a sweep on top) in a temporary
folder, pins itself to one core, and runs each case through the public API exactly as the pipeline
does: ``AudioReader`` (to 44.1 kHz stereo) feeding a ``TrackWriter`` (back to the input's rate).

Usage::

    python benchmarks/bench_audio.py [--seconds 60] [--repeat 3]

Targets (issue #5): ≥ 200× real time per core for wav/flac, ≥ 100× for mp3 decode.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from stemsplit.audio import AudioReader, TrackWriter, WriteOptions


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # key of the generated input
    run: Callable[[Path, Path], None]
    target: float | None  # × real time required, if any


def make_signal(samplerate: int, seconds: float) -> np.ndarray:
    """Stereo float32 (frames, 2): low-passed noise plus a sweep, peak ≈ 0.7."""
    n = round(samplerate * seconds)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((n, 2))
    spec = np.fft.rfft(noise, axis=0)
    spec[np.fft.rfftfreq(n, 1 / samplerate) > 16000] = 0
    noise = np.fft.irfft(spec, n=n, axis=0)
    t = np.arange(n) / samplerate
    sweep = np.sin(2 * np.pi * 100 * t * (1 + t / seconds * 20))[:, None]
    x = 0.3 * noise / np.abs(noise).max() + 0.4 * sweep
    return x.astype(np.float32)


def make_inputs(folder: Path, seconds: float) -> dict[str, Path]:
    x44, x48 = make_signal(44100, seconds), make_signal(48000, seconds)
    files = {
        "mp3": (folder / "in44.mp3", x44, 44100, {"format": "MP3"}),
        "flac44": (folder / "in44.flac", x44, 44100, {"subtype": "PCM_16"}),
        "flac48": (folder / "in48.flac", x48, 48000, {"subtype": "PCM_24"}),
        "wav48": (folder / "in48.wav", x48, 48000, {"subtype": "PCM_16"}),
    }
    paths = {}
    for key, (path, x, rate, kwargs) in files.items():
        sf.write(path, x, rate, **kwargs)
        paths[key] = path
    paths["m4a"] = folder / "in44.m4a"
    write_aac(paths["m4a"], x44, 44100)
    return paths


def write_aac(path: Path, x: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        stream.bit_rate = 256_000
        for start in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[start : start + 1024].T), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def decode_only(src: Path, _out: Path) -> None:
    for _block in AudioReader(src):
        pass


def transcode(options: WriteOptions, stems: int = 1) -> Callable[[Path, Path], None]:
    def run(src: Path, out: Path) -> None:
        reader = AudioReader(src)
        names = [f"stem{i}" for i in range(stems)]
        paths = {name: out / f"{name}.{options.extension}" for name in names}
        with TrackWriter(paths, options, samplerate=reader.info.samplerate, channels=2) as writer:
            for block in reader:
                writer.write_all(dict.fromkeys(names, block))

    return run


CASES = [
    Case("mp3 44.1k decode → model blocks", "mp3", decode_only, 100.0),
    Case("m4a/aac 44.1k decode (PyAV)", "m4a", decode_only, None),
    Case("flac 48k decode + resample", "flac48", decode_only, 200.0),
    Case("mp3 44.1k → wav 16", "mp3", transcode(WriteOptions(format="wav")), 100.0),
    Case("flac 44.1k → flac 16", "flac44", transcode(WriteOptions(format="flac")), 200.0),
    Case(
        "flac 48k → flac 24 (resample ×2)",
        "flac48",
        transcode(WriteOptions(format="flac", bit_depth="24")),
        200.0,
    ),
    Case("wav 48k → wav 16 (resample ×2)", "wav48", transcode(WriteOptions(format="wav")), 200.0),
    Case(
        "flac 48k → 4 stems flac 24",
        "flac48",
        transcode(WriteOptions(format="flac", bit_depth="24"), stems=4),
        None,
    ),
    Case("flac 44.1k → mp3 320k", "flac44", transcode(WriteOptions(format="mp3")), None),
]


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this OS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated inputs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest counts")
    args = parser.parse_args()
    pinned = pin_one_core()
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, {pinned}")
    print(
        f"# {args.seconds:.0f} s stereo inputs, best of {args.repeat}; × real time = audio s / wall s (cpu s)"
    )
    print(f"{'case':42} {'wall ×rt':>9} {'cpu ×rt':>9} {'target':>7}")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder, args.seconds)
        for case in CASES:
            best_wall = best_cpu = float("inf")
            for i in range(args.repeat):
                out = folder / f"out-{case.source}-{i}-{id(case)}"
                wall0, cpu0 = time.perf_counter(), time.process_time()
                case.run(inputs[case.source], out)
                best_wall = min(best_wall, time.perf_counter() - wall0)
                best_cpu = min(best_cpu, time.process_time() - cpu0)
            wall_x, cpu_x = args.seconds / best_wall, args.seconds / best_cpu
            target = f"≥{case.target:.0f}" if case.target else "-"
            if case.target and cpu_x < case.target:
                failures.append(case.name)
            print(f"{case.name:42} {wall_x:9.0f} {cpu_x:9.0f} {target:>7}")
    verdict = "all targets met" if not failures else f"below target: {', '.join(failures)}"
    print(f"summary: audio I/O on one core, {len(CASES)} cases, {verdict} (judged on CPU time)")


if __name__ == "__main__":
    main()
