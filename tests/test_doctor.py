"""``stemsplit doctor``: what :func:`stemsplit.cli.doctor.collect` finds in staged environments, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from stemsplit import settings
from stemsplit.cli import app as cli
from stemsplit.cli.doctor import checks as doctor
from stemsplit.cli.doctor import report as doctor_report
from stemsplit.inference import devices
from stemsplit.weights import registry as models
from stemsplit.weights.cache import ModelCache, fix_command
from stemsplit.weights.download import mask_url
from stemsplit.weights.registry import ModelSpec, WeightFile, make_registry

runner = CliRunner()
needs_posix_shell = pytest.mark.skipif(
    sys.platform == "win32", reason="the fake nvidia-smi is a shell script"
)

NVIDIA_SMI_HEADER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""


@pytest.fixture(autouse=True)
def _plain_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine with no NVIDIA driver, no GPU usable by torch, no proxy or CA variables.

    Returns the (empty) folder that is the whole PATH, where a test may drop a fake ``nvidia-smi``.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(doctor, "NVIDIA_PROC", tmp_path / "no-driver")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in (
        *doctor.PROXY_VARS,
        *(v.lower() for v in doctor.PROXY_VARS),
        *settings.CA_BUNDLE_VARS,
    ):
        monkeypatch.delenv(name, raising=False)
    return bin_dir


def _cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)


def _fake_nvidia_smi(bin_dir: Path, header: str = NVIDIA_SMI_HEADER) -> Path:
    script = bin_dir / "nvidia-smi"
    # Only shell builtins: PATH holds nothing but this folder.
    script.write_text(f"#!/bin/sh\nprintf '%s' '{header}'\n", encoding="ascii")
    script.chmod(0o755)
    return script


def _findings(
    report: doctor_report.DoctorReport, topic: str, severity: str | None = None
) -> list[doctor_report.Finding]:
    return [f for f in report.findings if f.topic == topic and (severity is None or f.severity == severity)]


# --- torch build and device ----------------------------------------------------------------------


@needs_posix_shell
def test_cpu_torch_on_an_nvidia_machine_is_a_problem_with_the_pip_fix(
    _plain_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cpu_build(monkeypatch)
    smi = _fake_nvidia_smi(_plain_machine)
    report = doctor.collect(verify=False)
    assert report.nvidia == doctor_report.NvidiaInfo(True, str(smi), "570.86.15", "12.8")
    assert report.torch is not None and report.torch.build == "cpu"
    [problem] = _findings(report, "torch", "problem")
    assert "CPU-only build" in problem.message
    assert problem.fix is not None
    assert problem.fix.startswith("pip install --force-reinstall torch --index-url")
    assert "download.pytorch.org/whl/cu128" in problem.fix
    assert report.device is not None and report.device.device == "cpu"
    assert "NVIDIA GPU is present but this torch is a CPU-only build" in report.device.why
    assert report.status == "problem"


def test_kernel_driver_alone_is_enough_to_detect_the_gpu(
    _plain_machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cpu_build(monkeypatch)
    proc = tmp_path / "proc-nvidia"
    proc.mkdir()
    monkeypatch.setattr(doctor, "NVIDIA_PROC", proc)
    report = doctor.collect(verify=False)
    assert report.nvidia == doctor_report.NvidiaInfo(True, str(proc))
    [problem] = _findings(report, "torch", "problem")
    assert problem.fix is not None and "whl/cu126" in problem.fix  # unknown driver: the oldest variant


def test_cpu_torch_without_a_gpu_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_build(monkeypatch)
    report = doctor.collect(verify=False)
    assert not report.nvidia.detected
    assert _findings(report, "torch") == []
    assert report.device is not None and report.device.device == "cpu"
    assert "no GPU found" in report.device.why
    assert report.status != "problem", report.findings


@needs_posix_shell
def test_cuda_build_that_cannot_reach_the_gpu_names_the_driver(
    _plain_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.version, "hip", None)
    _fake_nvidia_smi(_plain_machine, NVIDIA_SMI_HEADER.replace("12.8", "12.6"))
    report = doctor.collect(verify=False)
    assert report.torch is not None and report.torch.build == "cuda"
    [problem] = _findings(report, "torch", "problem")
    assert "built for CUDA 13.0" in problem.message and "CUDA 12.6" in problem.message
    assert problem.fix is not None and "whl/cu126" in problem.fix


@pytest.mark.parametrize(
    ("driver_cuda", "expected"),
    [
        ("13.1", "whl/cu130"),
        ("12.9", "whl/cu128"),
        ("12.8", "whl/cu128"),
        ("12.6", "whl/cu126"),
        (None, "whl/cu126"),
    ],
)
def test_cuda_install_command_picks_the_newest_variant_the_driver_runs(
    driver_cuda: str | None, expected: str
) -> None:
    assert expected in doctor.cuda_install_command(driver_cuda)


def test_cuda_install_command_for_a_too_old_driver_says_update_it() -> None:
    text = doctor.cuda_install_command("11.4")
    assert text.startswith("update the NVIDIA driver") and "pip install" not in text


def test_mps_available_is_used_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    report = doctor.collect(verify=False)
    assert report.torch is not None and report.torch.mps_available and report.torch.mps_built
    assert report.device is not None and (report.device.device, report.device.precision) == ("mps", "float32")
    assert "Apple GPU (MPS)" in report.device.why


@pytest.mark.parametrize(
    ("flags", "precision", "named"),
    [
        ({"avx2", "amx_bf16", "avx512_bf16"}, "bfloat16", "amx_bf16"),
        ({"avx2", "avx512f", "avx512_bf16"}, "float32", "avx512_bf16"),
        ({"avx2"}, "float32", "no AMX (amx_bf16)"),
    ],
)
def test_cpu_precision_and_its_reason_follow_the_cpu_flags(
    flags: set[str], precision: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    report = doctor.collect(verify=False)
    assert report.torch is not None and set(report.torch.cpu_flags) == flags
    assert report.torch.threads == torch.get_num_threads() and report.torch.cpu_count >= 1
    assert report.device is not None and (report.device.device, report.device.precision) == ("cpu", precision)
    assert named in report.device.why


def test_missing_torch_is_a_finding_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    report = doctor.collect(verify=False)
    assert report.torch is None and report.device is None
    [problem] = _findings(report, "torch", "problem")
    assert "cannot be imported" in problem.message and problem.fix == "pip install --force-reinstall torch"
    assert next(p for p in report.packages if p.name == "torch").error is not None
    json.dumps(report.to_dict())


def test_missing_pyav_degrades_to_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    report = doctor.collect(verify=False)
    ffmpeg = next(d for d in report.decoders if d.name == "ffmpeg")
    assert not ffmpeg.available and ffmpeg.error
    [warning] = [f for f in _findings(report, "decoders", "warning") if "PyAV" in f.message]
    assert "m4a/aac" in warning.message and warning.fix is not None and "pip install" in warning.fix
    libsndfile = next(d for d in report.decoders if d.name == "libsndfile")
    assert libsndfile.available  # the other decoder is unaffected


def test_decoders_report_mp3_and_ffmpeg_codecs() -> None:
    report = doctor.collect(verify=False)
    libsndfile, ffmpeg = report.decoders
    assert libsndfile.name == "libsndfile" and "wav" in libsndfile.formats and "flac" in libsndfile.formats
    # The pinned soundfile wheels bundle libsndfile >= 1.1, which reads and writes MP3.
    assert libsndfile.can("mp3_read") and libsndfile.can("mp3_write")
    assert ffmpeg.available and ffmpeg.can("aac_decode") and ffmpeg.can("alac_decode")
    assert not ffmpeg.can("no_such_decode")
    soundfile_pkg = next(p for p in report.packages if p.name == "soundfile")
    assert soundfile_pkg.detail == f"libsndfile {libsndfile.version}"


def test_mp3_that_cannot_be_written_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile

    real_write = soundfile.write

    def no_mp3(file: Any, data: Any, samplerate: int, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("format") == "MP3":
            raise soundfile.LibsndfileError(0, "MP3 not supported")  # as an old libsndfile answers
        real_write(file, data, samplerate, *args, **kwargs)

    monkeypatch.setattr(soundfile, "write", no_mp3)
    report = doctor.collect(verify=False)
    assert not report.decoders[0].can("mp3_write")
    [warning] = [f for f in _findings(report, "decoders", "warning") if "MP3" in f.message]
    assert "cannot write MP3" in warning.message and warning.fix is not None


def test_mp3_that_cannot_be_read_back_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile

    def unreadable(*args: Any, **kwargs: Any) -> None:
        raise soundfile.LibsndfileError(0, "Format not recognised")

    monkeypatch.setattr(soundfile, "read", unreadable)
    report = doctor.collect(verify=False)
    assert report.decoders[0].can("mp3_write") and not report.decoders[0].can("mp3_read")
    [warning] = [f for f in _findings(report, "decoders", "warning") if "MP3" in f.message]
    assert "cannot read MP3" in warning.message


# --- cache and models ----------------------------------------------------------------------------


def test_unwritable_cache_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(blocker / "cache"))  # cannot be created, even by root
    report = doctor.collect(verify=False)
    assert report.cache.root == blocker / "cache" and not report.cache.writable
    [problem] = _findings(report, "cache", "problem")
    assert str(report.cache.checkpoints) in problem.message
    assert problem.fix is not None and "STEMSPLIT_CACHE_DIR" in problem.fix
    assert report.status == "problem"


def test_writable_cache_that_does_not_exist_yet_is_fine_and_left_alone() -> None:
    report = doctor.collect(verify=False)
    assert report.cache.writable and not report.cache.exists
    assert not report.cache.checkpoints.exists()  # doctor creates nothing
    assert _findings(report, "cache", "ok")
    assert list(report.cache.root.iterdir()) == []  # the write probe (made in the root) is gone


@pytest.mark.parametrize(("free", "warned"), [(500_000_000, True), (5_000_000_000, False)])
def test_low_disk_space_is_a_warning(free: int, warned: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    def fake_usage(path: Any) -> SimpleNamespace:
        seen.append(Path(path))
        return SimpleNamespace(total=100 * free, used=99 * free, free=free)

    monkeypatch.setattr(shutil, "disk_usage", fake_usage)
    report = doctor.collect(verify=False)
    assert report.cache.free_bytes == free and seen
    warnings = [f for f in _findings(report, "cache", "warning") if "free" in f.message]
    assert bool(warnings) is warned
    if warned:
        assert "500.0 MB" in warnings[0].message


@pytest.fixture
def tiny_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WeightFile, bytes]]:
    """A one-model registry (the default) whose only file has known bytes."""
    payload = random.Random(3).randbytes(20_000)
    digest = hashlib.sha256(payload).hexdigest()
    wf = WeightFile("abcd0001", f"abcd0001-{digest[:8]}.th", "hybrid_transformer/", digest[:8])
    monkeypatch.setattr(
        models, "MODELS", make_registry(ModelSpec("tiny", "A test model.", ("drums", "bass"), (wf,)))
    )
    monkeypatch.setattr(models, "DEFAULT_MODEL", "tiny")
    yield wf, payload


def _put_in_cache(wf: WeightFile, data: bytes) -> Path:
    path = ModelCache().folder() / wf.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_valid_cached_model_is_verified(tiny_registry: tuple[WeightFile, bytes]) -> None:
    wf, payload = tiny_registry
    path = _put_in_cache(wf, payload)
    report = doctor.collect(verify=True)
    [model] = report.models
    assert model.name == "tiny" and model.default and model.valid
    assert model.files == (doctor_report.ModelFileInfo(wf.filename, path, True, "ok", len(payload)),)
    assert _findings(report, "models", "problem") == []


def test_corrupt_cached_model_is_a_problem_only_when_verified(
    tiny_registry: tuple[WeightFile, bytes],
) -> None:
    wf, payload = tiny_registry
    damaged = bytearray(payload)
    damaged[100] ^= 0xFF
    path = _put_in_cache(wf, bytes(damaged))

    report = doctor.collect(verify=True)
    [model] = report.models
    assert model.files[0].state == "corrupt" and not model.valid
    [problem] = _findings(report, "models", "problem")
    assert str(path) in problem.message and problem.fix == fix_command("tiny")
    assert report.status == "problem"

    fast = doctor.collect(verify=False)
    assert fast.models[0].files[0].state == "unverified" and fast.models[0].valid
    assert _findings(fast, "models", "problem") == []


def test_unwritable_cache_with_the_default_model_present_is_only_a_warning(
    tiny_registry: tuple[WeightFile, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    wf, payload = tiny_registry
    _put_in_cache(wf, payload)
    monkeypatch.setattr(doctor, "_can_write", lambda folder: False)  # root ignores permission bits
    report = doctor.collect(verify=True)
    assert not report.cache.writable
    assert _findings(report, "cache", "problem") == []
    [warning] = [f for f in _findings(report, "cache", "warning") if "not writable" in f.message]
    assert warning.fix is not None


# --- network settings ----------------------------------------------------------------------------


def test_offline_without_the_default_model_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "1")
    report = doctor.collect(verify=False)
    assert report.network.offline
    [problem] = _findings(report, "network", "problem")
    assert "offline" in problem.message and problem.fix is not None
    assert "stemsplit models download htdemucs" in problem.fix and "stemsplit models import" in problem.fix
    assert not any("downloaded on first use" in f.message for f in report.findings)


def test_offline_with_the_default_model_cached_is_fine(
    tiny_registry: tuple[WeightFile, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _put_in_cache(*tiny_registry)
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "yes")
    report = doctor.collect(verify=True)
    assert report.network.offline and _findings(report, "network", "problem") == []
    assert any("offline mode is on" in f.message for f in _findings(report, "network", "ok"))


def test_mirror_proxies_and_ca_bundle_are_reported_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMSPLIT_MODEL_URL", "https://mirror.example/demucs")
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:s3cret@proxy.example:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    report = doctor.collect(verify=False)
    net = report.network
    assert net.mirror == "https://mirror.example/demucs/"
    assert dict(net.proxies) == {
        "HTTPS_PROXY": "http://alice:***@proxy.example:3128",
        "NO_PROXY": "localhost",
    }
    assert (net.ca_bundle_var, net.ca_bundle, net.ca_bundle_exists) == ("SSL_CERT_FILE", str(bundle), True)
    assert "s3cret" not in json.dumps(report.to_dict())
    assert _findings(report, "network", "problem") == []


def test_missing_ca_bundle_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    report = doctor.collect(verify=False)
    [problem] = _findings(report, "network", "problem")
    assert "REQUESTS_CA_BUNDLE" in problem.message and report.network.ca_bundle_exists is False


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://proxy:3128", "http://proxy:3128"),
        ("http://bob@proxy:3128", "http://bob@proxy:3128"),
        ("https://bob:pw@proxy", "https://bob:***@proxy"),
        ("socks5://:pw@[::1]:1080", "socks5://:***@::1:1080"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# --- the command ---------------------------------------------------------------------------------

_SCHEMA: dict[str, Any] = {
    "schema": int,
    "stemsplit": str,
    "python": str,
    "python_implementation": str,
    "executable": str,
    "platform": str,
    "machine": str,
    "packages": [
        {"name": str, "version": (str, type(None)), "detail": (str, type(None)), "error": (str, type(None))}
    ],
    "nvidia": {
        "detected": bool,
        "evidence": (str, type(None)),
        "driver_version": (str, type(None)),
        "cuda_version": (str, type(None)),
    },
    "torch": {
        "version": str,
        "build": str,
        "cuda_version": (str, type(None)),
        "hip_version": (str, type(None)),
        "cuda_available": bool,
        "gpus": list,
        "mps_built": bool,
        "mps_available": bool,
        "threads": int,
        "cpu_count": int,
        "cpu_flags": list,
    },
    "device": {
        "device": str,
        "precision": str,
        "why": str,
        "cpu_backend": str,
        "cpu_backend_why": str,
        "compute": (str, type(None)),
    },
    "decoders": [
        {
            "name": str,
            "available": bool,
            "version": (str, type(None)),
            "formats": list,
            "capabilities": dict,
            "error": (str, type(None)),
        }
    ],
    "cache": {
        "root": str,
        "checkpoints": str,
        "exists": bool,
        "writable": bool,
        "free_bytes": (int, type(None)),
        "total_bytes": (int, type(None)),
        "error": (str, type(None)),
    },
    "models": [
        {
            "name": str,
            "default": bool,
            "cached": bool,
            "files": [
                {"filename": str, "path": str, "cached": bool, "state": str, "size_bytes": (int, type(None))}
            ],
        }
    ],
    "verified": bool,
    "network": {
        "offline": bool,
        "mirror": (str, type(None)),
        "proxies": dict,
        "ca_bundle": (str, type(None)),
        "ca_bundle_var": (str, type(None)),
        "ca_bundle_exists": (bool, type(None)),
    },
    "findings": [{"topic": str, "severity": str, "message": str, "fix": (str, type(None))}],
    "status": str,
}


def _check(value: Any, schema: Any, where: str = "$") -> None:
    """Assert that ``value`` has exactly the keys and types ``schema`` describes."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        assert set(value) == set(schema), f"{where}: {sorted(set(value) ^ set(schema))}"
        for key, sub in schema.items():
            _check(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list) and value, f"{where}: expected a non-empty list"
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    else:
        assert isinstance(value, schema) and not (schema is int and isinstance(value, bool)), (
            f"{where}: {value!r}"
        )


def test_json_output_follows_the_schema() -> None:
    result = runner.invoke(cli.app, ["doctor", "--json"], catch_exceptions=False)
    data = json.loads(result.stdout)
    _check(data, _SCHEMA)
    assert data["schema"] == doctor_report.SCHEMA_VERSION and data["verified"] is True
    assert data["cache"]["checkpoints"] == str(ModelCache().folder())
    assert data["device"]["device"] == str(devices.resolve_device("auto"))
    assert {d["name"] for d in data["decoders"]} == {"libsndfile", "ffmpeg"}
    assert {m["name"] for m in data["models"]} == set(models.MODELS)
    assert {f["severity"] for f in data["findings"]} <= {"ok", "warning", "problem"}
    assert data["status"] != "problem", data["findings"]
    assert result.exit_code == 0


def test_problem_gives_exit_code_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "1")
    result = runner.invoke(cli.app, ["doctor", "--json", "--no-verify"], catch_exceptions=False)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["status"] == "problem" and data["verified"] is False


def test_human_output_names_the_cache_path_and_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    long_cache = Path(os.environ["STEMSPLIT_CACHE_DIR"]) / ("deep-" * 20) / "cache"
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(long_cache))
    result = runner.invoke(cli.app, ["doctor", "--no-verify"], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert f"  path      {long_cache / 'checkpoints'}" in lines  # one line, however long
    assert any(line.split() == ["auto", "cpu,", "float32"] for line in lines)
    for title in ("Versions", "Device", "Decoders", "Cache", "Models", "Network", "Findings"):
        assert title in lines
    assert any(line.startswith("  [ok] auto uses cpu with float32") for line in lines)


def test_the_cpu_backend_is_shown_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from stemsplit.inference import cpu_backend

    result = runner.invoke(cli.app, ["doctor", "--no-verify"], catch_exceptions=False)
    assert any(line.split()[:3] == ["CPU", "backend", "torch"] for line in result.stdout.splitlines())
    assert "ONNX Runtime is not installed" in result.stdout  # an AMD CPU without the runtimes (conftest)

    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(cpu_backend, "missing_packages", lambda: ())
    data = json.loads(runner.invoke(cli.app, ["doctor", "--json", "--no-verify"]).stdout)
    assert data["device"]["cpu_backend"] == "openvino"
    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: "AuthenticAMD")
    data = json.loads(runner.invoke(cli.app, ["doctor", "--json", "--no-verify"]).stdout)
    assert data["device"]["cpu_backend"] == "onnxruntime" and "AMD" in data["device"]["cpu_backend_why"]

    monkeypatch.setattr(cpu_backend, "missing_packages", lambda: ("openvino",))
    monkeypatch.setenv("STEMSPLIT_CPU_BACKEND", "openvino")
    result = runner.invoke(cli.app, ["doctor", "--json", "--no-verify"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["device"]["cpu_backend"] == "unusable"
    assert any("pip install openvino" in f["message"] for f in data["findings"] if f["severity"] == "problem")


def test_doctor_help_does_not_import_torch() -> None:
    code = (
        "import sys; from stemsplit.cli import main\n"
        "try:\n    main(['doctor', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--no-verify" in done.stdout and done.stdout.strip().endswith("False")


def test_on_cuda_doctor_says_batch_size_compile_policy_and_kernel_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A simulated H100 (torch.cuda answers; no kernel runs): the auto device's line says float16, the batch
    size, the compile rule with its numbers, and whether the compiled-kernel cache is warm."""
    from stemsplit.cli.doctor import render as doctor_render
    from stemsplit.inference import accelerator, compute

    name = "NVIDIA H100 80GB HBM3"
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90"])
    props = SimpleNamespace(name=name, total_memory=80 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(accelerator, "_probe", lambda device: None)
    report = doctor.collect(verify=False)
    assert report.device is not None and (report.device.device, report.device.precision) == (
        "cuda:0",
        "float16",
    )
    detail = report.device.compute
    assert detail is not None and "batch size from free memory" in detail
    cold_hours = compute.COLD_COMPILE_S / (1 / 574 - 1 / 1650) / 3600
    assert (
        f"compiled only for {cold_hours:.1f} h of audio or more" in detail and "kernel cache cold" in detail
    )
    compute.mark_compile_cache_warm(compute.compile_cache_dir(), torch.device("cuda", 0))
    warm = doctor.collect(verify=False).device
    warm_hours = compute.WARM_COMPILE_S / (1 / 574 - 1 / 1650) / 3600
    assert warm is not None and warm.compute is not None and "kernel cache warm" in warm.compute
    assert f"compiled only for {warm_hours:.1f} h of audio or more" in warm.compute
    rows = dict(row for _, section in doctor_render.summary(report) for row in section)
    assert rows["CUDA batches"] == detail
