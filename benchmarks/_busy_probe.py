"""Run the ``stemsplit`` command in this process and measure how long its device computed (benchmarks only).

Usage: ``python benchmarks/_busy_probe.py RESULT.json -- STEMSPLIT ARGS...``. The device time is measured
around every model call of every runner: CUDA events on the device's stream (summed after the run), or
wall time on the CPU, where the calls are synchronous. Nothing in stemsplit is changed but this
instrumentation, installed before the command runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stemsplit.inference import runner as runner_module  # noqa: E402

_events: list[tuple[Any, Any]] = []
_cpu_s = [0.0]
_run = runner_module.DeviceRunner._run


def _timed_run(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    if self.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = _run(self, *args, **kwargs)
        end.record()
        _events.append((start, end))
        return out
    t0 = time.perf_counter()
    out = _run(self, *args, **kwargs)
    _cpu_s[0] += time.perf_counter() - t0
    return out


def main() -> None:
    result, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: _busy_probe.py RESULT.json -- ARGS..."
    runner_module.DeviceRunner._run = _timed_run  # type: ignore[method-assign]
    from stemsplit.cli import main as stemsplit

    t0 = time.perf_counter()
    code: int | str | None = 0
    sys.argv = ["stemsplit", *argv]  # run as the console script runs (main() with no argv: its exit included)
    try:
        stemsplit()
    except SystemExit as exit_:
        code = exit_.code
    wall = time.perf_counter() - t0
    if _events:
        torch.cuda.synchronize()
    busy = _cpu_s[0] + sum(s.elapsed_time(e) for s, e in _events) / 1000
    Path(result).write_text(json.dumps({"busy_s": busy, "wall_in_process_s": wall, "exit": code}))
    sys.exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    main()
