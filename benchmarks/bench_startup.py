"""Where a short clip's whole ``stemsplit`` run goes, with the model already on disk (issue 30, item 8).

Usage: ``python benchmarks/bench_startup.py [--repeats N] [--seconds S]``.

Each repeat runs, in a fresh interpreter, the console script's ``main`` on a clip of ``S`` seconds (default
0.1) with random full-size ``htdemucs`` weights in the official ``.th`` format (a local file: the same load
as a cached registry model, without the registry's hash check), and times its stages from inside: the
imports (``stemsplit.cli``, torch, the pipeline), planning (``plan_batch``: devices, model header, probe),
the model load, the runner's set-up (``make_runner``: placing the model, the CPU backend), the rest of the
run (first batch, writing) and the exit. The whole process is also timed from outside. The machine's load
average is printed beside the figures: on a shared machine they are only as good as it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
marks = {}
import stemsplit.cli
marks["import stemsplit.cli"] = time.perf_counter() - t0
t = time.perf_counter()
import torch
marks["import torch"] = time.perf_counter() - t
t = time.perf_counter()
import stemsplit.pipeline, stemsplit.pipeline.batch, stemsplit.pipeline.workers
marks["import the pipeline"] = time.perf_counter() - t
spent = {"plan_batch": 0.0, "load_model": 0.0, "make_runner": 0.0}

def timed(module, name, label):
    real = getattr(module, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start
    setattr(module, name, wrapper)

timed(stemsplit.pipeline, "plan_batch", "plan_batch")
timed(stemsplit.pipeline.batch, "load_model", "load_model")
timed(stemsplit.pipeline.workers, "make_runner", "make_runner")
t = time.perf_counter()
try:
    stemsplit.cli.main(sys.argv[2:])
except SystemExit as stop:
    assert not stop.code, stop.code
command = time.perf_counter() - t
marks.update({k: v for k, v in spent.items()})
marks["first batch, writing, the rest"] = command - sum(spent.values())
marks["in-process total"] = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump(marks, f)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.1)
    args = parser.parse_args()
    from bench_folder import make_model, make_tracks

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_model(folder / "model")
        (clip,) = make_tracks(folder / "in", 1, args.seconds, "wav")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "STEMSPLIT_CACHE_DIR": str(folder / "cache")}
        command = [str(clip), "-n", str(model), "-o", str(folder / "out"), "-q", "--overwrite"]
        verbose = subprocess.run(
            [sys.executable, "-m", "stemsplit", *command[:-2], "-v", "--overwrite"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        compute = [line for line in verbose.stderr.splitlines() if line.startswith("compute:")]
        print(
            compute[0] if compute else "compute: (not said)",
            "(an untimed first run, which also warms caches)",
        )
        print(f"load average before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
        runs = []
        for _ in range(args.repeats):
            result = folder / "marks.json"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", PROBE, str(result), *command],
                env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            wall = time.perf_counter() - start
            marks = json.loads(result.read_text())
            marks["process start and exit"] = wall - marks["in-process total"]
            marks["whole process (outside)"] = wall
            runs.append(marks)
            print(f"  run: {wall:.2f} s, load average {os.getloadavg()[0]:.1f}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print(f"\n| stage ({args.seconds:g}-s clip, {args.repeats} runs) | best (s) | median (s) |")
        print("|---|---|---|")
        for key in runs[0]:
            values = sorted(r[key] for r in runs)
            print(f"| {key} | {values[0]:.2f} | {values[len(values) // 2]:.2f} |")


if __name__ == "__main__":
    main()
