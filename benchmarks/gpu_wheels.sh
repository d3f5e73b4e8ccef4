#!/usr/bin/env bash
# Prepare, on a machine with PyPI, the wheels that the GPU machine lacks (it has no network, Python 3.12 and
# torch preinstalled): the audio libraries, demucs 4.1.0 (the reference) and their imports that its image
# does not have. They go to .whl/ (git-ignored), which benchmarks/gpu_check.sh installs from.
# Usage: benchmarks/gpu_wheels.sh [PYTHON_VERSION]   (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
mkdir -p .whl
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" -d .whl \
    soundfile cffi pycparser soxr av platformdirs mutagen \
    demucs==4.1.0 julius lameenc sphn
ls -la .whl
du -sh .whl
