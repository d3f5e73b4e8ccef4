"""``stemsplit play`` and ``stemsplit mix``: time to a playing page, and mix time per minute of audio.

Self-contained: writes a track of four 16-bit WAV stems (noise and tones, as stemsplit writes stems) of
``--minutes`` into a temporary folder, then

* runs ``stemsplit play DIR --no-browser`` and drives Debian's headless chromium (Playwright,
  ``executable_path``; never ``playwright install``) to the page: the times from the command's start to the
  URL on stdout, to the page ready, and to the Position moving after Play (the page playing);
* runs ``stemsplit mix DIR -o mix.wav`` with tempo 1 / key 0 (the plain sum: the reference), tempo 0.8,
  key −2, and both, and gives each in seconds of wall time per minute of audio.

Usage::

    python benchmarks/bench_player.py [--minutes 5] [--repeat 2] [--skip-mix] [--skip-play]

Target (issue 31): a 5-minute song playable within 3 s of the page opening; a 60-minute set opens and plays.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def write_track(folder: Path, minutes: float) -> None:
    """Four 16-bit stereo WAV stems of ``minutes``, written a minute at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        name: sf.SoundFile(folder / f"{name}.wav", "w", SR, 2, "PCM_16")
        for name in ("drums", "bass", "other", "vocals")
    }
    total = round(minutes * 60 * SR)
    for start in range(0, total, 60 * SR):
        n = min(60 * SR, total - start)
        t = (start + np.arange(n)) / SR
        for k, handle in enumerate(files.values()):
            tone = 0.15 * np.sin(2 * np.pi * 110 * (k + 1) * t)
            handle.write((0.05 * rng.standard_normal((n, 2)) + tone[:, None]).astype(np.float32))
    for handle in files.values():
        handle.close()


def time_play(folder: Path, chromium: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stemsplit", "play", str(folder), "--no-browser", "-q"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = (proc.stdout.readline() if proc.stdout else "").strip()
        printed = time.perf_counter()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page()
            opened = time.perf_counter()  # the browser's own start is not the player's
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            ready = time.perf_counter()
            page.get_by_role("button", name="Play", exact=True).click()
            position = page.get_by_role("slider", name="Position", exact=True)
            while float(position.input_value()) <= 0.0:
                page.wait_for_timeout(20)
            playing = time.perf_counter()
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        stop = time.perf_counter()
        proc.wait(30)
        stopped = time.perf_counter() - stop
    return {
        "URL printed": printed - start,
        "page open → ready": ready - opened,
        "page open → playing": playing - opened,
        "Ctrl-C → exit": stopped,
    }


def time_mix(folder: Path, out: Path, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "stemsplit", "mix", str(folder), "-o", str(out), "-q", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-mix", action="store_true")
    parser.add_argument("--skip-play", action="store_true")
    opts = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "track"
        began = time.perf_counter()
        write_track(folder, opts.minutes)
        print(
            f"track: 4 stems × {opts.minutes:g} min, 16-bit WAV, written in {time.perf_counter() - began:.1f} s"
        )
        if not opts.skip_play:
            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            if chromium is None:
                print("play: no chromium (apt-get install chromium); skipped")
            else:
                for i in range(opts.repeat):
                    times = time_play(folder, chromium)
                    print(f"play run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
        if not opts.skip_mix:
            cases = {
                "sum (tempo 1, key 0; reference)": [],
                "tempo 0.8": ["--tempo", "0.8"],
                "key -2": ["--key", "-2"],
                "tempo 0.8 + key -2": ["--tempo", "0.8", "--key", "-2"],
            }
            for name, args in cases.items():
                best = min(time_mix(folder, Path(tmp) / "mix.wav", args) for _ in range(opts.repeat))
                print(
                    f"mix {name}: {best:.2f} s best of {opts.repeat}, {best / opts.minutes:.2f} s per minute of audio"
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
