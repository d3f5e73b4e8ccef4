"""A first batch cannot fail a run for an accelerator reason (issue 26, item 4), each path on the CPU by
injecting the failure: a GPU this torch has no kernels for is refused up front (exit code 2) or, with
``--device auto``, left for the CPU with one warning; a kernel error in a batch fails its track with one
line that says what to do. (A failing compile going eager with one warning, and out of memory shrinking the
batch, are ``tests/test_inference_engine.py``'s.)"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from separation_helpers import OneThread, make_tiny_th, write_audio
from stemsplit.errors import AcceleratorError, DeviceFallbackWarning, InvalidOptionError
from stemsplit.inference import DeviceRunner, ModelBag, accelerator
from stemsplit.inference.accelerator import kernel_gap
from stemsplit.inference.compute import resolve_compute
from stemsplit.pipeline import SeparationOptions, plan_batch, separate_batch

NO_KERNEL = "CUDA error: no kernel image is available for execution on the device"
RTX_5090 = "NVIDIA GeForce RTX 5090"


@pytest.fixture
def new_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees one RTX 50-series card (sm_120) and was built up to sm_90, as an old torch is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: RTX_5090)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_50", "sm_80", "sm_90"])
    monkeypatch.setattr(accelerator, "_probe", lambda device: pytest.fail("no kernel may run on this card"))


def test_which_cards_run_which_kernels() -> None:
    assert kernel_gap((8, 6), ["sm_80"], "A") is None  # sm_80 code runs on 8.6
    assert kernel_gap((12, 0), ["sm_80", "compute_90"], "B") is None  # PTX is compiled for newer cards
    assert kernel_gap((9, 0), [], "C") is None  # a build that does not say
    gap = kernel_gap((12, 0), ["sm_80", "sm_90"], RTX_5090)
    assert gap is not None and "sm_120" in gap and RTX_5090 in gap and "sm_80, sm_90" in gap
    assert kernel_gap((7, 5), ["sm_80"], "D") is not None  # older than every kernel


def test_a_named_gpu_without_kernels_is_refused_before_any_work(new_gpu: None) -> None:
    with pytest.raises(InvalidOptionError, match="no kernels for the NVIDIA GeForce RTX 5090") as caught:
        resolve_compute("cuda", "auto", None)
    assert "--device cpu" in str(caught.value) and "CUDA 12.8" in str(caught.value)
    assert caught.value.option == "--device"


def test_a_gpu_that_fails_its_first_kernel_is_refused(monkeypatch: pytest.MonkeyPatch, new_gpu: None) -> None:
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_90", "sm_120"])
    monkeypatch.setattr(accelerator, "_probe", lambda device: NO_KERNEL)
    with pytest.raises(InvalidOptionError, match=r"cannot run torch.s kernels .*no kernel image"):
        resolve_compute("cuda:0", "float16", None)


def test_the_cli_exits_2_for_a_gpu_without_kernels(new_gpu: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stemsplit.cli import separate as cli_separate

    write_audio(tmp_path / "song.wav", seconds=0.3)
    args = [str(tmp_path / "song.wav"), "-d", "cuda", "-o", str(tmp_path / "out")]
    done = CliRunner().invoke(cli_separate.separate_app, args)
    assert done.exit_code == 2, done.output
    assert "no kernels for the NVIDIA GeForce RTX 5090" in " ".join(done.output.split())
    assert not (tmp_path / "out").exists()


def test_auto_leaves_a_gpu_without_kernels_for_the_cpu_with_one_warning(
    new_gpu: None, tmp_path: Path
) -> None:
    compute = resolve_compute("auto", "auto", None)
    assert compute.devices == (torch.device("cpu"),) and compute.dtype == torch.float32
    assert compute.note is not None and "running on the CPU" in compute.note and "sm_120" in compute.note
    write_audio(tmp_path / "song.wav", seconds=0.3)
    with OneThread():
        options = SeparationOptions(model=str(make_tiny_th(tmp_path)), out_dir=tmp_path / "out")
        batch = plan_batch([str(tmp_path / "song.wav")], options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (result,) = separate_batch(batch, options)
    assert result.status == "done" and result.device == "cpu"
    fallbacks = [w for w in caught if issubclass(w.category, DeviceFallbackWarning)]
    assert len(fallbacks) == 1 and RTX_5090 in str(fallbacks[0].message)


class NoKernelModel(torch.nn.Module):
    """Raises what torch raises on a card it has no kernels for, on its first batch."""

    sources = ("drums", "bass", "other", "vocals")

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(f"{NO_KERNEL}\nCUDA kernel errors might be asynchronously reported ...")


def test_a_kernel_error_in_a_batch_is_one_line_that_says_what_to_do() -> None:
    runner = DeviceRunner([NoKernelModel()], torch.device("cpu"), torch.float32, 2)
    with pytest.raises(AcceleratorError, match="no kernel image") as caught:
        runner.result(runner.launch(0, torch.zeros(2, 2, 100)))
    assert "\n" not in str(caught.value) and "--device cpu" in str(caught.value)


def test_other_errors_of_the_model_stay_as_they_are() -> None:
    class Broken(torch.nn.Module):
        def forward(self, mix: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch")

    runner = DeviceRunner([Broken()], torch.device("cpu"), torch.float32, 2)
    with pytest.raises(RuntimeError, match="shape mismatch") as caught:
        runner.result(runner.launch(0, torch.zeros(2, 2, 100)))
    assert not isinstance(caught.value, AcceleratorError)


def test_a_track_whose_batch_hits_a_kernel_error_fails_with_that_line(tmp_path: Path) -> None:
    write_audio(tmp_path / "song.wav", seconds=0.3)
    options = SeparationOptions(model=str(make_tiny_th(tmp_path)), out_dir=tmp_path / "out", device="cpu")
    with OneThread():
        batch = plan_batch([str(tmp_path / "song.wav")], options)
        bag = ModelBag((NoKernelModel(),), NoKernelModel.sources, 44100, 2, 11025)
        (result,) = separate_batch(batch, options, loader=lambda _model: bag)
    assert result.status == "failed" and result.error is not None
    assert "no kernel image" in result.error and "internal error" not in result.error
    assert "--device cpu" in result.error and "\n" not in result.error


class FailsOnce(torch.nn.Module):
    """A GPU failure on the first batch only, then a working network (the CPU run after it)."""

    sources = ("drums", "bass", "other", "vocals")

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            self.failed = True
            raise RuntimeError(NO_KERNEL)
        return torch.stack([mix * 0.25] * 4, dim=1)


def test_with_auto_a_kernel_error_mid_run_moves_the_batch_to_the_cpu(tmp_path: Path) -> None:
    """``--device auto`` on a GPU (``cpu_fallback``, set by hand: this machine has none) that fails in its
    first batch: one warning, and every track is separated on the CPU."""
    import dataclasses

    for i in range(2):
        write_audio(tmp_path / f"song{i}.wav", seconds=0.3, seed=i)
    options = SeparationOptions(model=str(make_tiny_th(tmp_path)), out_dir=tmp_path / "out", device="cpu")
    with OneThread():
        batch = plan_batch([str(tmp_path / f"song{i}.wav") for i in range(2)], options)
        batch = dataclasses.replace(batch, compute=dataclasses.replace(batch.compute, cpu_fallback=True))
        bag = ModelBag((FailsOnce(),), FailsOnce.sources, 44100, 2, 11025)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = separate_batch(batch, options, loader=lambda _model: bag)
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    assert all(r.device == "cpu" for r in results)
    fallbacks = [w for w in caught if issubclass(w.category, DeviceFallbackWarning)]
    assert len(fallbacks) == 1 and "no kernel image" in str(fallbacks[0].message)
    assert "continuing on the CPU" in str(fallbacks[0].message)
