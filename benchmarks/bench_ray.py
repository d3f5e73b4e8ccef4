"""Benchmark: a batch on Ray workers (``stemsplit.distributed``) against the same batch run locally.

The model is a stand-in that sleeps a fixed time per window (and returns the mix as every stem), so model
time is predictable and leaves the cores free: what is measured is what Ray and the pipeline add around the
model, and how the throughput grows with the number of workers, not how fast this CPU computes.

One local Ray cluster with ``--slots`` logical CPU slots is started for the whole run; 1, 2 and 4 workers
are had by giving each worker ``slots / n`` slots (their torch threads stay at one: ``jobs=1``). Every run
separates the same ``--tracks`` tracks into a fresh folder. The throughput is measured in the steady state,
from the times the tracks end: over the middle half of them (from the end of the first quarter to the end
of the third), when every worker has started and none has run dry, so the fixed cost of a run (starting the
workers, which import torch, and loading the model) is reported apart:

* per-track time = 1 / steady throughput (s); for n workers, wall time per track of the cluster;
* start = time until the first track ends, minus one per-track time;
* per-track overhead of Ray = per-track time on one worker − per-track time of the local run;
* speed-up = throughput(n workers) / throughput(1 worker).

Usage::

    python benchmarks/bench_ray.py                       # 24 tracks of 10 s, 0.2 s per window
    python benchmarks/bench_ray.py --tracks 32 --window-sleep 0.3 --repeats 2

The last line is machine-readable: ``local_track_s=… ray1_track_s=… overhead_s=… speedup2=… speedup4=…``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
WINDOW = 343980  # htdemucs's training window (7.8 s at 44.1 kHz)
SOURCES = ("drums", "bass", "other", "vocals")


class SleepingModel:
    """Stands in for a network: sleeps ``seconds`` per window, returns (B, S, C, T) quarter mixes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds * mix.shape[0])
        return (mix / len(SOURCES)).unsqueeze(1).expand(-1, len(SOURCES), -1, -1).contiguous()


class StandIn:
    """A picklable loader for the workers: the stand-in model as a one-member bag."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, model: object = None):  # type: ignore[no-untyped-def]
        from stemsplit.inference import ModelBag

        return ModelBag((SleepingModel(self.seconds),), SOURCES, SR, 2, WINDOW)


def make_tracks(folder: Path, count: int, seconds: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        audio = (0.1 * rng.standard_normal((int(seconds * SR), 2))).astype(np.float32)
        path = folder / f"track{i:03d}.wav"
        sf.write(str(path), audio, SR, subtype="PCM_16")
        paths.append(path)
    return paths


class Clock:
    """A reporter that notes when each track ends (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        pass

    def track_progress(self, index: int, done_s: float) -> None:
        pass

    def track_finished(self, result) -> None:  # type: ignore[no-untyped-def]
        assert result.status == "done", result.error
        self.ends.append(time.perf_counter())


@dataclasses.dataclass(frozen=True)
class Measured:
    """One run: wall time, steady per-track time (middle half of the track ends) and start-up."""

    wall_s: float
    track_s: float
    start_s: float


def measure(run) -> Measured:  # type: ignore[no-untyped-def]
    clock = Clock()
    run(clock)
    ends = sorted(clock.ends)
    n = len(ends)
    first, last = n // 4, n - 1 - n // 4
    track = (ends[last] - ends[first]) / (last - first)
    return Measured(ends[-1] - clock.start, track, ends[0] - clock.start - track)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracks", type=int, default=24, help="tracks per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each track")
    parser.add_argument("--window-sleep", type=float, default=0.2, help="stand-in model time per window (s)")
    parser.add_argument("--slots", type=int, default=4, help="logical CPU slots of the local Ray cluster")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per point")
    args = parser.parse_args()

    import ray

    sys.path.insert(0, str(ROOT / "tests"))
    from separation_helpers import make_tiny_th
    from stemsplit import distributed
    from stemsplit.pipeline import SeparationOptions, plan_batch, separate_batch

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    loader = StandIn(args.window_sleep)
    model = make_tiny_th(work / "model")  # only described (sources, rate): the stand-in replaces it
    inputs = [str(p) for p in make_tracks(work / "in", args.tracks, args.seconds)]
    base = SeparationOptions(model=str(model), device="cpu", precision="float32", batch_size=1, jobs=1)
    counter = iter(range(1_000_000))

    def options() -> SeparationOptions:
        return dataclasses.replace(base, out_dir=work / f"out{next(counter)}")

    def local(clock: Clock) -> None:
        opts = options()
        separate_batch(plan_batch(inputs, opts), opts, reporter=clock, loader=loader)

    def on_ray(workers: int, clock: Clock) -> None:
        opts = options()
        cluster = distributed.ClusterOptions(cpus_per_worker=args.slots // workers)
        distributed.run_batch(distributed.plan(inputs, opts), opts, cluster, reporter=clock, loader=loader)

    def best(run) -> Measured:  # type: ignore[no-untyped-def]
        return min((measure(run) for _ in range(args.repeats)), key=lambda m: m.track_s)

    began = time.perf_counter()
    torch.set_num_threads(1)
    counts = [int(w) for w in args.workers.split(",")]
    local_m = best(local)
    ray.init(num_cpus=args.slots, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        ray_m = {w: best(lambda clock, w=w: on_ray(w, clock)) for w in counts}
    finally:
        ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.tracks} tracks of {args.seconds:g} s, stand-in {args.window_sleep:g} s per window, "
        f"{args.slots} Ray CPU slots, best of {args.repeats}; {time.perf_counter() - began:.0f} s in all"
    )
    print(f"{'run':<10}{'wall s':>9}{'per track s':>13}{'start s':>9}{'tracks/s':>10}{'speed-up':>10}")
    print(f"{'local':<10}{local_m.wall_s:>9.2f}{local_m.track_s:>13.3f}{local_m.start_s:>9.2f}"
          f"{1 / local_m.track_s:>10.2f}{'':>10}")  # fmt: skip
    figures = {"local_track_s": local_m.track_s}
    one = ray_m[counts[0]].track_s
    for w in counts:
        m = ray_m[w]
        figures[f"ray{w}_track_s"] = m.track_s
        figures[f"ray{w}_start_s"] = m.start_s
        figures[f"speedup{w}"] = one / m.track_s
        print(f"{f'ray x{w}':<10}{m.wall_s:>9.2f}{m.track_s:>13.3f}{m.start_s:>9.2f}"
              f"{1 / m.track_s:>10.2f}{one / m.track_s:>10.2f}")  # fmt: skip
    figures["overhead_s"] = one - local_m.track_s
    print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
