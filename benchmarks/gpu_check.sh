#!/usr/bin/env bash
# Every GPU check in one run, for a machine with an NVIDIA GPU, no network and a preinstalled torch
# (at most 8 minutes on an H100/H200): the CUDA tests, the engine benchmark (10-minute track, eager and
# compiled, each precision), the folder benchmark against the demucs CLI (10 x 180-s WAV).
#
#   benchmarks/gpu_wheels.sh                        # first, on a machine with PyPI: wheels into .whl/
#   benchmarks/gpu_check.sh                         # on the GPU machine (carry .whl)
#   benchmarks/gpu_check.sh --device cpu --small    # a dry run of the same script on a CPU
#
# Logs go to $OUT if set, else benchmarks/out/.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
small=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --small) small=1; shift ;;
        *) echo "usage: $0 [--device cuda|cpu] [--small]" >&2; exit 2 ;;
    esac
done
out="${OUT:-benchmarks/out}"
mkdir -p "$out"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: installing the wheels failed" >&2; exit 1; }
    export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
status=0

{
    date -u
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    lscpu | grep -E 'Model name|^CPU\(s\)'
} 2>&1 | tee "$out/machine.txt"

if [ "$small" = 1 ]; then  # a dry run: CPUs emulate float16/bfloat16 far too slowly to include them
    engine_s=10; tracks=2; track_s=8; precisions=float32,tf32; limit_tests=900; limit_engine=900; limit_folder=900
else  # the limits add up to 9 minutes at most; a healthy H100/H200 run takes well under 8
    engine_s=600; tracks=10; track_s=180; precisions=float32,tf32,float16,bfloat16
    limit_tests=120; limit_engine=240; limit_folder=150
fi

echo "== pytest -m cuda" | tee "$out/pytest_cuda.log"
timeout "$limit_tests" python3 -m pytest -m cuda -W default -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee -a "$out/pytest_cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== bench_engine" | tee "$out/bench_engine.log"
timeout "$limit_engine" python3 benchmarks/bench_engine.py --device "$device" --seconds "$engine_s" --gpu-matrix --precisions "$precisions" --profile 2>&1 | tee -a "$out/bench_engine.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== bench_folder" | tee "$out/bench_folder.log"
timeout "$limit_folder" python3 benchmarks/bench_folder.py --device "$device" --tracks "$tracks" --seconds "$track_s" 2>&1 | tee -a "$out/bench_folder.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

grep -h '^device=' "$out"/bench_*.log | tee "$out/summary.txt"
exit "$status"
