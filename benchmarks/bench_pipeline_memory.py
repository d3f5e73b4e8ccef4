"""Benchmark: peak memory of a whole `stemsplit` run (decode → separate → encode) against track length.

Runs the real command in a subprocess on generated WAV tracks of several lengths with the full-size
``htdemucs`` architecture (random weights, saved in the official format by this script unless ``--model``
is given) and samples the child's peak resident memory (VmHWM in /proc). Flat memory means the peak does
not grow with the track's length. ``--arch hdemucs_mmi``: the full-size Hybrid Demucs architecture instead,
in a bag yaml with the registry's ``segment: 44`` (44-s windows, as ``-n hdemucs_mmi`` runs it).

Usage::

    python benchmarks/bench_pipeline_memory.py --minutes 1 10
    python benchmarks/bench_pipeline_memory.py --arch hdemucs_mmi --minutes 1 10

Last line: ``minutes=… peak_rss_mb=… seconds=… ratio_longest_to_shortest=…``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def make_model(folder: Path, arch: str) -> Path:
    """A random full-size model of ``arch`` in the official format (hdemucs_mmi: beside its bag yaml)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoints import hdemucs_kwargs, random_state, reference_kwargs, save_th
    from stemsplit.model import HDemucs, HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    if arch == "htdemucs":
        kwargs = reference_kwargs()
        state = random_state(HTDemucs(config_from_kwargs(kwargs)))  # type: ignore[arg-type]
        return save_th(folder / "htdemucs-random.th", kwargs, state)
    kwargs = hdemucs_kwargs()
    klass = "demucs.hdemucs.HDemucs"
    state = random_state(HDemucs(config_from_kwargs(kwargs, klass=klass)))  # type: ignore[arg-type]
    save_th(folder / "75fc33f5-random.th", kwargs, state, qualified=klass)
    bag = folder / "hdemucs_mmi-random.yaml"
    bag.write_text("models: ['75fc33f5']\nsegment: 44\n")
    return bag


def make_track(path: Path, minutes: float, samplerate: int = 44100) -> None:
    """A stereo test signal written block by block (the generator never holds the track)."""
    rng = np.random.default_rng(0)
    total = int(minutes * 60 * samplerate)
    with sf.SoundFile(path, "w", samplerate, 2, subtype="PCM_16") as f:
        for start in range(0, total, samplerate * 10):
            n = min(samplerate * 10, total - start)
            t = (start + np.arange(n)) / samplerate
            tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3300 * t)
            block = np.stack([tone, tone], axis=1) + 0.05 * rng.standard_normal((n, 2))
            f.write(block.astype(np.float32))


def peak_rss_mb(pid: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out.append(int(line.split()[1]) / 1024)
        except OSError:
            break
        time.sleep(0.05)


def run(model: Path, track: Path, out_dir: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "stemsplit", str(track), "-n", str(model), "-o", str(out_dir), "-q"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=peak_rss_mb, args=(proc.pid, stop, samples), daemon=True)
    sampler.start()
    code = proc.wait()
    stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"stemsplit exited with {code}")
    return max(samples, default=float("nan")), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--model", type=Path, help="a checkpoint (default: a random full-size --arch)")
    parser.add_argument("--arch", default="htdemucs", choices=["htdemucs", "hdemucs_mmi"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model or make_model(folder, args.arch)
        rows = []
        for minutes in args.minutes:
            track = folder / f"track-{minutes:g}min.wav"
            make_track(track, minutes)
            peak, seconds = run(model, track, folder / "out")
            rows.append((minutes, peak, seconds))
            track.unlink()
    print(f"{'minutes':>8}{'peak RSS MB':>14}{'seconds':>10}{'x realtime':>12}")
    for minutes, peak, seconds in rows:
        print(f"{minutes:>8g}{peak:>14.0f}{seconds:>10.1f}{minutes * 60 / seconds:>12.2f}")
    ratio = rows[-1][1] / rows[0][1]
    print(
        f"minutes={','.join(f'{m:g}' for m, _, _ in rows)} peak_rss_mb={','.join(f'{p:.0f}' for _, p, _ in rows)} "
        f"seconds={','.join(f'{s:.1f}' for _, _, s in rows)} ratio_longest_to_shortest={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
