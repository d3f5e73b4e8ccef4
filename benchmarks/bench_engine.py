"""Benchmark: stemsplit's engine against demucs 4.1.0 ``apply_model`` on the same random full-size weights.

Usage::

    python benchmarks/bench_engine.py --seconds 60                 # real model, speed + equality (~2 min/2 cores)
    python benchmarks/bench_engine.py --seconds 60 --repeats 3 --also-torch --unit-scales  # + torch CPU backend
    python benchmarks/bench_engine.py --seconds 20 --memory-minutes 5 60 --reference-memory-minutes 5 15
    python benchmarks/bench_engine.py --model hdemucs_mmi --seconds 60 --repeats 2 --profile-context
    python benchmarks/bench_engine.py --device cuda --seconds 600 --gpu-step eager --precisions float16

Parts:

1. **Real model** (one process): the full-size ``htdemucs`` architecture with random weights (seed 0) on a
   synthetic stereo track of ``--seconds``. Runs ours with ``--precision`` (default auto), ours in float32 (if
   auto chose something else), then the reference (``apply_model(shifts=0, split=True, overlap=0.25)`` with
   ``Separator``'s normalisation). Wall times, SNR / max abs difference against the reference, and the peak
   resident memory of each phase (sampled from /proc every 5 ms; includes torch and the model).
   With ``--model hdemucs_mmi``: the full-size Hybrid Demucs architecture instead (random weights), in the
   registry's bag (44-s windows, a short last one at its own length; the reference as ``BagOfModels(segment=44)``),
   and our ``htdemucs`` in float32 on the same track in the same run, for the speed relative to it
   (``models list``). ``--profile-context`` adds one profiled run of each side (torch profiler; the BiLSTM
   and local-attention blocks are marked with ``record_function`` from forward hooks) and prints the time
   spent in each kind of block.
2. **Memory with a stand-in model** (one subprocess per measurement, run first; peak RSS sampled from /proc): a cheap
   callable with the HT interface (343,980-sample windows, 4 stems) replaces the network so that hour-long
   tracks run in seconds; ours streams the track from a block generator to a discarding sink (the pipeline's
   situation), the reference holds it as a tensor (its only mode). Clearly labelled "stand-in".

``--gpu-step eager|matrix|compiled`` is one step of ``benchmarks/gpu_check.sh`` (see :func:`gpu_step`): every
figure is printed as a row and a ``device=… step=…`` line the moment it is measured.

Otherwise the last line is machine-readable:
``device=cpu seconds=60 ours_s=… demucs_s=… speedup=… ours_peak_rss_mb=… demucs_peak_rss_mb=…``.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers that build the reference networks

from engine_models import reference_separate  # noqa: E402  (tests/: the parity reference's arithmetic)
from stemsplit.inference import (  # noqa: E402
    EngineOptions,
    ModelBag,
    choose_precision,
    resolve_device,
    resolve_dtype,
    separate_stream,
    separate_tensor,
    stats_from_blocks,
)
from stemsplit.inference.devices import PRECISION_FLAGS, cpu_flags  # noqa: E402

SR = 44100
SEGMENT = 343980
SOURCES = ("drums", "bass", "other", "vocals")
BLOCK = 262144


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``?`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "?"


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum since ``start``."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self) -> PeakRss:
        self.peak = self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def synthetic_blocks(seconds: float, seed: int = 0) -> Iterator[torch.Tensor]:
    """A deterministic stereo 'track' as (2, n) blocks: noise with a slow envelope, never held whole."""
    total = int(seconds * SR)
    g = torch.Generator().manual_seed(seed)
    for start in range(0, total, BLOCK):
        n = min(BLOCK, total - start)
        t = torch.arange(start, start + n) / SR
        env = 0.2 + 0.15 * torch.sin(2 * torch.pi * 0.25 * t)
        yield torch.randn(2, n, generator=g) * env


def f32_out_of(best: dict[str, tuple[torch.Tensor, float, float]]) -> torch.Tensor:
    """Our float32 output: the ``f32`` run, or ``ours`` when auto is float32."""
    return best.get("f32", best["ours"])[0]


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, float]:
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
    return out, elapsed, rss.peak_mb


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    err = (ref - est).pow(2).sum()
    return float("inf") if err == 0 else float(10 * torch.log10(ref.pow(2).sum() / err))


HDEMUCS_WINDOW_S = 44  # hdemucs_mmi's bag segment (the registry's window)


def networks(name: str, *, unit_scales: bool = False) -> tuple[torch.nn.Module, ModelBag]:
    """The reference model (a demucs network or bag) and ours with the same random weights, as the registry
    runs ``name`` (``htdemucs`` or ``hdemucs_mmi``). With ``unit_scales`` the weights are the tests'
    ``random_state`` (layer scales 0.25-0.75) instead of demucs' initialisation (1e-4, which all but mutes the
    DConvs and the transformer, and so the differences they could make)."""
    from checkpoints import random_state
    from engine_models import make_reference_hdemucs, make_reference_htdemucs, stemsplit_twin

    if name == "htdemucs":
        model = make_reference_htdemucs(seed=0)  # the reference network (demucs)
        if unit_scales:
            model.load_state_dict(random_state(model))
        return model, ModelBag.single(stemsplit_twin(model))  # ours: the same weights
    from demucs.apply import BagOfModels

    hybrid = make_reference_hdemucs(seed=0)
    if unit_scales:
        hybrid.load_state_dict(random_state(hybrid))
    twin = stemsplit_twin(hybrid)
    window = HDEMUCS_WINDOW_S * SR
    bag = ModelBag((twin,), tuple(twin.sources), SR, 2, window, fixed_window=False)  # type: ignore[arg-type]
    return BagOfModels([hybrid], segment=HDEMUCS_WINDOW_S), bag


def real_model_run(args: argparse.Namespace) -> dict[str, float | str]:
    model, bag = networks(args.model, unit_scales=args.unit_scales)
    ht_bag = networks("htdemucs", unit_scales=args.unit_scales)[1] if args.model != "htdemucs" else None
    wav = torch.cat(list(synthetic_blocks(args.seconds)), dim=-1)
    device = resolve_device(args.device)
    auto_dtype = resolve_dtype(args.precision, device)
    rows: list[tuple[str, float, float, str]] = []

    exports = Path(tempfile.mkdtemp(prefix="bench_engine_exports_"))  # a cold OpenVINO export cache
    atexit.register(shutil.rmtree, exports, ignore_errors=True)  # 170 MB per export

    def ours(precision: str, backend: str | None = args.cpu_backend) -> torch.Tensor:
        opts = EngineOptions(
            device=device,
            precision=precision,  # type: ignore[arg-type]
            batch_size=args.batch_size,
            cpu_backend=backend,  # type: ignore[arg-type]
            compile_cache_dir=exports,
        )
        return separate_tensor(bag, wav, options=opts)

    def reference() -> torch.Tensor:
        return reference_separate(model, wav if device.type == "cpu" else wav.to(device)).cpu()

    def htdemucs() -> torch.Tensor:
        assert ht_bag is not None
        opts = EngineOptions(
            device=device,
            precision="float32",
            batch_size=args.batch_size,
            cpu_backend=args.cpu_backend,  # type: ignore[arg-type]
            compile_cache_dir=exports,
        )
        return separate_tensor(ht_bag, wav, options=opts)

    # The machine may be shared: alternate ours / reference and keep each side's fastest repeat.
    best: dict[str, tuple[torch.Tensor, float, float]] = {}
    times: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        order = ["ours", "f32", "torch", "demucs", "ht"]
        for which in order if repeat % 2 == 0 else order[::-1]:
            if which == "f32" and auto_dtype == torch.float32:
                continue
            if which == "demucs" and args.skip_reference:
                continue
            if (which == "ht" and ht_bag is None) or (which == "torch" and not args.also_torch):
                continue
            fn = {
                "ours": lambda: ours(args.precision),
                "f32": lambda: ours("float32"),
                "torch": lambda: ours("float32", "torch"),
                "demucs": reference,
                "ht": htdemucs,
            }[which]
            out, secs, mb = timed(fn)
            times.setdefault(which, []).append(secs)
            if which not in best or secs < best[which][1]:
                best[which] = (out, secs, max(mb, best.get(which, (None, 0.0, 0.0))[2]))
    ours_out, ours_s, ours_mb = best["ours"]
    rows.append(
        (f"ours precision={args.precision} ({str(auto_dtype).removeprefix('torch.')})", ours_s, ours_mb, "")
    )
    f32_out, f32_s, _ = best.get("f32", best["ours"])
    if "f32" in best:
        rows.append(("ours precision=float32", f32_s, best["f32"][2], ""))
    results: dict[str, float | str] = {"ours_s": ours_s, "ours_peak_rss_mb": ours_mb, "ours_f32_s": f32_s}
    if "torch" in best:
        rows.append(("ours precision=float32, cpu backend torch", best["torch"][1], best["torch"][2], ""))
        results["ours_f32_torch_s"] = best["torch"][1]
        results["max_abs_f32_vs_torch"] = float((f32_out_of(best) - best["torch"][0]).abs().max())
    if "f32" in best:  # reduced precision against our own float32 (no reference run needed)
        results["snr_vs_float32_db"] = snr_db(f32_out, ours_out)
    if "demucs" in best:
        ref_out, demucs_s, demucs_mb = best["demucs"]
        rows.append(("demucs 4.1.0 apply_model", demucs_s, demucs_mb, ""))
        results |= {"demucs_s": demucs_s, "demucs_peak_rss_mb": demucs_mb}
        results["max_abs_f32"] = float((f32_out - ref_out).abs().max())
        results["snr_auto_db"] = snr_db(ref_out, ours_out)
    if "ht" in best:
        _, ht_s, ht_mb = best["ht"]
        rows.append(("ours htdemucs, float32 (same track)", ht_s, ht_mb, ""))
        results |= {"htdemucs_s": ht_s, "speed_vs_htdemucs": ht_s / f32_s}
    print(f"\nreal model (full-size {args.model}, random weights), {args.seconds:g} s track, device={device}")
    print(
        "every repeat, seconds: "
        + "; ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items())
    )
    print(f"{'run':<44}{'seconds':>10}{'x realtime':>12}{'peak RSS MB':>13}")
    for name, secs, mb, _ in rows:
        print(f"{name:<44}{secs:>10.2f}{args.seconds / secs:>12.2f}{mb:>13.0f}")
    if "snr_vs_float32_db" in results:
        print(f"SNR({args.precision} vs float32)={results['snr_vs_float32_db']:.1f} dB")
    if "ours_f32_torch_s" in results:
        print(
            f"float32 speedup of the chosen cpu backend over torch: {results['ours_f32_torch_s'] / f32_s:.3f}x, "
            f"max|chosen - torch|={results['max_abs_f32_vs_torch']:.3g}"
        )
        if "demucs_s" in results:
            print(f"speedup float32 torch backend={results['demucs_s'] / results['ours_f32_torch_s']:.3f}x")
    if "demucs_s" in results:
        print(
            f"speedup auto={results['demucs_s'] / ours_s:.3f}x  float32={results['demucs_s'] / f32_s:.3f}x  "
            f"max|float32 - reference|={results['max_abs_f32']:.3g}  SNR(auto vs reference)={results['snr_auto_db']:.1f} dB"
        )
    if "speed_vs_htdemucs" in results:
        print(f"{args.model} float32 is {results['speed_vs_htdemucs']:.2f}x as fast as our htdemucs float32")
    if args.profile_context:
        context_profile(model, bag, wav, device)
    return results


def context_profile(
    reference: torch.nn.Module, bag: ModelBag, wav: torch.Tensor, device: torch.device
) -> None:
    """One profiled float32 run of each side: the time inside the BiLSTM and the local-attention blocks
    (marked by ``record_function`` from forward hooks), and the busiest operators."""
    from demucs.demucs import BLSTM as ReferenceBLSTM
    from demucs.demucs import LocalState as ReferenceLocalState
    from torch.profiler import profile, record_function

    from stemsplit.model.context import BLSTM, LocalState

    kinds = {"BLSTM": (BLSTM, ReferenceBLSTM), "LocalState": (LocalState, ReferenceLocalState)}
    for network in (reference, *bag.models):
        for module in network.modules():  # type: ignore[union-attr]
            for name, types in kinds.items():
                if isinstance(module, types):
                    marks: list[record_function] = []
                    module.register_forward_pre_hook(
                        lambda _m, _i, marks=marks, name=name: marks.append(record_function(name).__enter__())
                    )
                    module.register_forward_hook(
                        lambda _m, _i, _o, marks=marks: marks.pop().__exit__(None, None, None)
                    )
    runs = {
        "ours float32": lambda: separate_tensor(
            bag, wav, options=EngineOptions(device=device, precision="float32")
        ),
        "demucs 4.1.0": lambda: reference_separate(reference, wav),
    }
    print(f"\n{'profiled run (float32)':<24}{'total s':>9}{'BiLSTM s':>10}{'attention s':>13}{'both %':>8}")
    tables = {}
    for label, fn in runs.items():
        with profile() as prof:
            t0 = time.perf_counter()
            fn()
            total = time.perf_counter() - t0
        averages = prof.key_averages()
        spent = {e.key: e.cpu_time_total / 1e6 for e in averages if e.key in kinds}
        lstm, attention = spent.get("BLSTM", 0.0), spent.get("LocalState", 0.0)
        print(
            f"{label:<24}{total:>9.2f}{lstm:>10.2f}{attention:>13.2f}{100 * (lstm + attention) / total:>7.1f}%"
        )
        tables[label] = averages.table(sort_by="self_cpu_time_total", row_limit=8)
    for label, table in tables.items():
        print(f"\n{label}: busiest operators\n{table}")


class StandIn(torch.nn.Module):
    """A cheap model with the HT interface: (B, 2, T) -> (B, 4, 2, T), T padded to 343,980 like HT models."""

    def __init__(self) -> None:
        super().__init__()
        self.sources = list(SOURCES)
        self.samplerate = SR
        self.audio_channels = 2
        self.segment = Fraction(39, 5)

    def valid_length(self, length: int) -> int:
        return SEGMENT

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=mix.dtype)[None, :, None, None]
        return mix[:, None] * scale


def memory_worker(which: str, minutes: float) -> None:
    """Subprocess body: separate ``minutes`` of audio with the stand-in; print JSON with ru_maxrss."""
    seconds = minutes * 60
    model = StandIn()
    rss = PeakRss().__enter__()  # ru_maxrss would include the parent's RSS inherited at fork
    t0 = time.perf_counter()
    if which == "ours":
        stats = stats_from_blocks(synthetic_blocks(seconds))  # the cheap first pass
        bag = ModelBag((model,), SOURCES, SR, 2, SEGMENT)
        sink_sum = [0.0]
        separate_stream(
            bag,
            synthetic_blocks(seconds),
            lambda b: sink_sum.__setitem__(0, sink_sum[0] + float(b[0, 0, 0])),
            stats=stats,
            options=EngineOptions(device="cpu", batch_size=1),
        )
    else:
        wav = torch.cat(list(synthetic_blocks(seconds)), dim=-1)
        reference_separate(model, wav)
    elapsed = time.perf_counter() - t0
    rss.__exit__()
    print(json.dumps({"which": which, "minutes": minutes, "seconds": elapsed, "peak_mb": rss.peak_mb}))


def memory_runs(args: argparse.Namespace) -> None:
    jobs = [("ours", m) for m in args.memory_minutes] + [("demucs", m) for m in args.reference_memory_minutes]
    if not jobs:
        return
    print("\nmemory, STAND-IN model (cheap callable with the HT interface), one subprocess each, peak RSS")
    print(f"{'run':<44}{'minutes':>10}{'wall s':>12}{'peak RSS MB':>13}")
    for which, minutes in jobs:
        proc = subprocess.run(
            [sys.executable, __file__, "--_memory-worker", which, str(minutes)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        name = "ours (streamed, stand-in)" if which == "ours" else "demucs apply_model (stand-in)"
        print(f"{name:<44}{minutes:>10g}{r['seconds']:>12.1f}{r['peak_mb']:>13.0f}", flush=True)


def result_line(**fields: object) -> None:
    """Print one machine-readable result line (``device=… step=… key=value …``) at once."""
    print(
        " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()),
        flush=True,
    )


class GpuBench:
    """What the GPU steps share: the device, the network (random weights, seed 0), the track, the batch size.

    ``--network small`` is a narrow HT Demucs (the same code path), for a rehearsal on a CPU.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from engine_models import make_reference_htdemucs, make_small_reference_htdemucs, stemsplit_twin
        from stemsplit.inference import devices

        self.args = args
        self.device = resolve_device(args.device)
        self.cuda = self.device.type == "cuda"
        small = args.network == "small"
        self.model = make_small_reference_htdemucs(seed=0) if small else make_reference_htdemucs(seed=0)
        self.bag = ModelBag.single(stemsplit_twin(self.model))
        self.wav = torch.cat(list(synthetic_blocks(args.seconds)), dim=-1)
        self.auto = str(resolve_dtype("auto", self.device)).removeprefix("torch.")
        self.batch = args.batch_size or devices.auto_batch_size(
            self.device, resolve_dtype("auto", self.device), self.bag.segment_samples
        )
        print(
            f"gpu bench: {args.seconds:g} s track on {self.device}, {args.network} network, "
            f"auto precision {self.auto}, batch size {self.batch}",
            flush=True,
        )

    def measure(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, float]:
        """``fn()``, its wall seconds (the device finished) and the peak device memory in GiB (CUDA)."""
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else float("nan")
        return out, time.perf_counter() - t0, peak

    def ours(self, precision: str, *, compile_: bool = False) -> torch.Tensor:
        """Our engine on the track; ``tf32`` is float32 with TensorFloat-32 left on (the process default)."""
        from contextlib import nullcontext

        from stemsplit.inference import devices

        opts = EngineOptions(
            device=self.device,
            precision="float32" if precision == "tf32" else precision,  # type: ignore[arg-type]
            batch_size=self.batch,
            compile=compile_,
            cpu_backend="torch",
        )
        if precision != "tf32":
            return separate_tensor(self.bag, self.wav, options=opts)
        saved = devices._ieee_float32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        devices._ieee_float32 = nullcontext  # type: ignore[assignment]
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            return separate_tensor(self.bag, self.wav, options=opts)
        finally:
            devices._ieee_float32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (
                saved
            )

    def warm_then_measure(self, precision: str) -> tuple[torch.Tensor, float, float]:
        """One untimed run of the whole track (cuDNN autotuning of every batch shape, the allocator), then
        one timed run."""
        self.ours(precision)
        return self.measure(lambda: self.ours(precision))


def gpu_step(args: argparse.Namespace) -> None:
    """One step of ``benchmarks/gpu_check.sh``; every figure is printed (a row and a result line) the moment
    it is measured, so a step cut short by its time limit keeps what it had.

    * ``eager``: our engine in the first of ``--precisions``, eager;
    * ``matrix``: each of ``--precisions`` eager (float32 with TF32 off, ``tf32``, float16, bfloat16), with
      its SNR against our float32, then demucs 4.1.0 ``apply_model`` on the same weights;
    * ``compiled``: the engine compiled in the first of ``--precisions``, in two fresh processes sharing one
      on-disk Inductor cache (cold, then warm).
    """
    bench = GpuBench(args)
    common = {"device": bench.device.type, "network": args.network, "seconds": args.seconds}
    header = f"{'run':<44}{'seconds':>9}{'x realtime':>12}{'SNR dB':>9}{'peak GiB':>10}"

    def row(name: str, secs: float, snr: float, mem: float) -> None:
        print(f"{name:<44}{secs:>9.2f}{args.seconds / secs:>12.1f}{snr:>9.1f}{mem:>10.2f}", flush=True)

    if args.gpu_step == "eager":
        precision = args.precisions.split(",")[0]
        _, secs, mem = bench.warm_then_measure(precision)
        print(header)
        row(f"ours {precision} eager", secs, float("nan"), mem)
        result_line(
            **common, step="engine", precision=precision, compile="off", batch=bench.batch,
            ours_s=secs, xrt=args.seconds / secs, peak_gib=mem,
        )  # fmt: skip
    elif args.gpu_step == "matrix":
        print(header)
        exact, f32_s, f32_mem = bench.warm_then_measure("float32")
        row("ours float32 (TF32 off) eager", f32_s, float("inf"), f32_mem)
        result_line(**common, step="matrix", precision="float32", ours_s=f32_s, xrt=args.seconds / f32_s)
        for name in args.precisions.split(","):
            if name == "float32":
                continue
            out, secs, mem = bench.warm_then_measure(name)
            snr = snr_db(exact, out)
            row(f"ours {name} eager", secs, snr, mem)
            result_line(
                **common, step="matrix", precision=name, ours_s=secs, xrt=args.seconds / secs,
                snr_vs_float32_db=snr, peak_gib=mem,
            )  # fmt: skip
        model = bench.model.to(bench.device)
        ref, demucs_s, demucs_mem = bench.measure(
            lambda: reference_separate(model, bench.wav.to(bench.device)).cpu()
        )
        row("demucs 4.1.0 apply_model", demucs_s, snr_db(exact, ref), demucs_mem)
        result_line(
            **common, step="matrix", precision="demucs_apply_model", demucs_s=demucs_s,
            xrt=args.seconds / demucs_s, max_abs_vs_ours_float32=f"{float((exact - ref).abs().max()):.3g}",
        )  # fmt: skip
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.cuda else [])
            with profile(activities=activities) as prof:
                bench.ours(bench.auto)
            key = "cuda_time_total" if bench.cuda else "cpu_time_total"
            print(prof.key_averages().table(sort_by=key, row_limit=20))
    else:
        compiled_runs(args, args.precisions.split(",")[0], common)


def compiled_runs(args: argparse.Namespace, precision: str, common: dict[str, object]) -> None:
    """The compiled engine in two fresh processes sharing one on-disk Inductor cache: cold, then warm; each
    printed as it ends."""
    cache = tempfile.mkdtemp(prefix="bench_engine_inductor_")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    for label in ("cold", "warm"):
        command = [sys.executable, __file__, "--_compiled-worker", precision, "--device", args.device]
        command += ["--seconds", str(args.seconds), "--network", args.network]
        command += ["--compile-backend", args.compile_backend]
        command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"compile, {label} cache: first run {r['first_s']:.1f} s (compiling), then {r['steady_s']:.2f} s"
        )
        result_line(
            **common, step="compiled", precision=precision, backend=args.compile_backend, cache=label,
            first_s=r["first_s"],
            ours_s=r["steady_s"], xrt=args.seconds / r["steady_s"], snr_vs_float32_db=r["snr_db"],
            peak_gib=r["peak_gib"],
        )  # fmt: skip


def compiled_worker(args: argparse.Namespace, precision: str) -> None:
    """Subprocess body of :func:`compiled_runs`: the first compiled run (compiling), a second one and our
    float32 eager (for the SNR)."""
    if args.compile_backend != "inductor":  # a rehearsal of the step: Dynamo's tracing, not Inductor's code
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)  # type: ignore[assignment]
    bench = GpuBench(args)
    times, outs, peak = [], [], float("nan")
    for compile_ in (True, True, False):
        out, secs, mem = bench.measure(
            lambda c=compile_: bench.ours(precision if c else "float32", compile_=c)
        )
        times.append(secs)
        outs.append(out)
        if compile_:
            peak = mem
    print(
        json.dumps(
            {"first_s": times[0], "steady_s": times[1], "snr_db": snr_db(outs[2], outs[1]), "peak_gib": peak}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="track length for the real-model run")
    parser.add_argument(
        "--model", default="htdemucs", choices=["htdemucs", "hdemucs_mmi"], help="architecture"
    )
    parser.add_argument(
        "--profile-context", action="store_true", help="profile the BiLSTM and local attention (hdemucs_mmi)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--cpu-backend", default=None, choices=["auto", "torch", "openvino"], help="ours' CPU backend"
    )
    parser.add_argument(
        "--also-torch", action="store_true", help="also run ours in float32 with the torch CPU backend"
    )
    parser.add_argument(
        "--unit-scales", action="store_true", help="weights with unit-order layer scales (see networks())"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternate ours/reference this many times")
    parser.add_argument("--memory-minutes", type=float, nargs="*", default=[], help="stand-in runs of ours")
    parser.add_argument("--reference-memory-minutes", type=float, nargs="*", default=[])
    parser.add_argument("--_memory-worker", nargs=2, metavar=("WHICH", "MINUTES"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--gpu-step", choices=["eager", "matrix", "compiled"], help="one step of gpu_check.sh (see gpu_step)"
    )
    parser.add_argument("--network", choices=["full", "small"], default="full", help="with --gpu-step")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="with --gpu-step compiled: torch.compile's backend (aot_eager: a quick rehearsal on a CPU)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="with --gpu-step matrix: a torch profiler table"
    )
    parser.add_argument(
        "--precisions",
        default="float32,tf32,float16,bfloat16",
        help="with --gpu-step eager/matrix: which to run",
    )
    parser.add_argument("--_compiled-worker", metavar="PRECISION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_worker:
        memory_worker(args._memory_worker[0], float(args._memory_worker[1]))
        return
    if args._compiled_worker:
        compiled_worker(args, args._compiled_worker)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"cpu: {cpu_model_name()}; flags: {' '.join(f for f in PRECISION_FLAGS if f in cpu_flags()) or '-'}"
    )
    print(
        f"precision {args.precision} on {args.device}: {choose_precision(args.precision, resolve_device(args.device)).why}"
    )
    from stemsplit.inference.cpu_backend import resolve_cpu_backend

    for dtype in (resolve_dtype(args.precision, resolve_device(args.device)), torch.float32):
        choice = resolve_cpu_backend(args.cpu_backend, dtype)
        print(f"cpu backend in {str(dtype).removeprefix('torch.')}: {choice.name} ({choice.why})")
    if args.gpu_step:
        gpu_step(args)
        return
    memory_runs(args)
    results = real_model_run(args)
    speedup = results.get("demucs_s", float("nan")) / float(results["ours_s"])  # type: ignore[operator]
    relative = (
        f"speed_vs_htdemucs={float(results['speed_vs_htdemucs']):.2f} " if "htdemucs_s" in results else ""
    )
    print(
        f"device={args.device} model={args.model} seconds={args.seconds:g} ours_s={float(results['ours_s']):.2f} "
        f"ours_f32_s={float(results['ours_f32_s']):.2f} {relative}"
        f"demucs_s={float(results.get('demucs_s', float('nan'))):.2f} speedup={speedup:.3f} "
        f"ours_peak_rss_mb={float(results['ours_peak_rss_mb']):.0f} "
        f"demucs_peak_rss_mb={float(results.get('demucs_peak_rss_mb', float('nan'))):.0f}"
    )


if __name__ == "__main__":
    main()
