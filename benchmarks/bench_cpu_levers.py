"""Benchmark: CPU levers for the float32 trunk of one full-size window (issue 15), each against eager float32.

Usage::

    python benchmarks/bench_cpu_levers.py                        # every lever, best of 3
    python benchmarks/bench_cpu_levers.py --levers eager,ort,openvino --repeats 5
    python benchmarks/bench_cpu_levers.py --profile              # torch profiler table of the eager forward

One window (343,980 samples, full-size ``htdemucs`` architecture, random weights, seed 0) goes through
``analyse``; each lever then runs the trunk (both U-Nets and the transformer, the part between ``analyse``
and ``synthesise``) on the same inputs, interleaved over ``--repeats`` rounds, best of the rounds. Each row
prints seconds, the ratio to eager with the same thread count, the max abs difference of the trunk outputs
against eager float32 (normalised units) and a one-off setup cost (export, freeze, compile). ``full`` rows
time the whole window (analyse + trunk + synthesise).

Levers (``--levers``, comma-separated; default all but ``compile``):

* ``eager``: the model as it ships, ``--threads`` intra-op threads (the baseline); ``eager1``: one thread.
* ``branches``: the frequency and time branches of the encoders and decoders in two Python threads, one
  intra-op thread each (the transformer, which joins them, with both threads); ``windows2``: two windows at
  once, one per Python thread with one intra-op thread each (throughput per window).
* ``jit``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference`` (oneDNN
  prepacked convolutions and fused ops).
* ``channels_last``: the 2-D convolutions' weights and activations in channels-last layout.
* ``freq_matmul``: the (8 x 1) frequency convolutions of the encoders written as unfold + matrix product.
* ``gn_transposed``: the transformer's output GroupNorm as before issue 15, with a transposed copy on each
  side (the model now runs it without them: the "copies" lever, adopted).
* ``ort``: the trunk exported to ONNX (``torch.onnx.export``), run by ONNX Runtime's CPU provider with all
  graph optimisations; ``openvino``: the same ONNX file compiled by OpenVINO with an f32 inference hint.
* ``compile``: ``torch.compile`` of the trunk, cold (fresh Inductor cache) and warm, each in a subprocess
  (needs a C++ compiler).
* ``bf16``: eager trunk under CPU autocast to bfloat16 (what ``--precision auto`` picks on AMX CPUs); its
  difference is not a float32 lever's and is reported as SNR too.

The last line is machine-readable: ``lever=seconds/maxabs`` pairs.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_folder import cpu_line  # noqa: E402

from stemsplit.inference import cpu_backend  # noqa: E402
from stemsplit.model import HTDemucs  # noqa: E402
from stemsplit.model.layers import EncoderLayer  # noqa: E402

Pair = tuple[torch.Tensor, torch.Tensor]
Trunk = Callable[[torch.Tensor, torch.Tensor], Pair]


UNIT_SCALES = False
"""``--unit-scales``: every model built with the tests' ``random_state`` (layer scales 0.25-0.75)."""


def build(seed: int = 0) -> HTDemucs:
    """Our full-size ``htdemucs`` with the reference's random weights (seed 0, as bench_engine uses), or with
    unit-order layer scales (``--unit-scales``: demucs' 1e-4 initialisation mutes the DConvs and the
    transformer, and with them the differences a lever could make there)."""
    from checkpoints import random_state
    from engine_models import make_reference_htdemucs, stemsplit_twin

    reference = make_reference_htdemucs(seed=seed)
    if UNIT_SCALES:
        reference.load_state_dict(random_state(reference))
    model = stemsplit_twin(reference)
    assert isinstance(model, HTDemucs)
    return model


def window(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(1, 2, 343980, generator=g)


@contextlib.contextmanager
def threads(n: int) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def max_abs(a: Pair, b: Pair) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def snr_db(ref: Pair, est: Pair) -> float:
    err = sum(float((x - y).double().pow(2).sum()) for x, y in zip(ref, est, strict=True))
    sig = sum(float(x.double().pow(2).sum()) for x in ref)
    return float("inf") if err == 0 else 10 * math.log10(sig / err)


# --- levers ---------------------------------------------------------------------------------------


def branches_trunk(model: HTDemucs, n_threads: int) -> Trunk:
    """Encoders and decoders of the two branches in two Python threads, one intra-op thread each."""
    cfg = model.config

    def run_pair(f_a: Callable[[], Any], f_b: Callable[[], Any]) -> tuple[Any, Any]:
        out: list[Any] = [None, None]
        errors: list[BaseException] = []

        def second() -> None:
            try:
                out[1] = f_b()
            except BaseException as err:  # pragma: no cover - surfaced below
                errors.append(err)

        t = threading.Thread(target=second)
        t.start()
        out[0] = f_a()
        t.join()
        if errors:
            raise errors[0]
        return out[0], out[1]

    def freq_encode(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for idx, encode in enumerate(model.encoder):
            x = encode(x)
            if idx == 0:
                rows = torch.arange(x.shape[-2])
                x = x + cfg.freq_emb * model.freq_emb(rows).t()[None, :, :, None]
            skips.append(x)
        return x, skips

    def time_encode(xt: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        skips, lengths = [], []
        for encode in model.tencoder:
            lengths.append(xt.shape[-1])
            xt = encode(xt)
            skips.append(xt)
        return xt, skips, lengths

    def trunk(x: torch.Tensor, xt: torch.Tensor) -> Pair:
        torch.set_num_threads(1)
        (x, skips), (xt, skips_t, lengths) = run_pair(lambda: freq_encode(x), lambda: time_encode(xt))
        torch.set_num_threads(n_threads)
        x, xt = model._bottleneck(x, xt)
        torch.set_num_threads(1)

        def freq_decode() -> torch.Tensor:
            y = x
            for decode in model.decoder:
                y = decode(y, skips.pop(), 0)
            return y

        def time_decode() -> torch.Tensor:
            y = xt
            for decode in model.tdecoder:
                y = decode(y, skips_t.pop(), lengths.pop())
            return y

        out = run_pair(freq_decode, time_decode)
        torch.set_num_threads(n_threads)
        return out

    return trunk


class TrunkOnly(torch.nn.Module):
    """The trunk as a module's forward (what tracing and exporting take)."""

    def __init__(self, model: HTDemucs) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> Pair:
        return self.model.trunk(x, xt)


def jit_trunk(model: HTDemucs, x: torch.Tensor, xt: torch.Tensor) -> Trunk:
    traced = torch.jit.trace(TrunkOnly(model).eval(), (x, xt), check_trace=False)
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    return frozen  # type: ignore[no-any-return]


def channels_last_trunk(model: HTDemucs) -> Trunk:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)

    def trunk(x: torch.Tensor, xt: torch.Tensor) -> Pair:
        return model.trunk(x.contiguous(memory_format=torch.channels_last), xt)

    return trunk


class _FreqMatmulConv(torch.nn.Module):
    """A (K x 1), stride (S, 1) Conv2d over frequency as unfold + one matrix product."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.k, self.s, self.p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        w = conv.weight.detach()  # (O, I, K, 1)
        self.weight = w[..., 0].reshape(w.shape[0], -1)  # (O, I*K)
        self.bias = conv.bias.detach() if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, _, T = x.shape
        x = F.pad(x, (0, 0, self.p, self.p))
        cols = x.unfold(2, self.k, self.s)  # (B, C, Fq', T, K)
        Fo = cols.shape[2]
        cols = cols.permute(0, 2, 3, 1, 4).reshape(B, Fo * T, C * self.k)  # (B, Fq'*T, C*K)
        y = cols @ self.weight.t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(B, Fo, T, -1).permute(0, 3, 1, 2)  # (B, O, Fq', T)


def freq_matmul_trunk(model: HTDemucs) -> Trunk:
    for layer in model.encoder:
        assert isinstance(layer, EncoderLayer)
        layer.conv = _FreqMatmulConv(layer.conv)  # type: ignore[arg-type]
    return model.trunk


def export_onnx(model: HTDemucs, x: torch.Tensor, xt: torch.Tensor, path: Path) -> float:
    """The shipped export (``stemsplit.inference.cpu_backend``), timed."""
    t0 = time.perf_counter()
    cpu_backend._export(model, (x, xt), path)
    return time.perf_counter() - t0


def ort_trunk(path: Path, n_threads: int) -> Trunk:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def trunk(x: torch.Tensor, xt: torch.Tensor) -> Pair:
        y, yt = session.run(None, {"x": x.numpy(), "xt": xt.numpy()})
        return torch.from_numpy(y), torch.from_numpy(yt)

    return trunk


def openvino_trunk(path: Path, n_threads: int, precision: str = "f32") -> Trunk:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(path),
        "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(n_threads)},
    )
    request = compiled.create_infer_request()

    def trunk(x: torch.Tensor, xt: torch.Tensor) -> Pair:
        result = request.infer({"x": x.numpy(), "xt": xt.numpy()})
        y, yt = (result[o] for o in compiled.outputs)
        return torch.from_numpy(y.copy()), torch.from_numpy(yt.copy())

    return trunk


def gn_transposed_trunk(model: HTDemucs) -> Trunk:
    """The transformer's output GroupNorm as it was before issue 15: ``group_norm`` on the transposed tokens
    and back (two copies). The model now normalises the contiguous tokens with ``layer_norm`` + the affine
    (the ``copies`` lever, adopted); this measures what that saved."""
    from stemsplit.model.transformer import TokenGroupNorm

    def forward(self: TokenGroupNorm, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.transpose(1, 2), 1, self.weight, self.bias, self.eps).transpose(1, 2)

    for module in model.modules():
        if isinstance(module, TokenGroupNorm):
            module.forward = forward.__get__(module)  # type: ignore[method-assign]
    return model.trunk


def bf16_trunk(model: HTDemucs) -> Trunk:
    def trunk(x: torch.Tensor, xt: torch.Tensor) -> Pair:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, yt = model.trunk(x, xt)
        return y.float(), yt.float()

    return trunk


def compile_worker(n_threads: int, repeats: int) -> None:
    """Subprocess body: compile the trunk (Inductor cache from the environment), time the first and best call."""
    torch.set_num_threads(n_threads)
    model = build()
    analysis = model.analyse(window())
    with torch.no_grad():
        ref = model.trunk(analysis.x, analysis.xt)
        compiled = torch.compile(model.trunk, dynamic=False)
        t0 = time.perf_counter()
        out = compiled(analysis.x, analysis.xt)
        first = time.perf_counter() - t0
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = compiled(analysis.x, analysis.xt)
            best = min(best, time.perf_counter() - t0)
    print(json.dumps({"first_s": first, "best_s": best, "max_abs": max_abs(ref, out)}))


def compile_rows(n_threads: int, repeats: int) -> list[tuple[str, float, float, str]]:
    cache = tempfile.mkdtemp(prefix="bench_levers_inductor_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    rows = []
    for label in ("cold", "warm"):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_compile-worker",
                "--threads",
                str(n_threads),
                "--repeats",
                str(repeats),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            rows.append((f"compile ({label} cache)", math.nan, math.nan, f"failed: {done.stderr[-300:]!r}"))
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            (f"compile ({label} cache)", r["best_s"], r["max_abs"], f"first call {r['first_s']:.1f} s")
        )
    return rows


# --- driver ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--levers",
        default="eager,eager1,branches,windows2,jit,channels_last,freq_matmul,gn_transposed,ort,openvino,bf16",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--profile", action="store_true", help="print a torch profiler table of the eager trunk"
    )
    parser.add_argument(
        "--unit-scales", action="store_true", help="layer scales 0.25-0.75 (the tests' random weights)"
    )
    parser.add_argument("--_compile-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._compile_worker:
        compile_worker(args.threads, args.repeats)
        return
    global UNIT_SCALES
    UNIT_SCALES = args.unit_scales
    n = args.threads
    torch.set_num_threads(n)
    levers = args.levers.split(",")
    print(f"torch {torch.__version__}, {n} threads, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(cpu_line())
    torch.set_grad_enabled(False)

    model = build()
    mix = window()
    analysis = model.analyse(mix)
    x, xt = analysis.x, analysis.xt
    reference = model.trunk(x, xt)  # eager float32, also the warm-up

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.trunk(x, xt)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))

    runs: dict[str, Callable[[], Pair]] = {}
    setup: dict[str, str] = {}
    fresh: dict[str, HTDemucs] = {}
    onnx: Path | None = None

    def own_model(name: str) -> HTDemucs:
        fresh[name] = build()
        return fresh[name]

    for lever in levers:
        t0 = time.perf_counter()
        if lever == "eager":
            runs[lever] = lambda: model.trunk(x, xt)
        elif lever == "eager1":

            def one_thread() -> Pair:
                with threads(1):
                    return model.trunk(x, xt)

            runs[lever] = one_thread
        elif lever == "branches":
            trunk = branches_trunk(model, n)
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever == "windows2":

            def two_windows() -> Pair:
                outs: list[Any] = [None]
                with threads(1):
                    t = threading.Thread(target=lambda: outs.__setitem__(0, model.trunk(x, xt)))
                    t.start()
                    out = model.trunk(x, xt)
                    t.join()
                return out  # two windows' work; reported per window below

            runs[lever] = two_windows
        elif lever == "jit":
            trunk = jit_trunk(own_model(lever), x, xt)
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever == "channels_last":
            trunk = channels_last_trunk(own_model(lever))
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever == "freq_matmul":
            trunk = freq_matmul_trunk(own_model(lever))
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever in ("ort", "openvino", "openvino_bf16"):
            if onnx is None:  # one export serves the three
                folder = tempfile.mkdtemp(prefix="bench_levers_onnx_")
                atexit.register(shutil.rmtree, folder, ignore_errors=True)  # 170 MB
                onnx = Path(folder) / "trunk.onnx"
                setup[lever] = f"export {export_onnx(model, x, xt, onnx):.1f} s, "
                t0 = time.perf_counter()
            if lever == "ort":
                trunk = ort_trunk(onnx, n)
            else:
                trunk = openvino_trunk(onnx, n, "bf16" if lever == "openvino_bf16" else "f32")
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever == "gn_transposed":
            trunk = gn_transposed_trunk(own_model(lever))
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever == "bf16":
            trunk = bf16_trunk(model)
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
        elif lever == "compile":
            continue
        else:
            raise SystemExit(f"unknown lever {lever!r}")
        setup[lever] = setup.get(lever, "") + f"setup {time.perf_counter() - t0:.1f} s"
        runs[lever]()  # warm-up (oneDNN primitive caches, ORT arena)

    best = dict.fromkeys(runs, math.inf)
    outs: dict[str, Pair] = {}
    for repeat in range(args.repeats):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for lever in order:
            t0 = time.perf_counter()
            outs[lever] = runs[lever]()
            best[lever] = min(best[lever], time.perf_counter() - t0)
    if "windows2" in best:
        best["windows2"] /= 2
    rows = [(lever, best[lever], max_abs(reference, outs[lever]), setup[lever]) for lever in runs]
    if "compile" in levers:
        rows += compile_rows(n, args.repeats)
    base = best.get("eager", math.nan)
    print(f"\ntrunk of one full-size window, best of {args.repeats}, {n} threads")
    print(f"{'lever':<24}{'seconds':>9}{'x eager':>9}{'max abs':>11}  notes")
    for lever, secs, diff, note in rows:
        extra = f", SNR {snr_db(reference, outs[lever]):.1f} dB" if "bf16" in lever else ""
        print(f"{lever:<24}{secs:>9.3f}{base / secs:>9.3f}{diff:>11.2e}  {note}{extra}")
    print(" ".join(f"{lever}={secs:.3f}/{diff:.2e}" for lever, secs, diff, _ in rows))


if __name__ == "__main__":
    main()
