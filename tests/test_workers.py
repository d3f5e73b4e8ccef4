"""A batch on the workers: tracks decoded once and ahead, shared batches, failures that stay local, Ctrl-C,
several devices, flat memory with the number of tracks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from separation_helpers import OneThread, make_tiny_th, read_audio, write_audio
from stemsplit import pipeline
from stemsplit.audio import StemWriter
from stemsplit.errors import AudioWriteError
from stemsplit.inference import ModelBag
from stemsplit.pipeline import BatchInterrupted, SeparationOptions, plan_batch, separate_batch

FLOAT = {"device": "cpu", "precision": "float32", "bit_depth": "32f", "clip": "none"}
LENGTHS = (0.1, 0.9, 0.4, 1.3)  # the tiny model's window is 0.25 s: one shorter than a window


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_th(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def _one_thread():
    with OneThread():
        yield


def songs(folder: Path) -> list[Path]:
    paths = []
    for i, seconds in enumerate(LENGTHS):
        write_audio(folder / f"song{i}.wav", seconds=seconds, seed=i)
        paths.append(folder / f"song{i}.wav")
    return paths


def stems_of(result: pipeline.TrackResult) -> dict[str, np.ndarray]:
    return {name: read_audio(path)[0] for name, path in result.outputs.items()}


def run(paths: list[Path], out: Path, model: Path, **settings) -> list[pipeline.TrackResult]:
    options = SeparationOptions(model=str(model), out_dir=out, **{**FLOAT, **settings})
    return separate_batch(plan_batch([str(p) for p in paths], options), options)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_batch_writes_bit_identical_stems_to_each_track_alone(
    model: Path, tmp_path: Path, batch_size: int
) -> None:
    paths = songs(tmp_path / "in")
    together = run(paths, tmp_path / "together", model, batch_size=batch_size)
    assert [r.status for r in together] == ["done"] * len(paths)
    for i, path in enumerate(paths):
        (alone,) = run([path], tmp_path / f"alone{i}", model, batch_size=batch_size)
        a, t = stems_of(alone), stems_of(together[i])
        assert a.keys() == t.keys() and all(np.array_equal(a[k], t[k]) for k in a)


def test_each_input_is_decoded_exactly_once(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemsplit.audio import reader

    opened: Counter[str] = Counter()
    real = reader.decode_chunks

    def counting(info):
        opened[info.path.name] += 1
        return real(info)

    monkeypatch.setattr(reader, "decode_chunks", counting)
    results = run(songs(tmp_path / "in"), tmp_path / "out", model, batch_size=3)
    assert all(r.status == "done" for r in results)
    assert opened == {f"song{i}.wav": 1 for i in range(len(LENGTHS))}


def test_a_decode_error_fails_only_its_track(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemsplit.audio import reader
    from stemsplit.errors import AudioDecodeError

    real = reader.decode_chunks

    def failing(info):
        if info.path.name == "song2.wav":  # probed fine, then the decoder gives up at once
            raise AudioDecodeError(f"{info.path}: the decoder gave up (simulated)", path=info.path)
        return real(info)

    monkeypatch.setattr(reader, "decode_chunks", failing)
    results = run(songs(tmp_path / "in"), tmp_path / "out", model, batch_size=3)
    assert [r.status for r in results] == ["done", "done", "failed", "done"]
    assert "song2.wav: the decoder gave up" in (results[2].error or "")


def test_an_encode_error_fails_only_its_track(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = StemWriter.write

    def failing(stem_writer: StemWriter, block: np.ndarray) -> None:
        if "/song1/" in str(stem_writer.path):
            raise AudioWriteError("disk on fire (simulated)", path=stem_writer.path)
        write(stem_writer, block)

    monkeypatch.setattr(StemWriter, "write", failing)
    results = run(songs(tmp_path / "in"), tmp_path / "out", model, batch_size=3)
    assert [r.status for r in results] == ["done", "failed", "done", "done"]
    assert "disk on fire" in (results[1].error or "")
    assert not list((tmp_path / "out").rglob("song1/*"))  # nothing of it under any name


class SlowModel(torch.nn.Module):
    """A stand-in with the HT interface that takes a while per batch (so Ctrl-C lands mid-work)."""

    sources = ("drums", "bass", "other", "vocals")

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        time.sleep(0.2)
        return torch.stack([mix * 0.25] * 4, dim=1)


def slow_bag(_model: object = None) -> ModelBag:
    return ModelBag((SlowModel(),), SlowModel.sources, 44100, 2, 11025)


def test_ctrl_c_stops_every_worker_within_two_seconds_and_leaves_no_temporary(
    model: Path, tmp_path: Path
) -> None:
    paths = [tmp_path / "in" / f"long{i}.wav" for i in range(3)]
    for i, path in enumerate(paths):
        write_audio(path, seconds=3.0, seed=i)
    short = tmp_path / "in" / "a-short.wav"
    write_audio(short, seconds=0.1)
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "out", **FLOAT)
    batch = plan_batch([str(short), *map(str, paths)], options)
    pressed: list[float] = []

    class CtrlC(pipeline.NullBatchReporter):
        def track_finished(self, result: pipeline.TrackResult) -> None:
            if not pressed:
                pressed.append(time.monotonic())
                raise KeyboardInterrupt  # the user presses Ctrl-C as the first track ends

    with pytest.raises(BatchInterrupted) as info:
        separate_batch(batch, options, reporter=CtrlC(), loader=slow_bag)
    stopped = time.monotonic() - pressed[0]
    assert stopped < 2.5, f"the workers took {stopped:.1f} s to stop"
    assert [r.status for r in info.value.results] == ["done", "interrupted", "interrupted", "interrupted"]
    time.sleep(0.3)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("stemsplit-")]
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
    assert not list((tmp_path / "out").rglob("long*/*.wav"))


def test_two_devices_share_the_tracks_and_change_nothing(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-d cuda:0,cuda:1`` with two CPU runners: each track on one of them, the stems as on one device."""
    paths = songs(tmp_path / "in")
    single = run(paths, tmp_path / "one", model, batch_size=2)
    seen: list[str] = []
    add = pipeline.workers.Scheduler.add

    def noting_thread(self, stream) -> None:
        seen.append(threading.current_thread().name)
        add(self, stream)

    monkeypatch.setattr(pipeline.workers.Scheduler, "add", noting_thread)
    cpu = torch.device("cpu")
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "two", batch_size=2, **FLOAT)
    double = separate_batch(plan_batch([str(p) for p in paths], options), options, devices=[cpu, cpu])
    assert len(set(seen)) == 2 and len(seen) == len(paths)  # both runners got tracks
    for a, b in zip(single, double, strict=True):
        sa, sb = stems_of(a), stems_of(b)
        assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_each_device_thread_makes_its_device_current(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``torch.cuda.set_device`` in its thread, ``cuda:1``'s events would be recorded on ``cuda:0``'s
    stream (and a writer could read a block still being copied): each device thread binds its own device."""
    bound: list[tuple[str, torch.device]] = []
    bind = pipeline.workers.bind_thread

    def noting(device: torch.device) -> None:
        bound.append((threading.current_thread().name, device))
        bind(device)

    monkeypatch.setattr(pipeline.workers, "bind_thread", noting)
    cpu = torch.device("cpu")
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "out", batch_size=2, **FLOAT)
    separate_batch(plan_batch([str(p) for p in songs(tmp_path / "in")], options), options, devices=[cpu, cpu])
    assert sorted(name for name, _ in bound) == ["stemsplit-device-0-cpu", "stemsplit-device-1-cpu"]

    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    bind(torch.device("cpu"))
    bind(torch.device("cuda", 1))
    assert calls == [torch.device("cuda", 1)]


def test_a_writer_that_is_behind_holds_back_the_device(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow encoder: its queue of finished blocks stays at the bound (memory does not grow with the track),
    and a writer that failed does not hold the device thread up."""
    monkeypatch.setattr(pipeline.workers, "WRITER_QUEUE_BLOCKS", 1)
    sizes: list[int] = []
    send = pipeline.workers._Run._send

    def noting(self, live, item) -> None:
        send(self, live, item)
        sizes.append(live.blocks.qsize())

    write = StemWriter.write

    def slow(stem_writer: StemWriter, block: np.ndarray) -> None:
        if "/song1/" in str(stem_writer.path):
            raise AudioWriteError("disk on fire (simulated)", path=stem_writer.path)
        time.sleep(0.02)
        write(stem_writer, block)

    monkeypatch.setattr(pipeline.workers._Run, "_send", noting)
    monkeypatch.setattr(StemWriter, "write", slow)
    results = run(songs(tmp_path / "in"), tmp_path / "out", model, batch_size=1)
    assert [r.status for r in results] == ["done", "failed", "done", "done"]
    assert len(sizes) > 10 and max(sizes) == 1


_RSS_RUN = """
import json, resource, sys, time
from pathlib import Path
import numpy as np, soundfile as sf, torch
sys.path.insert(0, sys.argv[3])
torch.set_num_threads(1)
from stemsplit.inference import ModelBag
from stemsplit.pipeline import SeparationOptions, plan_batch, separate_batch

class StandIn(torch.nn.Module):
    def forward(self, mix):
        return torch.stack([mix * 0.25] * 4, dim=1)

folder, count = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
paths = []
for i in range(count):
    path = folder / "in" / f"t{i}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, rng.uniform(-0.3, 0.3, (44100 * 5, 2)).astype("float32"), 44100)
    paths.append(str(path))
options = SeparationOptions(model=sys.argv[4], out_dir=folder / "out", device="cpu", precision="float32")
bag = ModelBag((StandIn(),), ("drums", "bass", "other", "vocals"), 44100, 2, 343980)
results = separate_batch(plan_batch(paths, options), options, loader=lambda _model: bag)
assert all(r.status == "done" for r in results)
print(json.dumps({"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_tracks(model: Path, tmp_path: Path) -> None:
    """50 tracks of 5 s against 5 with a cheap stand-in model: the in-flight bound keeps memory flat."""
    peaks = {}
    for count in (5, 50):
        done = subprocess.run(
            [sys.executable, "-c", _RSS_RUN, str(tmp_path / str(count)), str(count), str(Path(__file__).parent), str(model)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        peaks[count] = json.loads(done.stdout.strip().splitlines()[-1])["peak_kb"]
    assert peaks[50] <= 1.2 * peaks[5], peaks
