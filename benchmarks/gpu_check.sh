#!/usr/bin/env bash
# The GPU proof run, for a machine with an NVIDIA GPU, no network and a preinstalled torch (Python 3.12).
# It fits 6 minutes of device time with the wheel install: the time limits below add up to 360 s (install
# 30, machine 10, then the steps 40 + 100 + 75 + 60 + 45), so a 15-minute lease leaves room to run it again.
# The most important figure comes first, and every step prints its machine-readable result line
# (``device=… step=…``) the moment it has it; a step cut short by its limit keeps the lines it printed.
#
#   1. engine: our engine, eager float16, on a 10-minute track;
#   2. folder: the stemsplit command on 10 x 180-s WAV, --compile off, against the demucs CLI, then with
#      the compile policy's choice (--compile auto);
#   3. pytest -m cuda (tests/test_cuda.py);
#   4. compiled: the engine compiled (float16), cold and then warm Inductor cache;
#   5. matrix: float32 with TF32 off, TF32, float16, bfloat16 (SNR against float32), demucs apply_model.
#
#   benchmarks/gpu_wheels.sh                        # first, on a machine with PyPI: wheels into .whl/
#   benchmarks/gpu_check.sh                         # on the GPU machine (carry .whl)
#   benchmarks/gpu_check.sh --device cpu --small    # the rehearsal on a CPU: the same steps, small sizes
#
# Logs go to $OUT if set, else benchmarks/out/: one log per step, and summary.txt with the result lines only.
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
: > "$out/summary.txt"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
here=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
wheels=$(cat .whl/python-version 2>/dev/null || true)
if [ "$wheels" = "$here" ]; then  # the set gpu_wheels.sh made for this Python
    timeout 30 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "gpu_check: installing the wheels failed" >&2; exit 1; }
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
elif [ -n "$wheels" ]; then
    echo "gpu_check: .whl/ holds wheels for Python $wheels, this is $here: using what is installed" >&2
fi
status=0

{
    date -u
    nvidia-smi -L 2>&1 || echo "no nvidia-smi"
    timeout 10 python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    lscpu | grep -E 'Model name|^CPU\(s\)'
} 2>&1 | tee "$out/machine.txt"

if [ "$small" = 1 ]; then  # the rehearsal: a narrow network, short tracks; CPUs emulate float16 too slowly
    engine=(--seconds 4 --network small); folder=(--tracks 2 --seconds 4 --network small)
    eager=float32; matrix=float32,tf32; tests=(-k writes_what); export STEMSPLIT_CUDA_TESTS_SMALL=1
    compiled=(--compile-backend aot_eager)  # a cold Inductor compile takes minutes on a loaded 2-core CPU
    export OMP_NUM_THREADS=1  # a loaded shared CPU: one thread each, no spinning at every tiny operator
    limits=(30 80 60 80 40)  # 290 s: the rehearsal ends within 5 minutes whatever the machine's load
else
    engine=(--seconds 600 --network full); folder=(--tracks 10 --seconds 180 --network full)
    eager=float16; matrix=float32,tf32,float16,bfloat16; tests=(); compiled=()
    limits=(40 100 75 60 45)
fi
if [ "$device" = cpu ]; then  # the CUDA tests on the CPU (see tests/test_cuda.py), PyTorch's CPU backend
    export STEMSPLIT_CUDA_TESTS_ON=cpu STEMSPLIT_CPU_BACKEND=torch
fi

# step NAME LIMIT COMMAND…: runs COMMAND for at most LIMIT seconds, shows and logs its output, and copies its
# result lines (those starting with "device=") to summary.txt as they come.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "== $name (at most $limit s)" | tee "$out/$name.log"
    timeout "$limit" "$@" 2>&1 | while IFS= read -r line; do
        printf '%s\n' "$line" | tee -a "$out/$name.log"
        case "$line" in device=*) printf '%s\n' "$line" >> "$out/summary.txt" ;; esac
    done
    local rc="${PIPESTATUS[0]}"
    if [ "$rc" -ne 0 ]; then
        status=1
        [ "$rc" -eq 124 ] && echo "gpu_check: $name ran out of its $limit s" | tee -a "$out/$name.log" >&2
    fi
    return 0
}

# pytest's outcome as one result line, counted from its -v lines (so a run cut short still reports).
pytest_line() {
    local log="$out/pytest_cuda.log" kind counts=""
    for kind in PASSED FAILED SKIPPED ERROR; do
        counts+=" ${kind,,}=$(grep -c " $kind" "$log")"
    done
    echo "device=$device step=pytest_cuda$counts" | tee -a "$out/summary.txt"
}

step engine "${limits[0]}" python3 benchmarks/bench_engine.py --device "$device" --gpu-step eager \
    --precisions "$eager" "${engine[@]}"
step folder "${limits[1]}" python3 benchmarks/bench_folder.py --device "$device" --compile off,auto "${folder[@]}"
step pytest_cuda "${limits[2]}" python3 -m pytest -m cuda -v -W default -p no:cacheprovider "${tests[@]}" \
    tests/test_cuda.py
pytest_line
step compiled "${limits[3]}" python3 benchmarks/bench_engine.py --device "$device" --gpu-step compiled \
    --precisions "$eager" "${compiled[@]}" "${engine[@]}"
step matrix "${limits[4]}" python3 benchmarks/bench_engine.py --device "$device" --gpu-step matrix \
    --precisions "$matrix" "${engine[@]}"

echo "== summary ($out/summary.txt)"
cat "$out/summary.txt"
exit "$status"
