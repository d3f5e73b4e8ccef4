"""Shared fixtures: an isolated environment for every test, and small models in the official formats."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the commands the tests start, however pytest was started: a shell script that starts it
    in the background (``cmd &``) ignores SIGINT for it, and a child inherits an ignored signal, so the tests
    that interrupt a ``stemsplit`` process would send a signal it ignores. A handler (unlike "ignore") is
    not inherited: the children start with the default, as from a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the user's cache or settings, or process-wide state left by another test."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(cache))
    for name in ("STEMSPLIT_OFFLINE", "STEMSPLIT_MODEL_URL", "STEMSPLIT_DEBUG", "STEMSPLIT_CPU_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    from stemsplit.inference import devices

    monkeypatch.setattr(devices, "_COMPILE_FAILED", [])  # process-wide memory of a failed torch.compile
    # ``--precision auto`` on a CPU depends on its flags (AMX or not): every test sees the same plain AVX2
    # CPU, whatever this machine has; tests of the precision rule simulate other flag sets themselves.
    monkeypatch.setattr(devices, "cpu_flags", lambda: AVX2_CPU)
    # The CPU backend ``auto`` also depends on the CPU and on what is installed (OpenVINO on Intel, ONNX
    # Runtime elsewhere): every test sees an AMD CPU without either runtime, so auto is PyTorch; the backend's
    # own tests see the real packages (tests/test_cpu_backend.py) and choose a runtime or simulate a CPU.
    from stemsplit.inference import cpu_backend

    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(cpu_backend, "missing_packages", lambda: ("openvino", "onnxruntime"))


AVX2_CPU = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})


@pytest.fixture
def tiny_th(tmp_path: Path) -> Path:
    """A tiny random HT Demucs saved in the official ``.th`` format, named like an official file."""
    import hashlib

    from checkpoints import random_state, save_th, tiny_kwargs
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = tiny_kwargs()
    state = random_state(HTDemucs(config_from_kwargs(kwargs)))
    path = save_th(tmp_path / "tiny.th", kwargs, state)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return path.rename(tmp_path / f"0123abcd-{digest}.th")


@pytest.fixture
def one_thread_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI tests' setting (``pytestmark = pytest.mark.usefixtures("one_thread_in_tmp")``): run in the
    test's own folder, with torch on one thread."""
    from separation_helpers import OneThread

    monkeypatch.chdir(tmp_path)
    with OneThread():
        yield


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random HT Demucs ``.th``, made once per test module."""
    from separation_helpers import make_tiny_th

    return make_tiny_th(tmp_path_factory.mktemp("model"))
