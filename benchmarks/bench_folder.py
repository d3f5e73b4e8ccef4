"""Benchmark: the ``stemsplit`` command end to end on a folder of tracks, against the ``demucs`` command.

Both commands separate the same generated tracks with the same random full-size ``htdemucs`` weights (one
official-format ``.th`` file, loaded by ours with ``-n FILE`` and by demucs with ``--repo DIR -n SIG``), one
after the other in the same run, each as a fresh process (start-up, model loading, decoding and writing
included). demucs runs with ``--shifts 0`` so that both do one pass. Ours runs through
``benchmarks/_busy_probe.py``, which measures how long the device computed (CUDA events, or wall time of the
model calls on the CPU); ``device_busy`` is that time over ours' wall time.

Usage::

    python benchmarks/bench_folder.py --device cpu --tracks 2 --seconds 30
    python benchmarks/bench_folder.py --device cuda --tracks 10 --seconds 180

The last line is machine-readable:
``device=… tracks=… audio_s=… ours_s=… demucs_s=… speedup=… device_busy=…`` (each the best of
``--repeats`` runs, made in alternating order; ``baseline_s=…`` is added with ``--baseline-src``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "bf16", "asimd")
"""The CPU flags that decide the CPU backend and precision (printed with the CPU's model)."""


def cpu_line() -> str:
    """``cpu: <model name> (family F model M); flags: …`` from /proc/cpuinfo (``?`` where it is not there)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    name = f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"
    return f"cpu: {name}, {os.cpu_count()} cpus; flags: {' '.join(f for f in CPU_FLAGS if f in flags) or '-'}"


def make_model(folder: Path) -> Path:
    """Random full-size htdemucs weights as ``<sig>-<sha256[:8]>.th`` (the official name pattern)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoints import random_state, reference_kwargs, save_th
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = reference_kwargs()
    folder.mkdir(parents=True, exist_ok=True)
    path = save_th(folder / "random.th", kwargs, random_state(HTDemucs(config_from_kwargs(kwargs))))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return path.rename(folder / f"beefcafe-{digest}.th")


def make_tracks(folder: Path, count: int, seconds: float, kinds: str) -> list[Path]:
    """``count`` stereo tracks (tones and noise with a slow envelope), WAV, MP3 or both in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        t = np.arange(int(seconds * SR)) / SR
        env = 0.3 + 0.2 * np.sin(2 * np.pi * 0.2 * t + i)
        tone = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)
        audio = (env * tone)[:, None] + 0.05 * rng.standard_normal((t.size, 2))
        ext = {"wav": "wav", "mp3": "mp3"}.get(kinds) or ("wav" if i % 2 == 0 else "mp3")
        path = folder / f"track{i:02d}.{ext}"
        sf.write(
            str(path), (0.5 * audio).astype(np.float32), SR, **({"format": "MP3"} if ext == "mp3" else {})
        )
        paths.append(path)
    return paths


def timed(command: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} … failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tracks", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=180.0, help="length of each track")
    parser.add_argument("--inputs", choices=["wav", "mp3", "mixed"], default="wav")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    parser.add_argument(
        "--precision", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
        help="ours' (and the baseline's) --precision; demucs runs float32",
    )  # fmt: skip
    parser.add_argument("--cpu-backend", default=None, help="ours' STEMSPLIT_CPU_BACKEND (auto if unset)")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also time the stemsplit command of another checkout's src/ (e.g. an older commit) in the same run",
    )
    parser.add_argument("--jobs", type=int, default=None, help="CPU threads for both commands")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="run every command this many times, best of")
    parser.add_argument("--work", type=Path, default=None, help="folder for models, tracks and stems")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-folder-"))
    model = make_model(work / "models")
    tracks = make_tracks(work / "in", args.tracks, args.seconds, args.inputs)
    audio_s = args.tracks * args.seconds
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env["STEMSPLIT_CACHE_DIR"] = str(work / "cache")
    if args.jobs:
        env["OMP_NUM_THREADS"] = str(args.jobs)
    ours_env = {**env, **({"STEMSPLIT_CPU_BACKEND": args.cpu_backend} if args.cpu_backend else {})}
    print(
        f"device={args.device} tracks={args.tracks} x {args.seconds:g} s ({args.inputs}), work={work}, "
        f"ours: --precision {args.precision}, STEMSPLIT_CPU_BACKEND={args.cpu_backend or 'auto'}",
        flush=True,
    )
    print(cpu_line(), flush=True)

    probe = work / "busy.json"
    ours = [sys.executable, str(ROOT / "benchmarks" / "_busy_probe.py"), str(probe), "--", str(work / "in")]
    ours += ["-n", str(model), "-o", str(work / "ours"), "-d", args.device, "--overwrite", "-q"]
    ours += ["--compile", args.compile, "--precision", args.precision]
    ours += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    commands: dict[str, tuple[list[str], dict[str, str]]] = {"ours": (ours, ours_env)}
    if args.baseline_src:
        baseline = [sys.executable, "-m", "stemsplit", str(work / "in"), "-n", str(model)]
        baseline += ["-o", str(work / "baseline"), "-d", args.device, "--overwrite", "-q"]
        baseline += ["--precision", args.precision]
        commands["baseline"] = (baseline, {**env, "PYTHONPATH": str(args.baseline_src.resolve())})
    if not args.skip_reference:
        reference = [
            sys.executable,
            "-m",
            "demucs",
            "--repo",
            str(model.parent),
            "-n",
            model.name.split("-")[0],
        ]
        reference += ["-o", str(work / "demucs"), "-d", args.device, "--shifts", "0", *map(str, tracks)]
        commands["demucs"] = (reference, env)

    best = {name: float("inf") for name in commands}
    busy = float("nan")
    for repeat in range(args.repeats):  # alternate the order, so that a change of load hits every command
        names = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        for name in names:
            command, command_env = commands[name]
            seconds = timed(command, command_env)
            note = ""
            if name == "ours":
                run_busy = json.loads(probe.read_text())["busy_s"]
                note = f"  device busy {run_busy / seconds:.0%}"
                if seconds < best[name]:
                    busy = run_busy
            best[name] = min(best[name], seconds)
            print(f"{name:8s} {seconds:8.2f} s  {audio_s / seconds:8.1f}x real time{note}", flush=True)
    ours_s = best["ours"]
    demucs_s = best.get("demucs", float("nan"))
    print(
        f"device={args.device} tracks={args.tracks} audio_s={audio_s:g} ours_s={ours_s:.2f} "
        f"demucs_s={demucs_s:.2f} speedup={demucs_s / ours_s:.3f} device_busy={busy / ours_s:.3f}"
        + (f" baseline_s={best['baseline']:.2f}" if "baseline" in best else "")
    )


if __name__ == "__main__":
    main()
