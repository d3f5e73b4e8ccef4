"""``--ray`` options and errors that need no cluster: refused before any work, with one line that says
what to do (Ray missing included), and the number of workers a cluster's resources give."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from separation_helpers import TORCH_BACKEND, write_audio
from stemsplit import distributed
from stemsplit.cli.separate import separate_app
from stemsplit.distributed.cluster import ClusterOptions, WorkerShape, connected, worker_shape
from stemsplit.errors import ClusterError, InvalidOptionError
from stemsplit.pipeline import SeparationOptions


@pytest.fixture
def song(tmp_path: Path) -> Path:
    path = tmp_path / "song.wav"
    write_audio(path, seconds=0.2)
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(separate_app, list(args))
    return result.exit_code, result.stderr


def test_ray_without_ray_installed_says_how_to_install_it(
    song: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` now raises ImportError
    out = tmp_path / "out"
    code, stderr = _run(str(song), "--ray", "local", "-o", str(out))
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [
        'Error: --ray needs Ray, which is not installed; install it with: pip install "stemsplit-cli[ray]" '
        '(from a checkout: pip install ".[ray]")'
    ]
    assert not out.exists()  # nothing was done
    with pytest.raises(InvalidOptionError, match="stemsplit-cli"):
        distributed.separate([str(song)], out, SeparationOptions())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray", "nowhere"], "--ray nowhere is not valid; use local, auto or a cluster address"),
        (["--ray", "local", "--ray-in-flight", "0"], "--ray-in-flight 0 is not valid; use a whole number"),
        (["--ray", "local", "--ray-cpus-per-worker", "two"], "--ray-cpus-per-worker two is not valid"),
        (["--ray-workers-per-gpu", "2"], "--ray-workers-per-gpu only applies to a Ray run; add --ray"),
        (["--ray", "local", "-d", "cuda:1"], "--device cuda:1 cannot be used with --ray"),
    ],
)
def test_bad_ray_options_are_usage_errors_before_any_work(
    song: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    code, stderr = _run(str(song), "-o", str(out), *args)
    assert code == 2, stderr
    assert message in stderr
    assert not out.exists()


def test_an_address_where_nothing_listens_fails_at_once() -> None:
    import ray

    assert not ray.is_initialized()  # else the connection is reused, whatever the address
    with socket.socket() as probe:  # a port on this machine that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}"),
        connected(f"127.0.0.1:{port}"),
    ):
        pass


@pytest.mark.parametrize(
    ("nodes", "cluster", "device", "shape"),
    [
        ([{"CPU": 16.0}], ClusterOptions(), "auto", WorkerShape(16, "cpu", {"num_cpus": 1.0}, 1)),
        (
            [{"CPU": 16.0}],
            ClusterOptions(cpus_per_worker=4),
            "cpu",
            WorkerShape(4, "cpu", {"num_cpus": 4.0}, 4),
        ),
        (
            [{"CPU": 3.0}, {"CPU": 5.0}],  # 8 slots, but 1 + 2 workers of 2 fit on the nodes
            ClusterOptions(cpus_per_worker=2),
            "cpu",
            WorkerShape(3, "cpu", {"num_cpus": 2.0}, 2),
        ),
        (
            [{"CPU": 64.0, "GPU": 8.0}],
            ClusterOptions(),
            "auto",
            WorkerShape(8, "cuda", {"num_gpus": 1.0}, None),
        ),
        (
            [{"CPU": 32.0, "GPU": 4.0}, {"CPU": 32.0, "GPU": 4.0}, {"CPU": 8.0}],
            ClusterOptions(workers_per_gpu=2),
            "cuda",
            WorkerShape(16, "cuda", {"num_gpus": 0.5}, None),
        ),
        (
            [{"CPU": 64.0, "GPU": 8.0}],
            ClusterOptions(cpus_per_worker=8),
            "cpu",
            WorkerShape(8, "cpu", {"num_cpus": 8.0}, 8),
        ),
    ],
)
def test_workers_follow_the_nodes_resources(
    nodes: list[dict[str, float]], cluster: ClusterOptions, device: str, shape: WorkerShape
) -> None:
    assert worker_shape(nodes, cluster, device) == shape


def test_a_cluster_without_room_for_a_worker_is_refused() -> None:
    with pytest.raises(ClusterError, match="has no GPU"):
        worker_shape([{"CPU": 8.0}], ClusterOptions(), "cuda")
    with pytest.raises(ClusterError, match="the largest has 2"):
        worker_shape([{"CPU": 2.0}], ClusterOptions(cpus_per_worker=4), "cpu")
    with pytest.raises(ClusterError, match="no node of the Ray cluster has the 2 CPU slots"):
        worker_shape([{"CPU": 1.0}, {"CPU": 1.0}], ClusterOptions(cpus_per_worker=2), "cpu")  # 2 in all


def _ray_daemons() -> set[int]:
    """Processes of Ray clusters on this machine (their raylet and GCS server)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("raylet", "gcs_server"):
                pids.add(int(entry.name))
    return pids


@pytest.mark.slow
def test_ray_local_starts_a_private_cluster_and_stops_it(song: Path, tmp_path: Path) -> None:
    import subprocess
    import time

    from separation_helpers import make_tiny_th

    model = make_tiny_th(tmp_path / "model")
    before = _ray_daemons()
    done = subprocess.run(
        [sys.executable, "-m", "stemsplit", str(song), "--ray", "local", "-n", str(model), "-o", str(tmp_path / "out"),
         "-d", "cpu", "--precision", "float32", "-q"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **TORCH_BACKEND},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [Path(line).name for line in done.stdout.splitlines()] == [
        "drums.wav", "bass.wav", "other.wav", "vocals.wav"
    ]  # fmt: skip
    deadline = time.monotonic() + 10
    while _ray_daemons() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ray_daemons() - before == set(), "the private cluster outlived the run"


def test_a_worker_that_cannot_start_names_its_node_and_the_cause() -> None:
    from stemsplit.distributed.driver import _start_failure

    # The text of the ActorDiedError Ray 2.60 raises when an actor's constructor fails (as seen on a
    # real cluster, for a module the worker's node lacks).
    died = RuntimeError(
        "The actor died because of an error raised in its creation task, ray::TrackWorker.__init__() "
        "(pid=24037, ip=10.1.2.3, actor_id=f3d6d1b38b95, repr=<TrackWorker>)\n"
        '  File "worker.py", line 7, in __init__\n'
        "ModuleNotFoundError: No module named 'stemsplit'"
    )
    message = str(_start_failure(died))
    assert message.startswith("a Ray worker could not start on node 10.1.2.3 (ModuleNotFoundError: No module")
    assert 'pip install "stemsplit-cli[ray]"' in message


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_run_and_the_same_command_resumes(tmp_path: Path) -> None:
    """A real SIGINT to ``stemsplit --ray local`` once the first track is out: exit 130, the private
    cluster gone, and the same command then skips what was finished and does the rest."""
    import json
    import signal
    import subprocess
    import time

    from separation_helpers import make_tiny_th

    model = make_tiny_th(tmp_path / "model")
    songs = []
    for i in range(8):
        songs.append(tmp_path / "in" / f"song{i}.wav")
        write_audio(songs[-1], seconds=3.0, seed=i)
    command = [sys.executable, "-m", "stemsplit", *map(str, songs), "--ray", "local", "-n", str(model),
               "-o", str(tmp_path / "out"), "-d", "cpu", "--precision", "float32", "-q", "--json"]  # fmt: skip
    before = _ray_daemons()
    run = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **TORCH_BACKEND},
    )
    assert run.stdout is not None
    first = json.loads(run.stdout.readline())
    run.send_signal(signal.SIGINT)
    rest, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    lines = [first, *map(json.loads, rest.splitlines())]
    finished = {line["input"] for line in lines if line["status"] == "done"}
    assert first["status"] == "done" and len(finished) < len(songs)
    deadline = time.monotonic() + 10
    while _ray_daemons() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ray_daemons() - before == set(), "the private cluster outlived Ctrl-C"

    again = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **TORCH_BACKEND}
    )
    assert again.returncode == 0, again.stderr
    statuses = {line["input"]: line["status"] for line in map(json.loads, again.stdout.splitlines())}
    assert {name for name, status in statuses.items() if status == "skipped"} >= finished
    assert set(statuses) == {str(p) for p in songs} and set(statuses.values()) <= {"done", "skipped"}


def test_the_batch_bar_counts_tracks_and_times_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracks done of total, and the audio separated (not skipped) per wall time: 2 h of audio in 0.5 h is
    4× real time."""
    from stemsplit.cli import ui
    from stemsplit.pipeline import TrackResult

    now = [1000.0]
    monkeypatch.setattr(ui.time, "monotonic", lambda: now[0])
    with ui.BatchProgress(3, 3 * 3600.0, quiet=True) as progress:
        progress.track_finished(TrackResult(Path("a.wav"), "skipped", duration_s=3600.0))
        assert progress._batch_label() == "[bold]1/3 tracks[/bold]"
        for index, name in ((1, "b.wav"), (2, "c.wav")):  # the speed's clock starts when tracks move
            progress.track_started(index, 3, Path(name), 3600.0)
            progress.track_progress(index, 0.0)
        now[0] += 1800.0
        progress.track_finished(TrackResult(Path("b.wav"), "done", duration_s=3600.0))
        progress.track_finished(TrackResult(Path("c.wav"), "done", duration_s=3600.0))
        assert progress._batch_label() == "[bold]3/3 tracks[/bold], 4.0× real time"
