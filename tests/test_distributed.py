"""Separating on a real local Ray cluster (started once for the module): the same stems as a local run,
workers killed mid-run, a job interrupted and resumed, bad inputs, a model that differs on a node.

The cluster has two CPU slots, so two workers of one slot each; the tiny random model runs in well under a
second per track. Tests that assert float32 equality pin ``precision="float32"`` (the workers see the real
CPU, not the simulated one of ``conftest.py``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import soundfile as sf
from typer.testing import CliRunner

from checkpoints import FOUR
from separation_helpers import OneThread, make_tiny_th, write_audio
from stemsplit import distributed
from stemsplit.cli.separate import _detail, separate_app
from stemsplit.errors import WorkerModelError
from stemsplit.pipeline import (
    BatchInterrupted,
    SeparationOptions,
    TrackResult,
    plan_batch,
    separate_batch,
)

FLOAT = {"device": "cpu", "precision": "float32", "bit_depth": "32f", "clip": "none"}
LENGTHS = (0.1, 0.9, 0.4, 1.3, 0.7, 1.1)  # the tiny model's window is 0.25 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray cluster for the module: two CPU slots, no dashboard, workers with their own cache and,
    like this process (``conftest.py``), the PyTorch CPU backend whatever the CPU."""
    cache = tmp_path_factory.mktemp("worker-cache")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"STEMSPLIT_CACHE_DIR": str(cache), "STEMSPLIT_CPU_BACKEND": "torch"}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_th(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("songs")
    paths = []
    for i, seconds in enumerate(LENGTHS):
        write_audio(folder / f"song{i}.wav", seconds=seconds, seed=i)
        paths.append(folder / f"song{i}.wav")
    return paths


@pytest.fixture(scope="module")
def local_stems(songs: list[Path], model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every stem file of a local run, by path below the output folder (the reference)."""
    out = tmp_path_factory.mktemp("local")
    options = SeparationOptions(model=str(model), out_dir=out, **FLOAT)
    with OneThread(), pytest.MonkeyPatch.context() as patch:  # as each Ray worker of one CPU slot runs
        patch.setenv("STEMSPLIT_CPU_BACKEND", "torch")  # as the workers (a module fixture: before conftest's)
        results = separate_batch(plan_batch([str(p) for p in songs], options), options)
    assert [r.status for r in results] == ["done"] * len(songs)
    return _stem_files(out)


def _stem_files(out: Path) -> dict[str, bytes]:
    """Every stem's samples (32-bit float, exactly as written), by path below ``out``.

    The samples, not the files' bytes: two local runs' WAV files already differ in their metadata.
    """
    stems = {}
    for path in sorted(p for p in out.rglob("*.wav") if p.is_file()):
        samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
        stems[str(path.relative_to(out))] = samples.tobytes()
    return stems


def _visible_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _options(model: Path, out: Path, **settings: object) -> SeparationOptions:
    return SeparationOptions(model=str(model), out_dir=out, **{**FLOAT, **settings})  # type: ignore[arg-type]


def _worker_pids(method: str = "") -> list[int]:
    """The processes of our Ray workers (their title is ``ray::TrackWorker`` or ``ray::TrackWorker.<method>``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::TrackWorker" + (f".{method}" if method else "")):
            pids.append(int(entry.name))
    return pids


def _wait_until(condition, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class _Recorder:
    """A reporter that keeps what it is told (and can act on the first finished track)."""

    def __init__(self, on_first_done=None) -> None:  # type: ignore[no-untyped-def]
        self.started: list[int] = []
        self.finished: list[TrackResult] = []
        self.on_first_done = on_first_done

    def track_started(self, index: int, total: int, path: Path, duration_s: float | None) -> None:
        self.started.append(index)

    def track_progress(self, index: int, done_s: float) -> None:
        pass

    def track_finished(self, result: TrackResult) -> None:
        self.finished.append(result)
        if result.status == "done" and self.on_first_done is not None:
            action, self.on_first_done = self.on_first_done, None
            action()


# --- the same stems as a local run -------------------------------------------------------------------


@pytest.mark.slow
def test_stems_from_ray_equal_a_local_run_bit_for_bit(
    cluster: None, songs: list[Path], model: Path, local_stems: dict[str, bytes], tmp_path: Path
) -> None:
    recorder = _Recorder()
    results = distributed.separate(
        [str(p) for p in songs], tmp_path, _options(model, tmp_path), reporter=recorder
    )
    assert [r.status for r in results] == ["done"] * len(songs)
    assert [r.input for r in results] == songs  # as named, in input order
    assert sorted(recorder.started) == list(range(len(songs)))
    assert len(recorder.finished) == len(songs)
    assert _stem_files(tmp_path) == local_stems  # same names, same samples to the bit
    for result in results:
        assert result.node and result.device == "cpu" and result.precision == "float32"
        assert all(path.is_file() for path in result.outputs.values())
        assert result.to_dict()["node"] == result.node


@pytest.mark.slow
def test_a_rerun_on_ray_or_locally_skips_what_ray_finished(
    cluster: None, songs: list[Path], model: Path, tmp_path: Path
) -> None:
    options = _options(model, tmp_path)
    distributed.separate([str(songs[0])], tmp_path, options)
    again = distributed.separate([str(p) for p in songs[:2]], tmp_path, options)
    assert [r.status for r in again] == ["skipped", "done"]
    local = separate_batch(plan_batch([str(p) for p in songs[:2]], options), options)
    assert [r.status for r in local] == ["skipped"] * 2


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_mid_track_costs_nothing(
    cluster: None, songs: list[Path], model: Path, local_stems: dict[str, bytes], tmp_path: Path
) -> None:
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        assert _wait_until(lambda: bool(_worker_pids("separate")), 5.0), "no worker was separating"
        pid = _worker_pids("separate")[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    recorder = _Recorder(on_first_done=kill_a_busy_worker)
    with pytest.warns(UserWarning):  # the lost worker, said where the user is
        results = distributed.separate(
            [str(p) for p in songs], tmp_path, _options(model, tmp_path), reporter=recorder
        )
    assert killed
    assert [r.status for r in results] == ["done"] * len(songs)
    retried = [r for r in results if any(w.kind == "worker_lost" for w in r.warnings)]
    assert retried, "no track was retried after the kill"
    assert _stem_files(tmp_path) == local_stems  # nothing corrupt
    expected = {str(Path(name)) for name in local_stems} | {
        str(Path(name).parent / "stemsplit.json") for name in local_stems
    }
    assert _visible_files(tmp_path) == expected  # nothing extra (no second copy under another name)
    assert len(recorder.finished) == len(songs)  # one result per track


def test_a_retry_does_not_write_a_track_its_lost_worker_finished(
    songs: list[Path], model: Path, tmp_path: Path
) -> None:
    """The worker's own rule, run in this process: a retry finds the stems complete and leaves them."""
    from stemsplit.distributed.worker import Ready, TrackWorker, WorkerSpec
    from stemsplit.pipeline.batch import triage
    from stemsplit.pipeline.results import NullBatchReporter

    def worker_for(options: SeparationOptions) -> tuple[TrackWorker, object]:
        batch = plan_batch([str(songs[0])], options)
        (group,) = triage(batch, options, NullBatchReporter(), lambda i, r: None)
        worker = TrackWorker(WorkerSpec(group.model, options, batch.plan, group.provenance))
        with OneThread():
            assert isinstance(worker.load(), Ready)
        return worker, group.jobs[0]

    worker, job = worker_for(_options(model, tmp_path))
    with OneThread():
        first = worker.separate(job.path, job.outputs, job.duration_s, False)  # type: ignore[attr-defined]
    assert first.result.status == "done"
    written = {p: p.stat().st_mtime_ns for p in first.result.outputs.values()}
    time.sleep(0.01)
    again = worker.separate(job.path, job.outputs, job.duration_s, True)  # type: ignore[attr-defined]
    assert again.result.status == "done" and again.result.outputs == first.result.outputs
    assert {p: p.stat().st_mtime_ns for p in written} == written  # not written a second time
    assert _detail(again.result) == f"{job.path}: done"  # -v says what it knows (no timings, no gain)
    assert _detail(first.result).startswith(f"{job.path}: done in ")
    assert _detail(first.result).endswith(", gain 1.000") and "on cpu of " in _detail(first.result)

    overwriting, job = worker_for(_options(model, tmp_path, overwrite=True))
    with OneThread():
        redone = overwriting.separate(job.path, job.outputs, job.duration_s, False)  # type: ignore[attr-defined]
    assert redone.result.status == "done"
    assert all(p.stat().st_mtime_ns != t for p, t in written.items())  # --overwrite redoes it


@pytest.mark.slow
def test_an_interrupted_job_stops_its_workers_and_a_rerun_resumes(
    cluster: None, songs: list[Path], model: Path, local_stems: dict[str, bytes], tmp_path: Path
) -> None:
    def ctrl_c() -> None:
        raise KeyboardInterrupt

    options = _options(model, tmp_path)
    with pytest.raises(BatchInterrupted) as stopped:
        distributed.separate(
            [str(p) for p in songs], tmp_path, options, reporter=_Recorder(on_first_done=ctrl_c)
        )
    statuses = [r.status for r in stopped.value.results]
    assert statuses.count("done") == 1 and statuses.count("interrupted") == len(songs) - 1
    assert _wait_until(lambda: not _worker_pids()), "the workers outlived the job"

    rerun = distributed.separate([str(p) for p in songs], tmp_path, options)
    done_before = statuses.index("done")
    assert rerun[done_before].status == "skipped"
    assert all(r.status in ("done", "skipped") for r in rerun)
    assert _stem_files(tmp_path) == local_stems


@pytest.mark.slow
def test_bad_inputs_fail_alone_exit_1_and_the_report_names_them(
    cluster: None, songs: list[Path], model: Path, local_stems: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"this is not audio")  # fails when the driver plans it
    model_name = model.stem
    unwritable = out / model_name / "song2" / "vocals.wav"  # fails on the worker that writes it
    unwritable.mkdir(parents=True)  # a folder where the stem must go
    report = tmp_path / "report.json"
    inputs = [str(p) for p in songs[:4]] + [str(not_audio)]
    result = CliRunner().invoke(
        separate_app,
        [*inputs, "-n", str(model), "-o", str(out), "--ray", "local", "--report", str(report), "-q",
         "-d", "cpu", "--precision", "float32", "--bit-depth", "32f", "--clip", "none"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    tracks = {Path(t["input"]).name: t for t in json.loads(report.read_text())["tracks"]}
    assert tracks["notes.wav"]["status"] == "failed" and "notes.wav" in tracks["notes.wav"]["error"]
    assert tracks["song2.wav"]["status"] == "failed" and "vocals.wav" in tracks["song2.wav"]["error"]
    for name in ("song0.wav", "song1.wav", "song3.wav"):
        assert tracks[name]["status"] == "done"
        assert tracks[name]["node"] and tracks[name]["device"] == "cpu"
    done = {k: v for k, v in _stem_files(out).items() if not k.startswith(f"{model_name}/song2/")}
    assert done == {k: v for k, v in local_stems.items() if k.split("/")[1] in ("song0", "song1", "song3")}


def test_a_node_that_sees_another_model_file_is_named(
    cluster: None, songs: list[Path], model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model" / model.name
    copy.parent.mkdir()
    copy.write_bytes(model.read_bytes())
    options = _options(copy, tmp_path / "out")
    batch = distributed.plan([str(songs[0])], options)
    other = make_tiny_th(tmp_path / "other", seed=1)
    copy.write_bytes(other.read_bytes())  # what the workers' node now sees at that path
    with pytest.raises(WorkerModelError) as failed:
        distributed.run_batch(batch, options, distributed.ClusterOptions())
    node = failed.value.node
    assert node and f"on node {node}:" in str(failed.value) and "SHA-256 differs" in str(failed.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.wav"))


@pytest.mark.slow
def test_the_cli_runs_on_ray_with_the_same_output_as_locally(
    cluster: None, songs: list[Path], model: Path, local_stems: dict[str, bytes], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        separate_app,
        [*(str(p) for p in songs), "-n", str(model), "-o", str(tmp_path), "--ray", "auto", "--json",
         "-d", "cpu", "--precision", "float32", "--bit-depth", "32f", "--clip", "none", "--ray-in-flight", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(Path(line["input"]).name for line in lines) == [p.name for p in songs]
    assert all(line["status"] == "done" and line["node"] for line in lines)
    assert _stem_files(tmp_path) == local_stems


def test_no_worker_is_left_after_a_run(cluster: None, songs: list[Path], model: Path, tmp_path: Path) -> None:
    distributed.separate([str(songs[0])], tmp_path, _options(model, tmp_path))
    assert _wait_until(lambda: not _worker_pids()), "a worker outlived its run"


def test_a_slot_count_the_cluster_cannot_hold_is_refused_before_any_work(
    cluster: None, songs: list[Path], model: Path, tmp_path: Path
) -> None:
    from stemsplit.errors import ClusterError

    with pytest.raises(ClusterError, match="--ray-cpus-per-worker"):
        distributed.separate(
            [str(songs[0])],
            tmp_path / "out",
            _options(model, tmp_path),
            distributed.ClusterOptions(cpus_per_worker=3),
        )
    assert not any((tmp_path / "out").rglob("*.wav"))


# --- --model auto ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_auto_runs_each_track_with_its_model_on_ray_as_locally(
    cluster: None, songs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning picks on the driver; each model's tracks go to workers of that model (issue #16 with #17)."""
    from fractions import Fraction

    from separation_helpers import make_tiny_hybrid_th
    from stemsplit.weights import registry

    files = {"htdemucs": make_tiny_th(tmp_path / "m"), "hdemucs_mmi": make_tiny_hybrid_th(tmp_path / "m")}
    specs = [
        registry.ModelSpec(
            name, name, FOUR, (registry.WeightFile(p.name[:8], p.name, "x/", "0" * 64),), segment=s
        )
        for (name, p), s in zip(files.items(), (Fraction(1, 4), Fraction(3)), strict=True)
    ]
    monkeypatch.setattr(registry, "MODELS", registry.make_registry(*specs))
    monkeypatch.setattr(registry, "LONG_TRACK_S", 1.0)  # song3 (1.3 s) and song5 (1.1 s) get hdemucs_mmi

    class FilesLoader:  # defined here, so that Ray pickles it by value for the workers
        """Each model of the batch from its own local file."""

        def __call__(self, model):  # type: ignore[no-untyped-def]
            from stemsplit.weights.cache import ModelCache
            from stemsplit.weights.loading import describe_model, load_model

            return load_model(describe_model(str(files[model.name])), ModelCache())

    loader = FilesLoader()
    inputs = [str(p) for p in songs]

    local = SeparationOptions(model="auto", out_dir=tmp_path / "local", **FLOAT)
    with OneThread():
        expected = separate_batch(plan_batch(inputs, local), local, loader=loader)
    options = SeparationOptions(model="auto", out_dir=tmp_path / "ray", **FLOAT)
    results = distributed.run_batch(
        distributed.plan(inputs, options), options, distributed.ClusterOptions(), loader=loader
    )
    picks = ["hdemucs_mmi" if seconds >= 1.0 else "htdemucs" for seconds in LENGTHS]
    assert [r.model for r in expected] == picks
    assert [(r.status, r.model) for r in results] == [("done", m) for m in picks]
    assert _stem_files(tmp_path / "ray") == _stem_files(tmp_path / "local")
