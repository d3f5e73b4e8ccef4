"""What a user sees in the first minute (#12): results as each track ends, Ctrl-C, errors before any work,
one wording for bad values, no libmpg123 noise, tables in logs, silence, folder names, durations.

Every test goes through the command line (Typer's runner, or a real subprocess where file descriptors,
pipes or signals matter).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from separation_helpers import TORCH_BACKEND, write_audio
from stemsplit import pipeline
from stemsplit.audio import StemWriter
from stemsplit.cli import app as cli
from stemsplit.cli import separate as cli_separate
from stemsplit.inference import devices
from stemsplit.weights.cache import ModelCache

pytestmark = pytest.mark.usefixtures("one_thread_in_tmp")

runner = CliRunner()
FOUR = ("drums", "bass", "other", "vocals")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc")


def invoke(*args: str | Path):
    return runner.invoke(cli_separate.separate_app, [str(a) for a in args], catch_exceptions=False)


def invoke_models(*args: str):
    return runner.invoke(cli.app, ["models", *args], catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def refuse_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading any input or describing the model fail the test: a check must come before them."""

    def refuse(*args, **kwargs):
        raise AssertionError("this must be refused before any input is read or the model described")

    monkeypatch.setattr(pipeline.batch, "describe_model", refuse)
    monkeypatch.setattr(pipeline.batch, "discover_inputs", refuse)
    monkeypatch.setattr(pipeline.batch, "probe", refuse)


# A real subprocess whose second input (b.wav) is held before it is decoded until a file ``go`` appears;
# ``waiting`` appears when it gets there. Everything else is the real command line.
HELD_RUN = """
import sys, time
from pathlib import Path
from stemsplit.audio import reader
decode = reader.decode_chunks
def held(info):
    if info.path.name == "b.wav":
        Path("waiting").touch()
        deadline = time.monotonic() + 60
        while not Path("go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return decode(info)
reader.decode_chunks = held
from stemsplit.cli import main
main(sys.argv[1:])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **TORCH_BACKEND}


def _start_held(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, *map(str, args)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 90) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _read_now(proc: subprocess.Popen[str], lines: int, seconds: float = 10) -> list[str]:
    """The next ``lines`` lines of stdout, which must be there within ``seconds`` (read from the file
    descriptor itself: a buffered reader could hide what has arrived from ``select``)."""
    assert proc.stdout is not None
    fd, got = proc.stdout.fileno(), b""
    while got.count(b"\n") < lines:
        ready, _, _ = select.select([fd], [], [], seconds)
        assert ready, f"stdout had only {got!r} while the run was still going"
        chunk = os.read(fd, 65536)
        assert chunk, f"stdout ended after {got!r}"
        got += chunk
    return got.decode().splitlines()


# --- 1. results as each track ends ------------------------------------------------------------------


@posix_only
def test_a_tracks_paths_reach_a_pipe_as_soon_as_it_ends(model_file: Path, tmp_path: Path) -> None:
    """Regression (#12): in a pipe, every path appeared at the end of the batch."""
    for name in ("a", "b"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.3, seed=ord(name))
    proc = _start_held("a.wav", "b.wav", "-n", model_file, "--stems", "vocals,bass")
    try:
        _wait_for(tmp_path / "waiting", proc)  # b is being worked on: a has ended
        assert _read_now(proc, 2) == [f"separated/{model_file.stem}/a/{s}.wav" for s in ("vocals", "bass")]
    finally:
        Path("go").touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"separated/{model_file.stem}/b/{s}.wav" for s in ("vocals", "bass")]


@posix_only
def test_ctrl_c_keeps_what_finished_writes_the_report_prints_the_summary_and_exits_130(
    model_file: Path, tmp_path: Path
) -> None:
    """Regression (#12): after Ctrl-C nothing was printed for the finished tracks, and neither the report
    nor the summary was written."""
    for name in ("a", "b", "c"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.3, seed=ord(name))
    args = ("a.wav", "b.wav", "c.wav", "-n", model_file, "--stems", "vocals", "--report", "run/r.json")
    proc = _start_held(*args)
    try:
        _wait_for(tmp_path / "waiting", proc)  # b is being decoded (ahead, while a may still run)
        first = _read_now(proc, 1, seconds=90)  # a is done
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        Path("go").touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert first + out.splitlines() == [f"separated/{model_file.stem}/a/vocals.wav"]
    assert "1 done, 0 skipped (already complete), 0 failed, 2 interrupted" in err
    assert flat(err).endswith(
        "Error: interrupted; nothing half-written was left under a final name; run the same command again "
        "to resume (finished tracks are skipped)"
    )
    assert "STEMSPLIT_DEBUG" not in err and "Traceback" not in err
    report = json.loads(Path("run/r.json").read_text())
    assert [(t["input"], t["status"]) for t in report["tracks"]] == [
        ("a.wav", "done"), ("b.wav", "interrupted"), ("c.wav", "interrupted"),
    ]  # fmt: skip
    assert report["summary"]["interrupted"] == 2
    assert sorted(p.name for p in Path(f"separated/{model_file.stem}").iterdir()) == ["a"]

    again = subprocess.run(
        [sys.executable, "-m", "stemsplit", *map(str, args)], env=_env(), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "2 done, 1 skipped (already complete), 0 failed" in again.stderr


def interrupt_writing(monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    """Ctrl-C during the first block written for a stem whose path contains ``victim``."""
    write = StemWriter.write

    def interrupted(stem_writer: StemWriter, block: np.ndarray) -> None:
        write(stem_writer, block)
        if victim in str(stem_writer.path):
            raise KeyboardInterrupt

    monkeypatch.setattr(StemWriter, "write", interrupted)


def test_json_prints_one_object_per_track_and_line_as_each_ends_even_when_interrupted(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.3, seed=ord(name))
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    interrupt_writing(monkeypatch, "/b/")
    result = invoke("a.wav", "bad.wav", "b.wav", "-n", model_file, "--stems", "vocals", "--json")
    assert result.exit_code == 130
    lines = result.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # JSON Lines: each line a whole object
    # in the order each became known: bad.wav before any work, then a.wav, then b.wav on Ctrl-C
    assert [(r["input"], r["status"]) for r in records] == [
        ("bad.wav", "failed"), ("a.wav", "done"), ("b.wav", "interrupted"),
    ]  # fmt: skip
    assert records[1]["outputs"] == {"vocals": f"separated/{model_file.stem}/a/vocals.wav"}
    assert records[2]["outputs"] == {}


def test_print0_ends_each_path_with_nul(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "my song.wav", seconds=0.3)
    result = invoke("my song.wav", "-n", model_file, "--stems", "vocals,bass", "--print0")
    assert result.exit_code == 0, result.stderr
    folder = f"separated/{model_file.stem}/my song"
    assert result.stdout == f"{folder}/vocals.wav\0{folder}/bass.wav\0"
    for clash in ("--json", "--dry-run"):
        refused = invoke("my song.wav", "-n", model_file, "--print0", clash)
        assert refused.exit_code == 2 and refused.stderr.startswith("Error: --print0"), refused.stderr


# --- 2. skipped tracks print their stems ---------------------------------------------------------


def test_a_rerun_prints_the_existing_stems_of_skipped_tracks(model_file: Path, tmp_path: Path) -> None:
    """Regression (#12): a re-run printed no paths for skipped tracks in plain mode (--json listed them)."""
    write_audio(tmp_path / "song.wav", seconds=0.3)
    first = invoke("song.wav", "-n", model_file, "--two-stems", "vocals")
    again = invoke("song.wav", "-n", model_file, "--two-stems", "vocals")
    assert first.exit_code == again.exit_code == 0
    assert "0 done, 1 skipped" in again.stderr
    assert again.stdout == first.stdout != ""


# --- 3. the Ctrl-C message and empty folders ----------------------------------------------------


def test_an_interrupted_track_leaves_no_folder_it_created(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#12): interrupting left empty track folders behind."""
    for name in ("a", "b"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.3, seed=ord(name))
    with monkeypatch.context() as patch:
        interrupt_writing(patch, "/b/")
        second = invoke("a.wav", "b.wav", "-n", model_file, "--stems", "vocals")
        interrupt_writing(patch, "/x/")
        write_audio(tmp_path / "x.wav", seconds=0.3)
        first = invoke("x.wav", "-n", model_file, "-o", "fresh/out", "--stems", "vocals")
    assert second.exit_code == first.exit_code == 130
    assert "run the same command again to resume" in flat(second.stderr)
    assert sorted(p.name for p in Path(f"separated/{model_file.stem}").iterdir()) == ["a"]
    assert not Path("fresh").exists()  # every folder this run created, up to -o itself
    Path("kept").mkdir()
    with monkeypatch.context() as patch:
        interrupt_writing(patch, "/x/")
        assert invoke("x.wav", "-n", model_file, "-o", "kept").exit_code == 130
    assert Path("kept").is_dir() and list(Path("kept").iterdir()) == []  # it was there before: kept


# --- 4. the device, first and with the reason -------------------------------------------------------


@pytest.fixture
def no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine without a usable GPU, a CPU-only torch and no NVIDIA driver; returns the fake driver path."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(devices, "NVIDIA_PROC", tmp_path / "no-driver", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    return tmp_path / "no-driver"


def test_cuda_on_a_cpu_only_torch_is_refused_first_with_the_reason(
    model_file: Path, no_gpu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#12): ``-d cuda`` said only "CUDA was asked for but is not available"."""
    refuse_work(monkeypatch)
    result = invoke("song.wav", "-n", model_file, "-d", "cuda")
    assert result.exit_code == 2 and result.stdout == ""
    assert flat(result.stderr) == (
        f"Error: --device cuda: CUDA is not available: torch {torch.__version__} is a CPU-only build and no "
        "NVIDIA driver was found; use --device cpu (or auto); `stemsplit doctor` shows the details"
    )
    assert not Path("separated").exists()
    no_gpu.mkdir()  # a driver is there after all: the fix is another torch build
    result = invoke("song.wav", "-n", model_file, "-d", "cuda:1")
    assert f"although an NVIDIA GPU is present ({no_gpu})" in flat(result.stderr)


def test_a_cuda_build_without_a_driver_says_so(
    model_file: Path, no_gpu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    result = invoke("song.wav", "-n", model_file, "-d", "cuda")
    assert result.exit_code == 2
    assert "torch is built for CUDA 12.8 but no NVIDIA driver was found" in flat(result.stderr)


def test_mps_and_a_missing_cuda_index_are_refused_with_the_reason(
    model_file: Path, no_gpu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_work(monkeypatch)
    mps = invoke("song.wav", "-n", model_file, "-d", "mps")
    assert mps.exit_code == 2 and "--device mps: MPS is not available: " in flat(mps.stderr)
    assert "use --device cpu" in flat(mps.stderr)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    index = invoke("song.wav", "-n", model_file, "-d", "cuda:3")
    assert index.exit_code == 2
    assert flat(index.stderr) == (
        "Error: --device cuda:3: there is no such GPU; this machine has 1 (cuda:0); `stemsplit doctor` lists them"
    )


# --- 5 and 6. the output folder and the report path, once and up front ---------------------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_folder_that_cannot_be_created_is_refused_once_up_front(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#12): ``-o /proc/nope`` failed per track with "not enough free disk space … (at least
    0 MB needed, 0 MB free)"."""
    refuse_work(monkeypatch)
    result = invoke("a.wav", "b.wav", "-n", model_file, "-o", "/proc/nope")
    assert result.exit_code == 2 and result.stdout == ""
    assert flat(result.stderr).startswith("Error: --out /proc/nope: cannot create /proc/nope in /proc (")
    assert "disk space" not in result.stderr and result.stderr.count("Error") == 1


def test_an_output_path_that_is_a_file_is_refused_once_up_front(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("taken.wav").write_bytes(b"a file")
    refuse_work(monkeypatch)
    for out, why in (("taken.wav", "is a file"), ("taken.wav/sub", "taken.wav is a file")):
        result = invoke("a.wav", "b.wav", "-n", model_file, "-o", out)
        assert result.exit_code == 2
        assert flat(result.stderr) == f"Error: --out {out}: {why}, not a folder; choose another path"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_report_path_that_cannot_be_written_is_refused_before_any_work(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#12): ``--report /proc/x/r.json`` failed after all the work."""
    refuse_work(monkeypatch)
    result = invoke("a.wav", "-n", model_file, "--report", "/proc/x/r.json")
    assert result.exit_code == 2 and not Path("separated").exists()
    assert flat(result.stderr).startswith("Error: --report /proc/x/r.json: cannot create /proc/x in /proc (")
    Path("taken").write_bytes(b"a file")
    result = invoke("a.wav", "-n", model_file, "--report", "taken/r.json")
    assert (
        flat(result.stderr)
        == "Error: --report taken/r.json: taken is a file, not a folder; choose another path"
    )


# --- 7. one wording for bad values -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bit-depth", "8"), "--bit-depth 8 is not valid; use 16, 24 or 32f"),
        (("--format", "ogg"), "--format ogg is not valid; use wav, flac, mp3 or stem.mp4"),
        (
            ("--sample-rate", "abc"),
            "--sample-rate abc is not valid; use a rate from 8000 to 384000 (Hz), or input",
        ),
        (
            ("--sample-rate", "100"),
            "--sample-rate 100 is not valid; use a rate from 8000 to 384000 (Hz), or input",
        ),
        (("--mp3-bitrate", "400"), "--mp3-bitrate 400 is not valid; use a bitrate from 8 to 320 (kbit/s)"),
        (("--mp3-bitrate", "fast"), "--mp3-bitrate fast is not valid; use a bitrate from 8 to 320 (kbit/s)"),
        (("--clip", "soft"), "--clip soft is not valid; use rescale, clamp or none"),
        (("--other-method", "mul"), "--other-method mul is not valid; use add, minus or none"),
        (
            ("--precision", "float64"),
            "--precision float64 is not valid; use auto, float32, bfloat16 or float16",
        ),
        (("--overlap", "1"), "--overlap 1 is not valid; use a fraction from 0 to 0.99"),
        (("--overlap", "lots"), "--overlap lots is not valid; use a fraction from 0 to 0.99"),
        (("--segment", "inf"), "--segment inf is not valid; use a window in seconds, more than 0"),
        (("--shifts", "-1"), "--shifts -1 is not valid; use a whole number, 0 or more"),
        (("--shifts", "1.5"), "--shifts 1.5 is not valid; use a whole number, 0 or more"),
        (("--batch-size", "0"), "--batch-size 0 is not valid; use a whole number, 1 or more"),
        (("--jobs", "all"), "--jobs all is not valid; use a whole number, 1 or more"),
        (("--seed", "x"), "--seed x is not valid; use a whole number"),
        (
            ("--stems", ","),
            "--stems , is not valid; use stem names separated by commas, such as vocals,drums",
        ),
        (("-d", "gpu"), "--device gpu is not valid; use auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_a_bad_value_is_named_with_what_the_option_accepts(model_file: Path, args, message: str) -> None:
    """Regression (#12): "Invalid value for '--bit-depth': Value error, '8' is not one of '16', '24', '32f'."
    and pydantic's "Input should be less than or equal to 320" leaked through."""
    result = invoke("song.wav", "-n", model_file, *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"Error: {message}\n"


# --- 8. model names, and models remove / verify ------------------------------------------------------


def test_a_folder_given_as_the_model_is_called_a_folder(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#12): ``-n lib`` said "unknown model 'lib'"."""
    Path("lib").mkdir()
    refuse = invoke("song.wav", "-n", "lib")
    assert refuse.exit_code == 2
    assert flat(refuse.stderr).startswith(
        "Error: --model lib: is a folder, not a model; pass a registry name (htdemucs"
    )
    assert "a .th or .safetensors checkpoint, or a bag .yaml" in flat(refuse.stderr)


def test_models_remove_says_what_it_did_not_do() -> None:
    """Regression (#12): ``models remove bogus`` suggested a checkpoint path; ``models remove htdemucs`` when
    not cached was silent."""
    bogus = invoke_models("remove", "bogus")
    assert bogus.exit_code == 2 and "unknown model 'bogus'" in bogus.stderr
    assert "path" not in bogus.stderr and "checkpoint" not in bogus.stderr
    absent = invoke_models("remove", "htdemucs")
    assert (absent.exit_code, absent.stdout) == (0, "")
    assert absent.stderr == "htdemucs: not cached; nothing to remove\n"


def test_models_verify_on_an_empty_cache_says_so_in_one_line() -> None:
    result = invoke_models("verify")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.splitlines() == [f"no model is cached in {ModelCache().folder()}; nothing to verify"]
    named = invoke_models("verify", "htdemucs_ft")
    assert named.exit_code == 0 and named.stderr == "htdemucs_ft: not cached; nothing to verify\n"
    assert json.loads(invoke_models("verify", "--json").stdout) == []


# --- 9. the STEMSPLIT_DEBUG hint only where a traceback can help -----------------------------------------


def test_expected_errors_give_no_debug_hint_unexpected_ones_do(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#12): usage, model and import errors ended with a STEMSPLIT_DEBUG hint."""
    Path("notes.th").write_bytes(b"not a model")
    expected = [
        invoke_models("import", "notes.th"),  # a wrong file
        invoke("song.wav", "-n", "notes.th"),  # a model that cannot be read
        invoke("song.wav", "--format", "ogg"),  # usage
        invoke_models("remove", "bogus"),  # an unknown model
    ]
    for result in expected:
        assert result.exit_code != 0 and result.stderr.startswith("Error:"), result.stderr
        assert "STEMSPLIT_DEBUG" not in result.stderr, result.stderr

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(pipeline, "plan_batch", broken)
    unexpected = invoke("song.wav", "-n", model_file)
    assert unexpected.exit_code == 1
    assert "STEMSPLIT_DEBUG=1" in unexpected.stderr and "/some/where: Permission denied" in unexpected.stderr


# --- 10. no libmpg123 noise ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "mode"),
    [
        (b"this is not an mp3\n" * 20, "-q"),
        (b"this is not an mp3\n" * 20, "--dry-run"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x05 an ID3 tag and no audio", "-q"),
    ],
)
def test_a_non_audio_mp3_gives_only_our_one_line(
    model_file: Path, tmp_path: Path, content: bytes, mode: str
) -> None:
    """Regression (#12): libmpg123 printed "Note: Illegal Audio-MPEG-Header …" on the process's stderr,
    even with -q and --dry-run (a subprocess: the noise went to the file descriptor, past Python)."""
    (tmp_path / "fake.MP3").write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "stemsplit", "fake.MP3", "-n", str(model_file), mode, "-q"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = (done.stderr + done.stdout).splitlines()
    assert len(lines) == 1 and "fake.MP3: cannot be read as audio" in lines[0], lines


def test_a_real_mp3_is_still_decoded(model_file: Path, tmp_path: Path) -> None:
    audio = write_audio(tmp_path / "tone.wav", seconds=0.5)
    sf.write(str(tmp_path / "tone.mp3"), audio.T, 44100, format="MP3")
    result = invoke("tone.mp3", "-n", model_file, "--stems", "vocals", "--json")
    assert result.exit_code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["codec"] == "mp3" and record["duration_s"] == pytest.approx(0.5, abs=0.05)


# --- 11. tables in logs and on terminals ---------------------------------------------------------------


def test_the_summary_in_a_log_keeps_each_row_on_one_line(model_file: Path, tmp_path: Path) -> None:
    """Regression (#12): on a non-terminal stderr the summary was 80 columns wide and split paths mid-word."""
    write_audio(tmp_path / "a fairly long track name for the summary table.wav", seconds=0.3)
    out = "an output folder whose name alone is wider than most of an eighty column terminal"
    result = invoke("a fairly long track name for the summary table.wav", "-n", model_file, "-o", out)
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stderr.splitlines() if line.startswith("a fairly long")]
    assert len(rows) == 1
    assert rows[0].endswith(f"{out}/{model_file.stem}/a fairly long track name for the summary table")
    header = result.stderr.splitlines()[0]
    assert header.split() == ["track", "status", "duration", "time", "output", "folder"]
    assert rows[0].index("done") == header.index("status")  # aligned columns


HDEMUCS_SPEED = "1.3x"  # hdemucs_mmi's speed against htdemucs, as benchmarks/RESULTS.md records it (1.28)


def test_models_list_shows_sizes_and_does_not_wrap_in_a_pipe() -> None:
    """Regression (#12): ``models list`` wrapped the stems column and showed size ``-``."""
    result = invoke_models("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 8  # the table, then its legend (#30: whole at 80 columns)
    assert flat(lines[1]) == "htdemucs (default) 4 ~80 MiB 8.80 dB 1.0x no"
    assert flat(lines[2]) == "htdemucs_ft 4, bag of 4 ~320 MiB 9.00 dB - no"
    assert flat(lines[3]) == "htdemucs_6s 6 (+guitar, piano) ~52 MiB - - no"
    assert flat(lines[4]) == f"hdemucs_mmi 4 ~160 MiB 8.34 dB {HDEMUCS_SPEED} no"
    assert lines[6].startswith("stems: 4 = drums, bass, other, vocals")
    rows = json.loads(invoke_models("list", "--json").stdout)
    # No exact size is invented (none was measured from a download of ours).
    assert [row["size_bytes"] for row in rows] == [None, None, None, None]
    assert [round(row["approx_size_mib"]) for row in rows] == [80, 320, 52, 160]
    assert rows[0]["speed"] == 1.0


def test_on_a_terminal_only_the_path_column_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    from io import StringIO

    from rich.console import Console

    from stemsplit.cli import ui

    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=60, color_system=None)
    path = "separated/htdemucs/a-long-folder-name/that-cannot-fit-in-sixty-columns"
    ui.print_table(
        ("track", "status", "output folder"),
        [("track name.wav", "done", path)],
        console=console,
        fold=("output folder",),
    )
    lines = screen.getvalue().splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert "track name.wav" in lines[1] and "done" in lines[1]  # never wrapped
    assert "".join(line[lines[0].index("output") :].strip() for line in lines[1:]) == path


# --- 12. silence: see test_cli_separate.test_silent_input_gets_one_warning ---------------------------------


# --- 13. one rule for output folder names ------------------------------------------------------------------


def test_output_folders_follow_one_rule_a_user_can_predict(model_file: Path, tmp_path: Path) -> None:
    """Regression (#12): an identical file in another folder became ``a (wav)`` although completion is
    checked against the input's content. The rule (README, pipeline/outputs.py): a track's folder is the
    first of ``name``, ``name (ext)``, ``name (2)`` … that no other track holds, where the same file or
    the same content is the same track."""
    base = Path(f"separated/{model_file.stem}")
    write_audio(Path("a.wav"), seconds=0.3, seed=1)
    assert invoke("a.wav", "-n", model_file, "--stems", "vocals").exit_code == 0
    Path("copies").mkdir()
    shutil.copy("a.wav", "copies/a.wav")  # the same content, another file (new mtime)
    copy = invoke("copies/a.wav", "-n", model_file, "--stems", "vocals")
    assert copy.exit_code == 0 and "0 done, 1 skipped" in copy.stderr
    assert copy.stdout.split() == [f"{base}/a/vocals.wav"]

    sf.write("song.mp3", write_audio(Path("src/song.wav"), seconds=0.3, seed=2).T, 44100, format="MP3")
    Path("lib").mkdir()
    write_audio(Path("lib/song.wav"), seconds=0.3, seed=3)  # another song with the same name
    assert invoke("song.mp3", "-n", model_file, "--stems", "vocals").exit_code == 0
    other = invoke("lib/song.wav", "-n", model_file, "--stems", "vocals")
    assert other.stdout.splitlines() == [f"{base}/song (wav)/vocals.wav"]  # song is held by another track
    both = invoke("lib/song.wav", "song.mp3", "-n", model_file, "--stems", "vocals")  # any order: the same
    assert "0 done, 2 skipped" in both.stderr
    assert both.stdout.splitlines() == [f"{base}/song (wav)/vocals.wav", f"{base}/song/vocals.wav"]


# --- 14. durations under a second ------------------------------------------------------------------------


def test_durations_under_a_second_are_shown_in_ms(model_file: Path, tmp_path: Path) -> None:
    """Regression (#12): a 0.05-s file was shown as ``0.1 s``."""
    sf.write("blip.wav", np.full((2205, 2), 0.1, np.float32), 44100)  # 50 ms
    dry = invoke("blip.wav", "-n", model_file, "--dry-run")
    assert "(50 ms, 44100 Hz, 2 ch" in dry.stdout
    run = invoke("blip.wav", "-n", model_file)
    (row,) = [line for line in run.stderr.splitlines() if line.startswith("blip.wav")]
    assert row.split()[:4] == ["blip.wav", "done", "50", "ms"]


@posix_only
def test_a_reader_that_goes_away_stops_the_run_quietly(model_file: Path, tmp_path: Path) -> None:
    """``stemsplit … | head -1``: once the pipe's reader is gone the run stops, with no misleading error."""
    for name in ("a", "b", "c"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.3, seed=ord(name))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stemsplit", "a.wav", "b.wav", "c.wav", "-n", str(model_file), "-q"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=120)
    assert first.endswith(b".wav\n")
    assert proc.returncode == 141, err
    assert "Error" not in err and "Broken pipe" not in err and "Traceback" not in err
