"""The CPU backend of the trunk: the rule that picks it, the OpenVINO path against the reference, its export
cache, and the ways back to PyTorch (package missing, export failing)."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from checkpoints import random_state
from engine_models import (
    make_reference_htdemucs,
    make_small_reference_htdemucs,
    reference_separate,
    stemsplit_twin,
)
from stemsplit.errors import CpuBackendFallbackWarning, InvalidOptionError
from stemsplit.inference import EngineOptions, ModelBag, cpu_backend, separate_tensor
from stemsplit.inference.cpu_backend import choose_cpu_backend, resolve_cpu_backend, trunk_key

INTEL, AMD = "GenuineIntel", "AuthenticAMD"


# --- the rule ------------------------------------------------------------------------------------

REAL_MISSING = cpu_backend.missing_packages  # conftest hides the runtimes from every other test


@pytest.fixture(autouse=True)
def _real_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_backend, "missing_packages", REAL_MISSING)


@pytest.mark.parametrize(
    ("dtype", "vendor", "amx", "name", "words"),
    [
        (torch.float32, INTEL, False, "openvino", "Intel CPU"),
        (torch.float32, INTEL, True, "openvino", "Intel CPU"),
        (torch.bfloat16, INTEL, True, "openvino", "bfloat16"),
        (torch.float32, AMD, False, "onnxruntime", "AMD"),
        (torch.float32, "", False, "onnxruntime", "Arm unmeasured"),
        (torch.bfloat16, INTEL, False, "torch", "AMX only"),
        (torch.bfloat16, AMD, True, "torch", "AMX only"),
        (torch.float16, INTEL, True, "torch", "not float16"),
    ],
)
def test_auto_picks_the_runtime_measured_faster_per_cpu_family_and_says_why(
    dtype: torch.dtype, vendor: str, amx: bool, name: str, words: str
) -> None:
    choice = choose_cpu_backend("auto", dtype, vendor, (), amx=amx)
    assert choice.name == name
    assert words in choice.why


@pytest.mark.parametrize(
    ("vendor", "missing", "words"),
    [
        (INTEL, ("openvino",), "OpenVINO is not installed (openvino)"),
        (AMD, ("onnxruntime",), "ONNX Runtime is not installed (onnxruntime)"),
        (AMD, ("onnx", "onnxscript"), "ONNX Runtime is not installed (onnx, onnxscript)"),
    ],
)
def test_without_a_runtimes_wheel_auto_is_torch(vendor: str, missing: tuple[str, ...], words: str) -> None:
    choice = choose_cpu_backend("auto", torch.float32, vendor, missing)
    assert choice.name == "torch"
    assert words in choice.why


def test_explicit_choices_and_bad_names() -> None:
    assert choose_cpu_backend("torch", torch.float32, INTEL, ()).name == "torch"
    assert choose_cpu_backend("openvino", torch.float32, AMD, ()).name == "openvino"
    assert choose_cpu_backend("openvino", torch.bfloat16, AMD, ()).name == "openvino"
    assert choose_cpu_backend("onnxruntime", torch.float32, INTEL, ()).name == "onnxruntime"
    bf16 = choose_cpu_backend("onnxruntime", torch.bfloat16, AMD, ())
    assert bf16.name == "torch" and "ONNX Runtime is not used for bfloat16" in bf16.why
    with pytest.raises(InvalidOptionError, match="pip install onnxscript"):
        choose_cpu_backend("openvino", torch.float32, INTEL, ("onnxscript",))
    with pytest.raises(InvalidOptionError, match="pip install onnxruntime"):
        choose_cpu_backend("onnxruntime", torch.float32, AMD, ("onnxruntime", "openvino"))
    assert choose_cpu_backend("onnxruntime", torch.float32, AMD, ("openvino",)).name == "onnxruntime"
    with pytest.raises(InvalidOptionError, match="auto, torch, openvino or onnxruntime"):
        choose_cpu_backend("fast", torch.float32, INTEL, ())


def test_the_environment_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: INTEL)
    monkeypatch.setattr(cpu_backend, "missing_packages", lambda: ())
    assert resolve_cpu_backend(None, torch.float32).name == "openvino"
    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: AMD)
    assert resolve_cpu_backend(None, torch.float32).name == "onnxruntime"
    monkeypatch.setenv("STEMSPLIT_CPU_BACKEND", "Torch")
    assert resolve_cpu_backend(None, torch.float32).name == "torch"
    assert resolve_cpu_backend("openvino", torch.float32).name == "openvino"  # the option wins


def test_the_compute_line_says_torch_when_compile_on_wins_over_openvino(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stemsplit.pipeline import SeparationOptions
    from stemsplit.pipeline import compute_for as resolve_compute

    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: INTEL)
    monkeypatch.setattr(cpu_backend, "missing_packages", lambda: ())
    plain = resolve_compute(SeparationOptions(device="cpu", precision="float32"))
    assert plain.cpu_backend is not None and plain.cpu_backend.name == "openvino"
    compiled = resolve_compute(SeparationOptions(device="cpu", precision="float32", compile="on"))
    assert compiled.cpu_backend is not None and compiled.cpu_backend.name == "torch"  # as the runner does
    assert "--compile on" in compiled.describe()


# --- the exported trunk ---------------------------------------------------------------------------

openvino_needed = pytest.mark.skipif(
    any(p in cpu_backend.missing_packages() for p in cpu_backend.RUNTIME_PACKAGES["openvino"]),
    reason="OpenVINO has no wheel here",
)
runtimes = pytest.mark.parametrize(
    "runtime",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                any(p in cpu_backend.missing_packages() for p in packages), reason=f"{name} has no wheel here"
            ),
        )
        for name, packages in cpu_backend.RUNTIME_PACKAGES.items()
    ],
)


def _bag(model: torch.nn.Module) -> ModelBag:
    return ModelBag.single(model)


def _track(seconds: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.25 * torch.randn(2, int(seconds * 44100) | 1, generator=g)


def _options(backend: str, cache: Path, **kwargs: object) -> EngineOptions:
    return EngineOptions(
        device="cpu", precision="float32", cpu_backend=backend, compile_cache_dir=cache, **kwargs
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = make_small_reference_htdemucs(seed=0)
    return reference, stemsplit_twin(reference)


def _a_runtime() -> cpu_backend.Runtime:
    """A runtime whose wheel is here, to make an export with (the file is the same for both)."""
    for name in ("openvino", "onnxruntime"):
        if not any(p in REAL_MISSING() for p in cpu_backend.RUNTIME_PACKAGES[name]):
            return name
    pytest.skip("neither OpenVINO nor ONNX Runtime has a wheel here")


@pytest.fixture(scope="module")
def small_export(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``small_pair``'s export, made once for the tests whose subject is what happens after an export (each
    copies it into its own cache folder with :func:`_seed`): an export costs seconds even for this network."""
    _, ours = small_pair
    folder = tmp_path_factory.mktemp("small-export")
    return cpu_backend.ExportedTrunk(ours, folder, 1, ours.segment_samples, runtime=_a_runtime()).path


def _seed(cache: Path, export: Path) -> None:
    """Put a copy of ``export`` (its time kept) into the cache folder ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy2(export, cache / export.name)


def _counted_exports(monkeypatch: pytest.MonkeyPatch, made: Path | None = None) -> list[Path]:
    """Record the path of every export from now on. With ``made``, an export is a copy of the export of the
    same name in that folder (for tests whose subject is what happens around an export, not the export: one
    costs seconds even for a small network); without, the exporter runs."""
    exported: list[Path] = []
    real_export = cpu_backend._export

    def export(model: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
        exported.append(path)
        if made is None:
            real_export(model, example, path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(made / path.name, path)

    monkeypatch.setattr(cpu_backend, "_export", export)
    return exported


def _runtime_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the runtime of every call of an exported trunk (one per window) from now on."""
    calls: list[str] = []
    real_call = cpu_backend.ExportedTrunk.__call__

    def counted(trunk: cpu_backend.ExportedTrunk, x: torch.Tensor, xt: torch.Tensor) -> object:
        calls.append(trunk.runtime)
        return real_call(trunk, x, xt)

    monkeypatch.setattr(cpu_backend.ExportedTrunk, "__call__", counted)
    return calls


def _exports(cache: Path) -> list[Path]:
    """What the backend wrote beside OpenVINO's own blob folder (exports, and temp files if it left any)."""
    return sorted(p for p in (cache / "openvino").glob("*") if not p.name.startswith("blobs-"))


@runtimes
@pytest.mark.parity
def test_a_runtime_equals_the_reference(
    runtime: str,
    small_pair: tuple[torch.nn.Module, torch.nn.Module],
    small_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One export, read by each runtime: the track equals demucs', window by window whatever the batch."""
    reference, ours = small_pair
    _seed(tmp_path / "openvino", small_export)
    exported = _counted_exports(monkeypatch, small_export.parent)
    wav = _track(1.3, seed=1)
    got = separate_tensor(_bag(ours), wav, options=_options(runtime, tmp_path))
    assert (got - reference_separate(reference, wav)).abs().max() <= 1e-4
    again = separate_tensor(_bag(ours), wav, options=_options(runtime, tmp_path, batch_size=2))
    assert (again - got).abs().max() <= 1e-5  # batch 2 pads with a silent window; same arithmetic per window
    assert exported == []  # the export in the cache was read


@openvino_needed
def test_one_export_is_cached_per_weights(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run exports one file (no temp file left beside it), the next reads it, other weights get
    their own."""
    _, ours = small_pair
    exports = _counted_exports(monkeypatch)
    wav = _track(0.3, seed=1)
    separate_tensor(_bag(ours), wav, options=_options("openvino", tmp_path))
    files = _exports(tmp_path)
    assert len(exports) == 1 and files == exports
    separate_tensor(_bag(ours), wav, options=_options("openvino", tmp_path))
    assert len(exports) == 1
    other = make_small_reference_htdemucs(seed=1)
    separate_tensor(_bag(stemsplit_twin(other)), wav, options=_options("openvino", tmp_path))
    assert len(exports) == 2 and len(_exports(tmp_path)) == 2


@openvino_needed
def test_a_bags_exports_are_spread_over_runs_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no time left in the budget after the first export, the first run exports one member and runs the
    others in PyTorch (saying so); the second run exports the rest, whatever the budget; same results; once
    all are exported, nothing is exported."""
    from stemsplit.inference import runner

    members = [stemsplit_twin(make_small_reference_htdemucs(seed=seed)) for seed in (0, 1, 2)]
    bag = ModelBag(tuple(members), tuple(members[0].sources), 44100, 2, members[0].segment_samples)
    wav = _track(0.7, seed=5)
    expected = separate_tensor(bag, wav, options=_options("torch", tmp_path))
    exports = _counted_exports(monkeypatch)
    monkeypatch.setattr(runner, "EXPORT_BUDGET_S", 0.0)
    for run in (1, 2, 3):
        got = separate_tensor(bag, wav, options=_options("openvino", tmp_path))
        assert len(exports) == (1 if run == 1 else 3)
        assert len(list((tmp_path / "openvino").glob("*.deferred"))) == (2 if run == 1 else 0)
        assert (got - expected).abs().max() <= 1e-4
    _counted_exports(monkeypatch, tmp_path / "openvino")
    notes: list[str] = []
    fresh = runner.DeviceRunner(
        bag.models,
        torch.device("cpu"),
        torch.float32,
        1,
        cpu_backend="openvino",
        backend_cache_dir=tmp_path / "other",
    )
    with fresh:
        fresh.prepare(notes.append)
    assert [n.split(":")[0] for n in notes] == [
        "preparing the OpenVINO backend",
        "the OpenVINO backend",
        "the OpenVINO backend",
    ]
    assert "(2 of 3) runs in PyTorch this time; the next run exports it" in notes[1]


@openvino_needed
def test_a_new_export_removes_those_of_other_versions_and_keeps_this_versions(
    small_pair: tuple[torch.nn.Module, torch.nn.Module],
    small_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, ours = small_pair
    exported = _counted_exports(monkeypatch, small_export.parent)
    cache = tmp_path / "openvino"
    cache.mkdir()
    older = cache / f"trunk-1-0.0.1-2.0.0_cpu-{'a' * 32}.onnx"  # an older stemsplit's export
    unversioned = cache / f"trunk-{'b' * 32}.onnx"  # named before versions were in the name
    sibling = cache / f"trunk-{cpu_backend._generation()}-{'c' * 32}.onnx"  # another model of this version
    for path in (older, unversioned, sibling):
        path.write_bytes(b"onnx")
    old_blobs = cache / "blobs-2020.1.0"  # the compiled models of an older OpenVINO
    old_blobs.mkdir()
    (old_blobs / "model.blob").write_bytes(b"blob")
    blobs = cache / f"blobs-{cpu_backend._safe(cpu_backend.import_openvino().__version__)}"
    siblings = cpu_backend._blob_folder(sibling, blobs)  # this OpenVINO's blobs of the other model: kept
    gone = blobs / f"{older.stem}-4-1"  # of the older stemsplit's export: removed with it
    stale = blobs / f"{sibling.stem}-4-1"  # of the other model's file as it was before it was written again
    for folder in (siblings / "f32-1", gone / "f32-1", stale / "f32-1"):
        folder.mkdir(parents=True)
        (folder / "model.blob").write_bytes(b"blob")
    trunk = cpu_backend.ExportedTrunk(ours, cache, 1, ours.segment_samples)
    assert exported == [trunk.path]
    assert trunk.blobs == blobs
    assert sorted(cache.iterdir()) == sorted([sibling, trunk.path, trunk.blobs])
    assert sorted(blobs.iterdir()) == sorted([siblings, cpu_backend._blob_folder(trunk.path, blobs)])


def test_a_compiled_blob_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    """The compile writes its blob into a folder of its own, which takes the blob folder's name only once the
    compile returned; a later compile reads that folder; a failed compile leaves nothing; of two processes
    compiling at once, the first folder stays; temporaries older than an hour (killed processes) go."""
    folder = tmp_path / "blobs" / "trunk-x-1-2" / "f32-2"
    seen: list[Path] = []

    def compiler(target: Path, blob: bytes = b"blob") -> Callable[[Path], str]:
        def compile(cache: Path) -> str:
            assert not target.exists() or cache == target  # never half a folder under the name
            seen.append(cache)
            cache.mkdir(exist_ok=True)
            (cache / "model.blob").write_bytes(blob)
            return "compiled"

        return compile

    stale, fresh = folder.with_name(".f32-1.99.tmp"), folder.with_name(".f32-4.98.tmp")  # killed, running
    for temp in (stale, fresh):
        temp.mkdir(parents=True)
    os.utime(stale, (0, time.time() - 2 * cpu_backend.STALE_S))
    assert cpu_backend._compile_once(folder, compiler(folder)) == "compiled"
    assert seen[0] != folder and seen[0].parent == folder.parent
    assert sorted(folder.parent.iterdir()) == sorted([folder, fresh])  # stale gone, fresh kept
    assert (folder / "model.blob").read_bytes() == b"blob"
    assert cpu_backend._compile_once(folder, compiler(folder, b"read")) == "compiled"
    assert seen[1] == folder  # read back in place

    def fails(cache: Path) -> str:
        cache.mkdir(exist_ok=True)
        (cache / "model.blob").write_bytes(b"half")
        raise RuntimeError("killed")

    other = folder.with_name("bf16-2")
    with pytest.raises(RuntimeError, match="killed"):
        cpu_backend._compile_once(other, fails)
    assert not other.exists() and sorted(folder.parent.iterdir()) == sorted([folder, fresh])

    def beaten(cache: Path) -> str:  # another process renames its folder into place first
        compiler(other)(cache)
        shutil.copytree(folder, other)
        (other / "model.blob").write_bytes(b"theirs")
        return "compiled"

    assert cpu_backend._compile_once(other, beaten) == "compiled"
    assert (other / "model.blob").read_bytes() == b"theirs"
    assert sorted(folder.parent.iterdir()) == sorted([folder, other, fresh])


@openvino_needed
def test_the_compiled_model_is_cached_beside_the_export_and_read_back(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], small_export: Path, tmp_path: Path
) -> None:
    """The second trunk of the same export reads OpenVINO's compiled blob (its modification time is kept, no
    second blob) and computes the same outputs; a new OpenVINO version's folder replaces the old one."""
    _, ours = small_pair
    _seed(tmp_path, small_export)
    first = cpu_backend.ExportedTrunk(ours, tmp_path, 1, ours.segment_samples)
    blobs = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".onnx")
    assert len(blobs) == 1 and blobs[0].stat().st_size > 0
    written = blobs[0].stat().st_mtime_ns
    second = cpu_backend.ExportedTrunk(ours, tmp_path, 1, ours.segment_samples)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".onnx") == blobs
    assert blobs[0].stat().st_mtime_ns == written
    with torch.no_grad():
        analysis = ours.analyse(
            torch.randn(1, 2, ours.segment_samples, generator=torch.Generator().manual_seed(3))
        )
        for a, b in zip(first(analysis.x, analysis.xt), second(analysis.x, analysis.xt), strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@openvino_needed
def test_an_export_written_again_gets_a_compiled_blob_of_its_own(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], small_export: Path, tmp_path: Path
) -> None:
    """A compiled blob is read back only for the export file as it was when compiled: once the file is
    written again (another process, another build of the same version), OpenVINO compiles anew (a blob read
    for another file crashed OpenVINO's inference)."""
    _, ours = small_pair
    _seed(tmp_path, small_export)
    first = cpu_backend.ExportedTrunk(ours, tmp_path, 1, ours.segment_samples)
    made = first.path.stat()
    os.utime(first.path, ns=(made.st_atime_ns, made.st_mtime_ns + 10**9))
    cpu_backend.ExportedTrunk(ours, tmp_path, 1, ours.segment_samples)
    blobs = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".onnx"]
    assert len(blobs) == 2 and len({p.parent for p in blobs}) == 2


def test_the_key_follows_the_weights_and_the_shapes(
    small_pair: tuple[torch.nn.Module, torch.nn.Module],
) -> None:
    _, ours = small_pair
    shapes = ((4, 2048, 6), (2, 22050))
    key = trunk_key(ours, shapes)
    assert trunk_key(ours, shapes) == key
    assert trunk_key(ours, ((4, 2048, 7), (2, 22050))) != key
    changed = stemsplit_twin(make_small_reference_htdemucs(seed=0))
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    assert trunk_key(changed, shapes) != key


@openvino_needed
def test_the_export_silences_its_own_noise_and_no_other_warning(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warnings filters are process-wide: while the trunk exports (seconds), a stem writer's warning
    from another thread must still reach the user."""
    _, ours = small_pair
    with torch.no_grad():
        analysis = ours.analyse(torch.zeros(1, 2, ours.segment_samples))
    real_export = torch.onnx.export

    def export_meanwhile_a_writer_warns(*args: object, **kwargs: object) -> object:
        warnings.warn("a stem writer's warning", UserWarning, stacklevel=1)
        return real_export(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.onnx, "export", export_meanwhile_a_writer_warns)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cpu_backend._export(ours, (analysis.x, analysis.xt), tmp_path / "trunk.onnx")
    assert [str(w.message) for w in seen] == ["a stem writer's warning"]
    assert (tmp_path / "trunk.onnx").is_file()


@runtimes
def test_a_failing_export_leaves_no_file_and_falls_back_to_torch(
    runtime: str,
    small_pair: tuple[torch.nn.Module, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, ours = small_pair
    wav = _track(0.7, seed=2)

    real_export = torch.onnx.export

    def broken_export(*args: Any, **kwargs: Any) -> Any:
        program = real_export(*args, **kwargs)

        def save(path: str, **_: object) -> None:  # dies half-way through writing the file
            Path(path).write_bytes(b"half a file")
            raise RuntimeError("exporter broke")

        program.save = save
        return program

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.warns(CpuBackendFallbackWarning, match="exporter broke"):
        got = separate_tensor(_bag(ours), wav, options=_options(runtime, tmp_path))
    assert _exports(tmp_path) == []
    expected = separate_tensor(_bag(ours), wav, options=_options("torch", tmp_path))
    assert torch.equal(got, expected)


def test_without_the_packages_auto_runs_torch_and_openvino_is_refused(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ours = small_pair
    monkeypatch.setattr(cpu_backend, "cpu_vendor", lambda: INTEL)
    monkeypatch.setattr(cpu_backend, "missing_packages", lambda: ("openvino",))
    wav = _track(0.4, seed=3)
    got = separate_tensor(_bag(ours), wav, options=_options("auto", tmp_path))
    assert torch.equal(got, separate_tensor(_bag(ours), wav, options=_options("torch", tmp_path)))
    assert _exports(tmp_path) == []
    with pytest.raises(InvalidOptionError, match="openvino is not installed"):
        separate_tensor(_bag(ours), wav, options=_options("openvino", tmp_path))


@pytest.fixture(scope="module")
def full_size(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Path]:
    """A full-size network with unit-order layer scales, a track, demucs' separation of it, and one cache
    folder shared by both runtimes' tests (one export serves both: the second test reads the first's)."""
    reference = make_reference_htdemucs(seed=0)
    reference.load_state_dict(random_state(reference))
    wav = _track(4.3, seed=9)
    cache = tmp_path_factory.mktemp("full-size-cache")
    return stemsplit_twin(reference), wav, reference_separate(reference, wav), cache


@runtimes
@pytest.mark.parity
@pytest.mark.slow
def test_full_size_through_a_runtime_equals_the_reference(
    runtime: str, full_size: tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Path]
) -> None:
    """With unit-order layer scales (``random_state``): the reference's own initialisation (1e-4) hides the
    DConvs, whose norms over a whole window's samples OpenVINO's own norm computes to only 1e-4..4e-4."""
    ours, wav, expected, cache = full_size
    got = separate_tensor(_bag(ours), wav, options=_options(runtime, cache))
    assert (got - expected).abs().max() <= 1e-4
    assert len(_exports(cache)) == 1


@openvino_needed
def test_the_export_fits_only_inputs_of_its_shapes(
    small_pair: tuple[torch.nn.Module, torch.nn.Module], small_export: Path, tmp_path: Path
) -> None:
    _, ours = small_pair
    _seed(tmp_path, small_export)
    trunk = cpu_backend.ExportedTrunk(ours, tmp_path, 1, ours.segment_samples)
    with torch.no_grad():
        analysis = ours.analyse(_track(0.2, seed=4)[None])
        assert trunk.fits(analysis.x, analysis.xt)  # HT Demucs pads every window to its own
        x, xt = analysis.x[..., :-1], analysis.xt[..., :-1024]  # shorter than the exported window
    assert not trunk.fits(x, xt)


@pytest.fixture(scope="module")
def hybrid_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export of the small Hybrid Demucs (``make_reference_hdemucs(seed=2, small=True)``) for its own
    window, made once for the tests below (each copies it into its own cache folder)."""
    from engine_models import make_reference_hdemucs

    ours = stemsplit_twin(make_reference_hdemucs(seed=2, small=True))
    folder = tmp_path_factory.mktemp("hybrid-export")
    return cpu_backend.ExportedTrunk(ours, folder, 1, ours.segment_samples, runtime=_a_runtime()).path


@runtimes
@pytest.mark.parity
def test_hybrid_demucs_through_a_runtime_equals_the_reference(
    runtime: str, hybrid_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hybrid Demucs v3 (BiLSTM, local attention, a short last window) on an exported backend: the full
    windows go through the export, the short last one through PyTorch, and the track equals demucs."""
    from engine_models import make_reference_hdemucs

    reference = make_reference_hdemucs(seed=2, small=True)
    ours = stemsplit_twin(reference)
    wav = _track(3.7, seed=4)  # the tiny model's window is 2.5 s: one full window and a short last one
    _seed(tmp_path / "openvino", hybrid_export)
    exported = _counted_exports(monkeypatch, hybrid_export.parent)
    calls = _runtime_calls(monkeypatch)
    got = separate_tensor(_bag(ours), wav, options=_options(runtime, tmp_path))
    assert exported == [] and calls == [runtime]  # the one full window, through the export in the cache
    assert (got - reference_separate(reference, wav)).abs().max() <= 1e-4


@openvino_needed
def test_the_export_follows_the_runners_window_not_the_models_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bag whose window differs from its model's segment (Hybrid Demucs: ``hdemucs_mmi`` runs 44-s windows
    of a 40-s model): the trunk is exported for the window the runner runs, so OpenVINO runs every full one."""
    from engine_models import make_reference_hdemucs

    reference = make_reference_hdemucs(seed=2, small=True)
    ours = stemsplit_twin(reference)
    window = ours.segment_samples * 3 // 5  # 1.5 s of a 2.5-s model
    examples: list[tuple[torch.Tensor, ...]] = []
    real_export = cpu_backend._export
    monkeypatch.setattr(cpu_backend, "_export", lambda m, e, p: (examples.append(e), real_export(m, e, p)))
    calls = _runtime_calls(monkeypatch)
    wav = _track(3.7, seed=5)
    got = separate_tensor(_bag(ours), wav, options=_options("openvino", tmp_path, segment_samples=window))
    (example,) = examples
    assert example[1].shape[-1] == window
    assert calls.count("openvino") >= 2  # the full windows of the track
    expected = separate_tensor(_bag(ours), wav, options=_options("torch", tmp_path, segment_samples=window))
    assert (got - expected).abs().max() <= 1e-4


@openvino_needed
def test_an_error_of_the_pytorch_trunk_is_not_blamed_on_openvino(hybrid_export: Path, tmp_path: Path) -> None:
    """The short last window runs the PyTorch trunk: its errors are raised as they are, and do not turn
    OpenVINO off with a misleading warning."""
    from engine_models import make_reference_hdemucs

    ours = stemsplit_twin(make_reference_hdemucs(seed=2, small=True))
    _seed(tmp_path / "openvino", hybrid_export)
    real_trunk = ours.trunk

    def trunk(x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if xt.shape[-1] != ours.segment_samples:
            raise RuntimeError("the PyTorch trunk broke")
        return real_trunk(x, xt)

    ours.trunk = trunk  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CpuBackendFallbackWarning)
        with pytest.raises(RuntimeError, match="the PyTorch trunk broke"):
            separate_tensor(_bag(ours), _track(3.7, seed=6), options=_options("openvino", tmp_path))


@openvino_needed
def test_a_first_export_is_announced_once_and_a_cached_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export takes seconds to a minute on a real model, before the first window: the CLI says why the
    bar waits (on stderr, not with -q); a later run that finds the export cached says nothing."""
    from typer.testing import CliRunner

    from separation_helpers import OneThread, make_tiny_th, write_audio
    from stemsplit.cli.separate import separate_app

    model = make_tiny_th(tmp_path)
    write_audio(tmp_path / "song.wav", seconds=0.6)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEMSPLIT_CPU_BACKEND", "openvino")
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args: str) -> str:
        with OneThread():
            result = CliRunner().invoke(separate_app, ["song.wav", "-n", str(model), "-d", "cpu", *args])
        assert result.exit_code == 0, result.stderr
        return result.stderr

    first = run("-o", "a", "--precision", "float32")
    assert first.count("preparing the OpenVINO backend: exporting HTDemucs (1 of 1) once") == 1
    assert "later runs reuse it" in first
    assert "preparing" not in run("-o", "b", "--precision", "float32")  # cached
    (made,) = {p.parent for p in (tmp_path / "cache").rglob("trunk-*.onnx")}
    exported = _counted_exports(monkeypatch, made)
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path / "fresh-cache"))  # an export again, quietly
    assert run("-o", "c", "--precision", "float32", "-q") == ""
    assert len(exported) == 1 and exported[0].is_file()


@openvino_needed
def test_bfloat16_runs_the_export_through_openvino_close_to_float32(
    small_pair: tuple[torch.nn.Module, torch.nn.Module],
    small_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--precision bfloat16`` on OpenVINO: the full windows go through the export with OpenVINO's bfloat16
    hint (on a CPU without bfloat16 arithmetic OpenVINO keeps float32), the track stays within the SNR bar
    of ``--precision auto`` against the float32 reference; and the float32 export is the same file."""
    reference, ours = small_pair
    _seed(tmp_path / "openvino", small_export)
    wav = _track(1.3, seed=7)
    expected = reference_separate(reference, wav)
    calls = _runtime_calls(monkeypatch)
    options = EngineOptions(
        device="cpu", precision="bfloat16", cpu_backend="openvino", compile_cache_dir=tmp_path
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bfloat16 is slow on a CPU without AMX: a warning, not this test's
        got = separate_tensor(_bag(ours), wav, options=options)
    assert calls and set(calls) == {"openvino"}
    snr = 10 * torch.log10(expected.pow(2).sum() / (got - expected).pow(2).sum())
    assert snr >= 35.0
    separate_tensor(_bag(ours), wav, options=_options("onnxruntime", tmp_path))
    assert len(_exports(tmp_path)) == 1  # one export serves both runtimes and both precisions


@openvino_needed
def test_openvino_is_imported_without_its_telemetry(tmp_path: Path) -> None:
    """The runtime imported through ``import_openvino`` and a model compiled into a cache folder write
    nothing under the user's home (OpenVINO's conversion tools count every import there and send an event),
    in a fresh process whose home is a temporary folder; the tools are still there for whoever imports them
    (found, not imported: their import would send the event)."""
    script = """
import pathlib, sys
import numpy
from stemsplit.inference.cpu_backend import import_openvino
ov = import_openvino()
assert "openvino.tools.ovc" not in sys.modules
import openvino.opset13 as ops
param = ops.parameter([2], ov.Type.f32)
cache = {"CACHE_DIR": sys.argv[2]}
compiled = ov.Core().compile_model(ov.Model([ops.relu(param)], [param]), "CPU", cache)
assert list(compiled([numpy.array([-1.0, 2.0], numpy.float32)]).values())[0].tolist() == [0.0, 2.0]
assert list(pathlib.Path(sys.argv[1]).rglob("*")) == [], "written under the home folder"
import importlib.util
assert importlib.util.find_spec("openvino.tools.ovc") is not None  # the tools are still there
"""
    home = tmp_path / "home"
    # CI unset: the tools skip their telemetry in CI, and the test must see them try
    _run_with_home(script, home, str(home), str(tmp_path / "cache"), unset=("CI",))


@pytest.mark.skipif("onnxruntime" in cpu_backend.missing_packages(), reason="ONNX Runtime has no wheel here")
def test_onnx_runtime_is_imported_with_its_telemetry_off(tmp_path: Path) -> None:
    """A session made the way the backend makes it writes nothing under the user's home (ONNX Runtime's
    event store and device id), in a fresh process whose home is a temporary folder."""
    script = """
import numpy, onnx
from onnx import helper
from stemsplit.inference.cpu_backend import import_onnxruntime
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
    [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 9
ort = import_onnxruntime()
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
assert session.run(None, {"x": numpy.full(1, -1.0, numpy.float32)})[0][0] == 0.0
"""
    _run_with_home(script, tmp_path, unset=("ORT_DISABLE_TELEMETRY",))
    assert list(tmp_path.rglob("*")) == []


def _run_with_home(script: str, home: Path, *args: str, unset: tuple[str, ...] = ()) -> None:
    """Run ``script`` (with ``args``) in a fresh Python whose home and cache folder are ``home`` (made if
    missing), without the variables ``unset``; it must exit 0."""
    import subprocess
    import sys

    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    subprocess.run([sys.executable, "-c", script, *args], env=env, check=True, timeout=120)
