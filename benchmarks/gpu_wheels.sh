#!/usr/bin/env bash
# Prepare, on a machine with PyPI, the wheels that the GPU machine lacks, and check the set.
#
# The GPU image has no network and Python 3.12 with torch 2.11, numpy 2.5, typer, rich, requests, pyyaml,
# safetensors, pytest, hypothesis, einops and tqdm. It lacks the audio libraries (soundfile and its cffi,
# soxr, PyAV), platformdirs, mutagen, and demucs 4.1.0 (the reference) with julius, lameenc and sphn. Their
# cp312 manylinux wheels go to .whl/ (git-ignored), which benchmarks/gpu_check.sh installs with --no-deps.
# PyAV is pinned to the version the project is tested with (pip would pick PyAV 19 on cp312, whose
# av.open no longer takes metadata_errors).
#
# The check: a throwaway venv of that Python with what the image has (torch excepted) from PyPI and the
# wheels installed as gpu_check.sh installs them; benchmarks/_check_wheels.py then imports every module the
# run uses that does not need torch, and follows the imports of those that do (stemsplit, demucs, julius,
# the test and benchmark helpers) to the outside modules they load, each of which must be there.
#
# Usage: benchmarks/gpu_wheels.sh [PYTHON]    (an interpreter of the image's version; default python3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-python3.12}"
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
abi="cp${version/./}"
rm -rf .whl
mkdir -p .whl
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --abi "$abi" --abi abi3 --abi none "${platforms[@]}" -d .whl \
    soundfile cffi pycparser soxr "av==18.1.0" platformdirs mutagen \
    demucs==4.1.0 julius lameenc sphn
echo "$version" > .whl/python-version  # gpu_check.sh installs the set only for this Python
ls .whl
du -sh .whl

check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
"$python" -m venv "$check/venv"
"$check/venv/bin/python" -m pip install --quiet numpy typer rich requests pyyaml safetensors pytest hypothesis \
    einops tqdm typing-extensions
"$check/venv/bin/python" -m pip install --quiet --no-index --no-deps --no-compile --target "$check/site" .whl/*.whl
PYTHONPATH="$check/site" "$check/venv/bin/python" benchmarks/_check_wheels.py
echo "gpu_wheels: .whl/ holds the wheel set for Python $version, checked"
