"""Benchmark: CPU levers for the float32 trunk of one full-size window (issue 15), each against eager float32;
bfloat16 (issue 29) and int8 (issue 29 item 4) rows report their SNR against it.

Usage::

    python benchmarks/bench_cpu_levers.py                        # every lever, best of 3
    python benchmarks/bench_cpu_levers.py --levers eager,ort,openvino --repeats 5
    python benchmarks/bench_cpu_levers.py --profile              # torch profiler table of the eager forward
    python benchmarks/bench_cpu_levers.py --levers eager,openvino_bf16,int8_ort,int8_openvino --unit-scales
    python benchmarks/bench_cpu_levers.py --network small --levers eager,int8_ort --repeats 1   # a rehearsal

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
* ``bf16``: eager trunk under CPU autocast to bfloat16 (what ``--precision auto`` picked on AMX CPUs before
  issue 29); its difference is not a float32 lever's and is reported as SNR too. ``openvino_bf16``: the
  ``openvino`` lever with a bf16 inference hint (what ``auto`` picks on AMX CPUs since issue 29).
* ``int8_ort``, ``int8_openvino``, ``int8_openvino_bf16`` (not in the default list): post-training static
  quantisation of the same ONNX file (:func:`quantise_int8`: ONNX Runtime's pre-processing, then
  ``quantize_static``, QDQ format, int8 per-channel symmetric weights, uint8 activations (U8S8, see
  ``--int8-activations``), MinMax ranges from ``--int8-calibration`` synthetic music windows,
  :func:`music_window`; the operator types of ``--int8-ops``), run by ONNX Runtime's CPU provider, by
  OpenVINO with an f32 hint (the unquantised operators in float32) and with a bf16 hint. The quantisation
  (pre-processing + calibration + writing) is paid once, in the first int8 row's setup. Rows report the SNR
  on the timed window (white noise, not in the calibration set, and unlike it) and on a held-out music
  window; a line per int8 row after the table says which operators the runtime ran in int8
  (:func:`int8_kernels`). Issue 29 item 4 (benchmarks/RESULTS.md, 2026-12-06): int8 recorded, not adopted.

``--network small`` builds a narrow htdemucs (``bench_folder.SMALL``: the same code path, same window), for a
rehearsal of the script in seconds; its figures say nothing about the full-size network.

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

from bench_folder import SMALL, cpu_line  # noqa: E402

from stemsplit.inference import cpu_backend  # noqa: E402
from stemsplit.model import HTDemucs  # noqa: E402
from stemsplit.model.layers import EncoderLayer  # noqa: E402

Pair = tuple[torch.Tensor, torch.Tensor]
Trunk = Callable[[torch.Tensor, torch.Tensor], Pair]


UNIT_SCALES = False
"""``--unit-scales``: every model built with the tests' ``random_state`` (layer scales 0.25-0.75)."""

NETWORK = "full"
"""``--network``: ``full`` (the ``htdemucs`` architecture) or ``small`` (``bench_folder.SMALL``)."""

WINDOW = 343980
"""Samples of one window (the training segment of 7.8 s at 44.1 kHz, both networks)."""


def build(seed: int = 0) -> HTDemucs:
    """Our full-size ``htdemucs`` with the reference's random weights (seed 0, as bench_engine uses), or with
    unit-order layer scales (``--unit-scales``: demucs' 1e-4 initialisation mutes the DConvs and the
    transformer, and with them the differences a lever could make there); ``--network small``: the narrow
    network of ``bench_folder.SMALL`` instead."""
    from checkpoints import random_state, reference_kwargs
    from engine_models import make_reference_htdemucs, stemsplit_twin

    if NETWORK == "small":
        from demucs.htdemucs import HTDemucs as ReferenceHTDemucs

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reference = ReferenceHTDemucs(**reference_kwargs(**SMALL)).eval()
    else:
        reference = make_reference_htdemucs(seed=seed)
    if UNIT_SCALES:
        reference.load_state_dict(random_state(reference))
    model = stemsplit_twin(reference)
    assert isinstance(model, HTDemucs)
    return model


def window(seed: int = 0) -> torch.Tensor:
    """The timed window: stereo white noise (every lever runs on it)."""
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(1, 2, WINDOW, generator=g)


def music_window(seed: int, length: int = WINDOW, sr: int = 44100) -> torch.Tensor:
    """(1, 2, length) synthetic music, the int8 levers' calibration data: a tempo of 80-160 bpm; a chord per
    bar (three notes of a minor or major triad, six harmonics each, attack-decay-sustain-release envelope,
    panned); a bass note per beat (eight harmonics, plucked decay); a kick (a 150 -> 45 Hz sweep) on beats
    1 and 3, a snare (noise and a 190 Hz tone) on 2 and 4, a closed hi-hat (differenced noise) on every
    eighth; a faint noise floor; RMS 0.05-0.2. Everything is drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    def randint(lo: int, hi: int) -> int:  # lo <= n < hi
        return int(torch.randint(lo, hi, (), generator=g))

    out = torch.zeros(2, length, dtype=torch.float64)

    def add(start_s: float, sound: torch.Tensor, pan: float) -> None:
        start = int(start_s * sr)
        if start >= length:
            return
        sound = sound[: length - start]
        out[0, start : start + len(sound)] += math.cos(pan * math.pi / 2) * sound
        out[1, start : start + len(sound)] += math.sin(pan * math.pi / 2) * sound

    def hz(midi: float) -> float:
        return 440.0 * 2 ** ((midi - 69) / 12)

    def tone(f0: float, seconds: float, harmonics: int, rolloff: float) -> torch.Tensor:
        t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
        wave = torch.zeros_like(t)
        for k in range(1, harmonics + 1):
            if k * f0 < sr / 2:
                wave += torch.sin(2 * math.pi * k * f0 * t + uniform(0, 2 * math.pi)) / k**rolloff
        return wave

    def noise(seconds: float) -> torch.Tensor:
        return torch.randn(int(seconds * sr), generator=g, dtype=torch.float64)

    def decay(n: int, seconds: float) -> torch.Tensor:
        return torch.exp(-torch.arange(n, dtype=torch.float64) / (seconds * sr))

    beat = 60.0 / uniform(80, 160)
    key = randint(45, 57)  # the bass' root, A2 .. G#3
    seconds = length / sr
    minor = [0, 3, 7]
    major = [0, 4, 7]
    progression = [randint(0, 7) for _ in range(4)]
    scale = [0, 2, 3, 5, 7, 8, 10]  # natural minor: the chord roots' degrees
    for bar, start in enumerate(torch.arange(0, seconds, 4 * beat).tolist()):
        root = key + 12 + scale[progression[bar % 4]]
        triad = minor if progression[bar % 4] in (0, 3, 4) else major
        dur = 4 * beat
        for offset in triad:
            note = tone(hz(root + offset + 12 * randint(0, 2)), dur, 6, uniform(1.0, 2.0))
            n = len(note)
            attack, release = int(0.02 * sr), int(min(0.3, dur / 3) * sr)
            env = torch.ones(n, dtype=torch.float64) * 0.7
            env[:attack] = torch.linspace(0, 1, attack, dtype=torch.float64)
            env[attack : attack + int(0.1 * sr)] = torch.linspace(1, 0.7, int(0.1 * sr), dtype=torch.float64)
            env[n - release :] *= torch.linspace(1, 0, release, dtype=torch.float64)
            add(start, 0.12 * note * env, uniform(0.2, 0.8))
        for b in range(4):
            step = scale[randint(0, 7)] if b % 2 else 0
            bass = tone(hz(root - 12 + step), beat, 8, 1.0)
            add(start + b * beat, 0.25 * bass * decay(len(bass), uniform(0.15, 0.4)), 0.5)
    for i, start in enumerate(torch.arange(0, seconds, beat).tolist()):
        if i % 2 == 0:  # kick
            t = torch.arange(int(0.35 * sr), dtype=torch.float64) / sr
            sweep = 45 + 105 * torch.exp(-t / 0.04)
            phase = 2 * math.pi * torch.cumsum(sweep, 0) / sr
            add(start, 0.6 * torch.sin(phase) * decay(len(t), 0.08), 0.5)
        else:  # snare
            body = noise(0.25) + 0.5 * tone(190, 0.25, 1, 1.0)
            add(start, 0.3 * body * decay(len(body), uniform(0.04, 0.09)), uniform(0.4, 0.6))
        for half in (0.0, 0.5):  # hi-hat
            hat = torch.diff(noise(0.06), prepend=torch.zeros(1, dtype=torch.float64))
            add(start + half * beat, 0.08 * hat * decay(len(hat), 0.012), uniform(0.55, 0.8))
    out += 1e-3 * torch.randn(2, length, generator=g, dtype=torch.float64)
    out *= uniform(0.05, 0.2) / float(out.pow(2).mean().sqrt())
    return out.float()[None]


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
    ort = cpu_backend.import_onnxruntime()

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
    ov = cpu_backend.import_openvino()

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


INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
"""The operators the int8 levers quantise (``--int8-ops``): the convolutions and matrix products, which hold
nearly all of the trunk's arithmetic and have int8 kernels (VNNI / AMX) in both runtimes. Norms, softmax,
GELU, the layer scales and the adds stay float32: quantising them adds error and saves little."""


def quantise_int8(
    model: HTDemucs,
    onnx: Path,
    out: Path,
    seeds: list[int],
    activations: str = "u8",
    ops: tuple[str, ...] = INT8_OPS,
) -> str:
    """Post-training static int8 quantisation of the exported trunk ``onnx`` into ``out``; returns the setup
    note (what each step cost).

    Steps: ``quant_pre_process`` (symbolic shape inference, ONNX Runtime's basic graph optimisations, ONNX
    shape inference: what ``quantize_static`` asks for), then ``quantize_static`` in QDQ format (Quantize /
    DequantizeLinear pairs around the float operators: both ONNX Runtime and OpenVINO read it and run the
    pairs' operators in int8) with these choices, after ONNX Runtime's quantisation guide for x86-64:

    * weights int8, symmetric, per output channel (``per_channel=True``; the kernels' sizes differ by layer);
    * activations uint8 with a zero point (``activations="u8"``, the default: U8S8, the x86 kernels' own
      format). The guide's first choice is S8S8 ("the default setting ... balances performance and
      accuracy"), U8S8 the other; both have the same resolution (asymmetric 8 bits). U8S8 is the default
      here because the rehearsal on the small network (``--network small``, 2026-12-06) found, with S8S8,
      ONNX Runtime 1.32 fusing only 32 of the 88 convolutions into ``QLinearConv`` (the rest ran in float
      between Quantize/DequantizeLinear) where U8S8 fused all 88, and OpenVINO 2026.4 refusing to compile
      S8 activations with a zero point under the bf16 hint ("No suitable implementations"). ``"s8"``
      (S8S8) and ``"s8sym"`` (S8S8 with symmetric activations: one bit less for one-sided tensors, which
      OpenVINO runs in int8 under either hint) are there to compare;
    * no ``reduce_range``: the 7-bit weights are for AVX2/AVX512 CPUs without VNNI (the U8S8 instruction
      there saturates); "not needed on machines supporting VNNI";
    * MinMax calibration (the ranges every calibrated tensor took over the windows; the histogram methods
      keep a histogram per tensor, too slow for a window this size). The calibration graph reduces each
      tensor to its min and max, so every window's results are held at once at no cost; not
      ``CalibMaxIntermediateOutputs``, which in ONNX Runtime 1.32 discards the results it holds each time
      it reaches the count instead of merging them ("No data is collected" when the count divides the set);
    * only ``ops`` quantised (:data:`INT8_OPS`).

    Calibration data: ``model.analyse`` of :func:`music_window` for each of ``seeds`` (the trunk's inputs).
    """
    cpu_backend.import_onnxruntime()  # telemetry off before the first import
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class MusicWindows(oq.CalibrationDataReader):
        """The trunk's inputs ``(x, xt)`` for each calibration window, made as they are asked for."""

        def __init__(self) -> None:
            self.left = list(seeds)

        def get_next(self) -> dict[str, Any] | None:
            if not self.left:
                return None
            analysis = model.analyse(music_window(self.left.pop(0)))
            return {"x": analysis.x.numpy(), "xt": analysis.xt.numpy()}

    t0 = time.perf_counter()
    pre = out.with_name(f"{out.stem}.pre.onnx")
    quant_pre_process(str(onnx), str(pre))
    t1 = time.perf_counter()
    oq.quantize_static(
        str(pre),
        str(out),
        MusicWindows(),
        quant_format=oq.QuantFormat.QDQ,
        op_types_to_quantize=list(ops),
        per_channel=True,
        reduce_range=False,
        activation_type=oq.QuantType.QUInt8 if activations == "u8" else oq.QuantType.QInt8,
        weight_type=oq.QuantType.QInt8,
        calibrate_method=oq.CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": activations == "s8sym"},
    )
    t2 = time.perf_counter()
    pre.unlink()
    return (
        f"quantise {t2 - t0:.1f} s (pre-process {t1 - t0:.1f} s, calibrate {len(seeds)} music windows"
        f" + write {t2 - t1:.1f} s; {INT8_FORMATS[activations]}), "
    )


INT8_FORMATS = {"u8": "U8S8", "s8": "S8S8", "s8sym": "S8S8, symmetric activations"}
"""``--int8-activations``: the int8 file's format (activations and weights)."""


def int8_kernels(path: Path, lever: str, n_threads: int) -> str:
    """Which of the trunk's convolutions and matrix products a runtime runs in int8 (the rest run in float,
    between Quantize/DequantizeLinear or FakeQuantize operations), from its own optimised graph: ONNX
    Runtime's optimised model as it writes it, or OpenVINO's runtime model (each node's runtime precision)."""
    import collections

    if lever == "int8_ort":
        import onnx

        ort = cpu_backend.import_onnxruntime()

        optimised = path.with_name(f"{path.stem}.ort.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = n_threads
        options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3  # not its warning that the file holds this CPU's layouts
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = collections.Counter(node.op_type for node in onnx.load(str(optimised)).graph.node)
        optimised.unlink()
        int8 = sorted(op for op in ops if op.startswith("QLinear") or op == "QGemm" or "Integer" in op)
        floats = [
            op for op in ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm") if ops[op]
        ]
        listed = [", ".join(f"{op} {ops[op]}" for op in group) or "-" for group in (int8, floats)]
        return f"int8: {listed[0]}; float: {listed[1]}"
    ov = cpu_backend.import_openvino()

    precision = "bf16" if lever.endswith("bf16") else "f32"
    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(n_threads)}
    )
    kinds: collections.Counter[str] = collections.Counter()
    int8: collections.Counter[str] = collections.Counter()
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        kind = info["layerType"].astype(str)
        kinds[kind] += 1
        int8[kind] += info["runtimePrecision"].astype(str) in ("i8", "u8")
    layers = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")
    shares = ", ".join(f"{kind} {int8[kind]}/{kinds[kind]}" for kind in layers if kinds[kind])
    return f"int8: {shares}; FakeQuantize {kinds['FakeQuantize']}"


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
                "--network",
                NETWORK,
                *(["--unit-scales"] if UNIT_SCALES else []),
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
    parser.add_argument(
        "--network", choices=["full", "small"], default="full", help="see bench_folder.SMALL (a rehearsal)"
    )
    parser.add_argument(
        "--int8-calibration",
        type=int,
        default=6,
        help="synthetic music windows (seeds 1..N) the int8 levers calibrate on (default 6)",
    )
    parser.add_argument(
        "--int8-activations",
        choices=list(INT8_FORMATS),
        default="u8",
        help="the int8 activations: u8 (U8S8), s8 (S8S8), s8sym (S8S8, symmetric activations)",
    )
    parser.add_argument(
        "--int8-ops", default=",".join(INT8_OPS), help="operator types the int8 levers quantise"
    )
    parser.add_argument("--_compile-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global UNIT_SCALES, NETWORK
    UNIT_SCALES = args.unit_scales
    NETWORK = args.network
    if args._compile_worker:
        compile_worker(args.threads, args.repeats)
        return
    n = args.threads
    torch.set_num_threads(n)
    levers = args.levers.split(",")
    print(f"torch {torch.__version__}, {n} threads, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    if NETWORK == "small":
        print("network: small (bench_folder.SMALL), a rehearsal: not the full-size figures")
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
    int8: Path | None = None
    quantised: dict[str, Trunk] = {}  # the int8 levers' trunks
    failed: dict[str, str] = {}  # int8 levers a runtime would not compile

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
        elif lever in ("ort", "openvino", "openvino_bf16", "int8_ort", "int8_openvino", "int8_openvino_bf16"):
            if onnx is None:  # one export serves them all
                folder = tempfile.mkdtemp(prefix="bench_levers_onnx_")
                atexit.register(shutil.rmtree, folder, ignore_errors=True)  # 170 MB, and the int8 file
                onnx = Path(folder) / "trunk.onnx"
                setup[lever] = f"export {export_onnx(model, x, xt, onnx):.1f} s, "
                t0 = time.perf_counter()
            path = onnx
            if lever.startswith("int8"):
                if int8 is None:  # one quantised file serves the int8 levers
                    int8 = onnx.with_name("trunk.int8.onnx")
                    seeds = list(range(1, args.int8_calibration + 1))
                    ops = tuple(args.int8_ops.split(","))
                    note = quantise_int8(model, onnx, int8, seeds, args.int8_activations, ops)
                    setup[lever] = setup.get(lever, "") + note
                    t0 = time.perf_counter()
                path = int8
            try:
                if lever in ("ort", "int8_ort"):
                    trunk = ort_trunk(path, n)
                else:
                    trunk = openvino_trunk(path, n, "bf16" if lever.endswith("bf16") else "f32")
            except RuntimeError as err:
                if not lever.startswith("int8"):
                    raise
                failed[lever] = f"failed: {str(err).strip().splitlines()[-1][:160]!r}"
                continue
            runs[lever] = lambda trunk=trunk: trunk(x, xt)
            if lever.startswith("int8"):
                quantised[lever] = trunk
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

    music: dict[str, str] = {}  # int8 rows: SNR on a music window of a seed the calibration did not use
    if quantised:
        held_out = model.analyse(music_window(0))
        music_reference = model.trunk(held_out.x, held_out.xt)
        for lever, trunk in quantised.items():
            snr = snr_db(music_reference, trunk(held_out.x, held_out.xt))
            music[lever] = f", {snr:.1f} dB on held-out music"

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
    kernels = {lever: int8_kernels(int8, lever, n) for lever in quantised if int8 is not None}
    rows = [(lever, best[lever], max_abs(reference, outs[lever]), setup[lever]) for lever in runs]
    rows += [(lever, math.nan, math.nan, f"{setup.get(lever, '')}{why}") for lever, why in failed.items()]
    if "compile" in levers:
        rows += compile_rows(n, args.repeats)
    base = best.get("eager", math.nan)
    print(f"\ntrunk of one full-size window, best of {args.repeats}, {n} threads")
    print(f"{'lever':<24}{'seconds':>9}{'x eager':>9}{'max abs':>11}  notes")
    for lever, secs, diff, note in rows:
        quality = lever in outs and ("bf16" in lever or lever.startswith("int8"))
        extra = f", SNR {snr_db(reference, outs[lever]):.1f} dB" if quality else ""
        extra += music.get(lever, "")
        print(f"{lever:<24}{secs:>9.3f}{base / secs:>9.3f}{diff:>11.2e}  {note}{extra}")
    for lever, line in kernels.items():
        print(f"{lever}: {line}")
    print(" ".join(f"{lever}={secs:.3f}/{diff:.2e}" for lever, secs, diff, _ in rows))


if __name__ == "__main__":
    main()
