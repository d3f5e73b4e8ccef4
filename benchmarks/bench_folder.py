"""Benchmark: the ``stemsplit`` command end to end on a folder of tracks, against the ``demucs`` command.

Both commands separate the same generated tracks with the same random full-size ``htdemucs`` weights (one
official-format ``.th`` file, loaded by ours with ``-n FILE`` and by demucs with ``--repo DIR -n SIG``), one
after the other in the same run, each as a fresh process (start-up, model loading, decoding and writing
included). demucs runs with ``--shifts 0`` so that both do one pass. Ours runs through
``benchmarks/_busy_probe.py``, which measures how long the device computed (CUDA events, or wall time of the
model calls on the CPU); ``device_busy`` is that time over ours' wall time.

Usage::

    python benchmarks/bench_folder.py --device cpu --tracks 2 --seconds 30
    python benchmarks/bench_folder.py --device cuda --tracks 10 --seconds 180 --compile off,auto

``--compile off,auto`` times ours once per setting (in that order, demucs after the first). Every command's
time is printed as a machine-readable line the moment it is measured
(``device=… step=folder run=… compile=… seconds=… xrt=…``), and the last line sums up:
``device=… tracks=… audio_s=… ours_s=… demucs_s=… speedup=… median_speedup=… device_busy=…`` (ours_s: the
first ``--compile`` setting; each the best of ``--repeats`` runs, made in alternating order; speedup is
best over best, median_speedup the median of the repeats' own ratios, each repeat's two runs side by side;
``baseline_s=…`` is added with ``--baseline-src``, ``ours_<setting>_s=…`` for each further setting). No
other line starts with ``device=``.

``--warmup 1`` runs ours once before timing (not counted): the export and the compiled blobs are then in
the cache, as on a user's second run. ``--cold`` gives every run of ours an empty cache folder instead, so
each timed run is a first run (the export included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
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


SMALL = {"channels": 8, "bottom_channels": 0, "t_layers": 1, "t_heads": 2, "t_hidden_scale": 1.0}
"""``--network small``: a narrow htdemucs (the same code path), for a rehearsal on a CPU."""


def make_model(folder: Path, network: str = "full") -> Path:
    """Random htdemucs weights (full size, or :data:`SMALL`) as ``<sig>-<sha256[:8]>.th`` (the official name
    pattern)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoints import random_state, reference_kwargs, save_th
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = reference_kwargs(**(SMALL if network == "small" else {}))
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
    parser.add_argument(
        "--compile", default="auto", help="ours' --compile: auto, on, off, or several (off,auto), each timed"
    )
    parser.add_argument("--network", choices=["full", "small"], default="full", help="see SMALL")
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
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs of ours first (fills the cache)")
    parser.add_argument("--cold", action="store_true", help="an empty cache folder for every run of ours")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-folder-"))
    settings = args.compile.split(",")
    if any(c not in ("auto", "on", "off") for c in settings):
        parser.error(f"--compile: auto, on or off (comma-separated), got {args.compile}")
    model = make_model(work / "models", args.network)
    tracks = make_tracks(work / "in", args.tracks, args.seconds, args.inputs)
    audio_s = args.tracks * args.seconds
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env["STEMSPLIT_CACHE_DIR"] = str(work / "cache")
    if args.jobs:
        env["OMP_NUM_THREADS"] = str(args.jobs)
    ours_env = {**env, **({"STEMSPLIT_CPU_BACKEND": args.cpu_backend} if args.cpu_backend else {})}
    print(
        f"bench_folder on {args.device}: {args.tracks} x {args.seconds:g} s ({args.inputs}), work={work}, "
        f"ours: --precision {args.precision}, STEMSPLIT_CPU_BACKEND={args.cpu_backend or 'auto'}",
        flush=True,
    )
    print(cpu_line(), flush=True)

    probe = work / "busy.json"
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    for setting in settings:
        ours = [
            sys.executable,
            str(ROOT / "benchmarks" / "_busy_probe.py"),
            str(probe),
            "--",
            str(work / "in"),
        ]
        ours += ["-n", str(model), "-o", str(work / "ours"), "-d", args.device, "--overwrite", "-q"]
        ours += ["--compile", setting, "--precision", args.precision]
        ours += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        commands[f"ours_{setting}"] = (ours, ours_env)
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
    order = list(commands)  # the first of ours, demucs, then the rest: the most telling figure first
    if "demucs" in commands:
        order.remove("demucs")
        order.insert(1, "demucs")
        commands = {name: commands[name] for name in order}

    first = f"ours_{settings[0]}"
    for _ in range(args.warmup):
        for name in commands:
            if name.startswith("ours_"):
                timed(*commands[name])
    best = {name: float("inf") for name in commands}
    ratios: list[float] = []
    busy = float("nan")
    for repeat in range(args.repeats):  # alternate the order, so that a change of load hits every command
        names = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        this_repeat: dict[str, float] = {}
        for name in names:
            command, command_env = commands[name]
            if args.cold and name.startswith("ours_"):
                command_env = {**command_env, "STEMSPLIT_CACHE_DIR": str(work / f"cache-{name}-{repeat}")}
            seconds = this_repeat[name] = timed(command, command_env)
            note = ""
            fields = f"device={args.device} step=folder run={name.split('_')[0]} "
            if name.startswith("ours_"):
                run_busy = json.loads(probe.read_text())["busy_s"]
                note = f" device_busy={run_busy / seconds:.3f}"
                fields += f"compile={name.removeprefix('ours_')} "
                if name == first and seconds < best[name]:
                    busy = run_busy
            best[name] = min(best[name], seconds)
            print(f"{fields}seconds={seconds:.2f} xrt={audio_s / seconds:.1f}{note}", flush=True)
        if "demucs" in this_repeat:
            ratios.append(this_repeat["demucs"] / this_repeat[first])
            print(f"repeat {repeat + 1}: demucs/ours={ratios[-1]:.3f}", flush=True)
    ours_s = best[first]
    demucs_s = best.get("demucs", float("nan"))
    more = "".join(
        f" {name}_s={best[name]:.2f}" for name in best if name.startswith("ours_") and name != first
    )
    print(
        f"device={args.device} tracks={args.tracks} audio_s={audio_s:g} ours_s={ours_s:.2f} "
        f"demucs_s={demucs_s:.2f} speedup={demucs_s / ours_s:.3f} "
        f"median_speedup={statistics.median(ratios) if ratios else float('nan'):.3f} "
        f"device_busy={busy / ours_s:.3f}{more}"
        + (f" baseline_s={best['baseline']:.2f}" if "baseline" in best else "")
    )


if __name__ == "__main__":
    main()
