"""Hostile inputs (#27): every bad file fails alone, in one line that names it, and never stops a batch.

A deterministic fuzzer mutates small seed files the tests make (WAV, FLAC, MP3, OGG, M4A, WebM) with bit
flips, truncations, header fields zeroed or set to 0xFF, lying lengths, junk and wrong extensions, and
puts every mutant through the probe and a full decode: each one decodes, or fails with a
:class:`StemsplitError` whose one-line message names it, and the plan (what ``--dry-run`` shows) agrees. Then special files, link loops, odd names and
NaN samples, one batch through the command line mixing valid files with the worst cases, and Ctrl-C at
several moments of a batch under CPU load.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from audio_fixtures import bandlimited_noise, write_pyav
from separation_helpers import TORCH_BACKEND, OneThread, make_tiny_th, write_audio
from stemsplit.audio import AudioInfo, AudioReader, probe
from stemsplit.cli import separate as cli_separate
from stemsplit.errors import AudioDecodeError, AudioFileNotFoundError, StemsplitError
from stemsplit.pipeline.batch import probe_input

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX files and signals")
FOUR = ("drums", "bass", "other", "vocals")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_th(tmp_path_factory.mktemp("model"))


# --- the fuzzer ----------------------------------------------------------------------------------------


def make_seeds(folder: Path) -> list[Path]:
    """Small valid files of six formats (0.25 s of stereo noise; AAC and Opus through PyAV)."""
    folder.mkdir(parents=True, exist_ok=True)
    audio = bandlimited_noise(44100, 0.25, seed=1)
    seeds = []
    for name, subtype in (("s.wav", "PCM_16"), ("s.flac", "PCM_16"), ("s.mp3", None), ("s.ogg", "VORBIS")):
        sf.write(folder / name, audio.T, 44100, subtype=subtype)
        seeds.append(folder / name)
    write_pyav(folder / "s.m4a", audio, 44100, "aac")
    write_pyav(folder / "s.webm", bandlimited_noise(48000, 0.25, seed=2), 48000, "libopus")
    return [*seeds, folder / "s.m4a", folder / "s.webm"]


_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".webm", ".opus", ".aiff", ".mka")


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``data`` and what was done to it."""
    out = bytearray(data)
    kind = rng.choice(("flip", "truncate", "zero", "ones", "length", "junk", "splice"))
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        out = out[: rng.randrange(1, len(out))]
    elif kind in ("zero", "ones"):  # a header field: the first 128 bytes hold most of them
        start = rng.randrange(min(128, len(out)))
        out[start : start + rng.choice((1, 2, 4))] = bytes([0 if kind == "zero" else 0xFF]) * rng.choice(
            (1, 2, 4)
        )
    elif kind == "length":  # a 32-bit length that lies, anywhere a header may hold one
        start = rng.randrange(min(256, len(out) - 4))
        value = rng.choice((0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, len(out) * 1000))
        out[start : start + 4] = struct.pack(rng.choice(("<I", ">I")), value)
    elif kind == "junk":
        junk = rng.randbytes(rng.randint(1, 4096))
        out = bytearray(junk) if rng.random() < 0.3 else out[: rng.randrange(len(out))] + junk
    else:  # the start of one part with the rest shifted: a damaged copy
        i, j = sorted(rng.randrange(len(out)) for _ in range(2))
        out = out[:i] + out[j:] + out[i:j]
    return bytes(out), kind


def mutants(seeds: list[Path], folder: Path, count: int, seed: int) -> Iterator[Path]:
    """``count`` mutants of the seeds, written under ``folder``; a sixth get a wrong extension."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    contents = [s.read_bytes() for s in seeds]
    for i in range(count):
        k = i % len(seeds)
        data, kind = mutate(contents[k], rng)
        ext = rng.choice(_EXTENSIONS) if rng.random() < 1 / 6 else seeds[k].suffix
        path = folder / f"m{i:04d}-{kind}-{seeds[k].suffix[1:]}{ext}"
        path.write_bytes(data)
        yield path


def outcome(path: Path) -> str:
    """``decoded``, or the error's message; anything but a :class:`StemsplitError` escapes (a failure)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation and damage warnings are fine here
            for _ in AudioReader(path, block_frames=1 << 16):
                pass
    except StemsplitError as err:
        return str(err)
    return "decoded"


def check_mutants(
    tmp_path: Path, count: int, seed: int, capfd: pytest.CaptureFixture[str], model: Path
) -> None:
    seeds = make_seeds(tmp_path / "seeds")
    capfd.readouterr()
    bad: list[str] = []
    outcomes: dict[str, int] = {}
    made = list(mutants(seeds, tmp_path / "mutants", count, seed))
    for path in made:
        try:
            got = outcome(path)
        except Exception as err:  # what the test is looking for
            bad.append(f"{path.name}: {type(err).__name__}: {err}")
            continue
        if got != "decoded" and (str(path) not in got or "\n" in got):
            bad.append(f"{path.name}: the message does not name the file on one line: {got!r}")
        if isinstance(probe_input(path), AudioInfo) != (got == "decoded"):  # what --dry-run plans
            bad.append(f"{path.name}: the plan and the run disagree (the run: {got!r})")
        key = "decoded" if got == "decoded" else "refused"
        outcomes[key] = outcomes.get(key, 0) + 1
    assert bad == []
    assert set(outcomes) == {"decoded", "refused"}  # the mutants reach both ends
    err = capfd.readouterr().err
    assert "mpg123" not in err and "MPEG-Header" not in err and err.strip() == ""  # nobody prints on stderr
    # --dry-run over them: a row per mutant, no traceback, exit 1 (some cannot be decoded)
    result = CliRunner().invoke(
        cli_separate.separate_app,
        [str(tmp_path / "mutants"), "-n", str(model), "--dry-run", "--json", "-o", str(tmp_path / "out")],
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["input"] for r in rows) == sorted(map(str, made))


def test_300_mutants_of_six_formats_decode_or_fail_in_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], model_file: Path
) -> None:
    check_mutants(tmp_path, 330, seed=27, capfd=capfd, model=model_file)


@pytest.mark.slow
def test_2000_mutants_decode_or_fail_in_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], model_file: Path
) -> None:
    check_mutants(tmp_path, 2000, seed=2027, capfd=capfd, model=model_file)


# --- files that are not what their names say ----------------------------------------------------------


def _wav(path: Path, seconds: float = 0.2) -> Path:
    sf.write(path, bandlimited_noise(44100, seconds, seed=3).T, 44100, subtype="PCM_16")
    return path


def _riff_with(path: Path, *, fmt_tag: int = 1, rate: int = 44100, channels: int = 2, bits: int = 16) -> Path:
    """A 0.1-s PCM WAV with the ``fmt`` fields given (lying ones included)."""
    data = np.zeros(4410 * 2, np.int16).tobytes()
    align = max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align, align, bits)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _lying_xing_mp3(path: Path, frames: int = 2**31) -> Path:
    """A 1-s MP3 whose Xing header claims ``frames`` MPEG frames."""
    sf.write(path, bandlimited_noise(44100, 1.0, seed=4).T, 44100)
    data = bytearray(path.read_bytes())
    at = data.find(b"Xing")
    if at < 0:
        at = data.find(b"Info")
    assert at >= 0, "libsndfile's LAME wrote no Xing/Info header"
    flags = struct.unpack_from(">I", data, at + 4)[0]
    assert flags & 1, "no frame count in the Xing header"
    struct.pack_into(">I", data, at + 8, frames - 1)
    path.write_bytes(bytes(data))
    return path


def _nan_wav(path: Path) -> Path:
    audio = bandlimited_noise(44100, 0.3, seed=5)
    audio[:, 5000] = np.nan
    audio[1, 9000] = np.inf
    sf.write(path, audio.T, 44100, subtype="FLOAT")
    return path


def _one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message and str(path) in message, message


@posix_only
def test_special_files_are_named_and_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it for reading would block the test forever
    folder = tmp_path / "folder.mp3"
    folder.mkdir()
    cases = {fifo: "named pipe", Path("/dev/zero"): "character device", folder: "folder"}
    for path, what in cases.items():
        with pytest.raises(StemsplitError, match=what) as info:
            probe(path)
        _one_line_naming(str(info.value), path)


@posix_only
def test_a_symlink_loop_is_named_as_such(tmp_path: Path) -> None:
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    with pytest.raises(AudioFileNotFoundError, match="symbolic link loop"):
        probe(loop)


@posix_only
def test_discovery_keeps_every_path_and_raises_for_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link loop inside a folder ended the run from ``Path.resolve``; an argument that cannot be looked at
    (a closed folder above it) is reported, not raised."""
    from stemsplit.pipeline.inputs import discover_inputs, missing_reason

    lib = tmp_path / "lib"
    lib.mkdir()
    _wav(lib / "a.wav")
    (lib / "loop.wav").symlink_to(lib / "loop.wav")
    closed = tmp_path / "closed" / "b.wav"
    is_dir = Path.is_dir

    def refuse(self: Path) -> bool:
        if self == closed:
            raise PermissionError(13, "Permission denied", str(self))
        return is_dir(self)

    monkeypatch.setattr(Path, "is_dir", refuse)
    items = discover_inputs([str(lib), str(closed)])
    assert [(i.path, i.missing) for i in items] == [
        (lib / "a.wav", False),
        (lib / "loop.wav", False),
        (closed, True),
    ]
    assert missing_reason(items[2]).startswith(f"{closed}: cannot be looked into (Permission denied)")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: _riff_with(p, fmt_tag=0), "cannot be (read|decoded)"),
        (lambda p: _riff_with(p, fmt_tag=0xFFFF), "cannot be (read|decoded)"),
        (lambda p: _riff_with(p, bits=0), "cannot be (read|decoded)"),
        (lambda p: _riff_with(p, rate=0), "cannot be (read|decoded)"),
        (lambda p: _riff_with(p, channels=0), "cannot be (read|decoded)"),
        (lambda p: _riff_with(p, rate=1), "cannot be (read|decoded)"),
        (_lying_xing_mp3, "cannot be decoded .*more than its"),
    ],
    ids=["format-tag-0", "format-tag-ffff", "0-bits", "0-hz", "0-channels", "1-hz", "lying-xing"],
)
def test_the_probe_refuses_what_the_decoder_would(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path / "x.mp3" if make is _lying_xing_mp3 else tmp_path / "x.wav")
    with pytest.raises(AudioDecodeError, match=reason) as info:
        AudioReader(path)  # the probe and its checks, before any decoding
    _one_line_naming(str(info.value), path)


@pytest.mark.parametrize("name", ["locked.mp3", "locked.wav"])
def test_a_file_that_cannot_be_opened_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """An unreadable .mp3 aborted the run from the MPEG sniffing; a WAV's was told to re-download it. (The
    tests may run as root, who reads anything: the refusal is simulated where the file is opened.)"""
    path = _wav(tmp_path / "x.wav").rename(tmp_path / name)  # the contents do not matter
    opened = Path.open

    def refuse(self: Path, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(
        AudioDecodeError, match="cannot be opened \\(Permission denied\\); check the file's permissions"
    ):
        probe(path)


def test_a_name_with_control_characters_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines\x1b[31m.wav"
    path.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioDecodeError) as info:
        probe(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "two\\nlines\\x1b[31m.wav" in message


# --- one batch through the command line -----------------------------------------------------------------


@posix_only
def test_a_batch_of_valid_and_hostile_files_fails_only_the_hostile_ones(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    valid = [lib / "a-valid.wav", lib / "z-valid.wav"]
    write_audio(valid[0], seconds=0.3, seed=1)
    write_audio(valid[1], seconds=0.3, seed=2)
    os.mkfifo(lib / "fifo.wav")
    (lib / "folder.flac").mkdir()  # a folder named like audio inside the tree holds a link loop
    (lib / "folder.flac" / "loop.mp3").symlink_to(lib / "folder.flac" / "loop.mp3")
    hostile = [
        lib / "fifo.wav",
        lib / "folder.flac" / "loop.mp3",
        _riff_with(lib / "no-decoder.wav", fmt_tag=0),
        _riff_with(lib / "zero-hz.wav", rate=0),
        _riff_with(lib / "zero-channels.wav", channels=0),
        _lying_xing_mp3(lib / "lying.mp3"),
        _nan_wav(lib / "nan.wav"),
        lib / "junk.mp3",
        lib / "new\nline.wav",
    ]
    (lib / "junk.mp3").write_bytes(random.Random(3).randbytes(5000))
    (lib / "new\nline.wav").write_bytes(b"RIFF....WAVEjunk" * 8)
    with OneThread():
        result = CliRunner().invoke(
            cli_separate.separate_app,
            [str(lib), str(lib / "fifo.wav"), "/dev/zero", "-n", str(model_file), "--report", "r.json"],
            catch_exceptions=False,
        )
    assert result.exit_code == 1, result.output
    report = json.loads(Path("r.json").read_text())
    status = {t["input"]: (t["status"], t.get("error") or "") for t in report["tracks"]}
    for path in valid:
        assert status[str(path)][0] == "done"
        folder = Path("separated") / model_file.stem / path.stem
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [*(f"{s}.wav" for s in FOUR), "stemsplit.json"]
        )
        for stem in FOUR:
            assert sf.info(str(folder / f"{stem}.wav")).frames == round(0.3 * 44100)
    for path in [*hostile, Path("/dev/zero")]:
        got, error = status[str(path)]
        assert got == "failed", (path, error)
        assert "\n" not in error and "Traceback" not in error, error
    assert "NaN or infinite" in status[str(lib / "nan.wav")][1]
    assert "engine" not in status[str(lib / "nan.wav")][1]
    assert "symbolic link loop" in status[str(lib / "folder.flac" / "loop.mp3")][1]
    assert "named pipe" in status[str(lib / "fifo.wav")][1]
    assert "character device" in status["/dev/zero"][1]
    assert "more than its" in status[str(lib / "lying.mp3")][1]
    assert "new\\nline.wav" in result.output  # the odd name, escaped on its one line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_on_one_file_fails_only_that_file(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    """A bug or a library's surprise on one file (here an ``AttributeError`` from the probe, as FFmpeg's
    missing decoder once gave) ended the whole batch with a traceback."""
    from stemsplit import pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEMSPLIT_DEBUG", "1" if debug else "0")
    write_audio(tmp_path / "a.wav", seconds=0.2, seed=1)
    write_audio(tmp_path / "b.wav", seconds=0.2, seed=2)
    probe_one = pipeline.batch.probe

    def surprised(path: Path):
        if path.name == "b.wav":
            raise AttributeError("'NoneType' object has no attribute 'sample_rate'")
        return probe_one(path)

    monkeypatch.setattr(pipeline.batch, "probe", surprised)
    with OneThread():
        result = CliRunner().invoke(
            cli_separate.separate_app,
            ["a.wav", "b.wav", "-n", str(model_file), "--stems", "vocals", "--report", "r.json"],
            catch_exceptions=False,
        )
    assert result.exit_code == 1
    tracks = json.loads(Path("r.json").read_text())["tracks"]
    assert [t["status"] for t in tracks] == ["done", "failed"]
    line = "b.wav: internal error while probing it (AttributeError: 'NoneType' object has no attribute 'sample_rate')"
    assert tracks[1]["error"].startswith(line)
    assert ("Traceback" in result.output) is debug
    assert ("set STEMSPLIT_DEBUG=1" in tracks[1]["error"]) is not debug


@posix_only
def test_dry_run_agrees_with_the_run_on_hostile_files(model_file: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    _riff_with(lib / "zero-hz.wav", rate=0)
    _riff_with(lib / "zero-channels.wav", channels=0)
    result = CliRunner().invoke(
        cli_separate.separate_app, [str(lib), "-n", str(model_file), "--dry-run"], catch_exceptions=False
    )
    assert result.exit_code == 1
    assert "separate " not in result.output
    assert result.output.count("cannot decode") == 2


def test_a_resume_removes_what_a_killed_run_left_however_fresh(model_file: Path, tmp_path: Path) -> None:
    """#27: after a kill, the stopped track's folder kept ``.<stem>.wav.*.partial`` and ``*.stage`` files
    that the resume, minutes later, took for a live run's and left."""
    from stemsplit.audio.writer import temp_token

    write_audio(tmp_path / "a.wav", seconds=0.2, seed=1)
    folder = tmp_path / "out" / model_file.stem / "a"
    folder.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    token = f"{int(dead.stdout):x}-{temp_token().split('-')[1]}-0a1b2c"
    left = [folder / f".{stem}.wav.{token}.{kind}" for stem in FOUR for kind in ("partial", "stage")]
    for path in left:
        path.write_bytes(b"half a stem")
    with OneThread():
        result = CliRunner().invoke(
            cli_separate.separate_app,
            [str(tmp_path / "a.wav"), "-n", str(model_file), "-o", str(tmp_path / "out")],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(f"{s}.wav" for s in FOUR), "stemsplit.json"])


# --- Ctrl-C ----------------------------------------------------------------------------------------------

# The console script (``main()`` with no arguments: the process ends with the command), with hooks: every
# batch of the device thread after the first spends 6 s in native code first (what a real batch does on a
# busy CPU, longer than the batch waits for its workers), and a file ``ready`` appears at the moment to
# interrupt: while c.wav is decoded (b's batch is running), once a's paths are out, or while a is written.
CTRL_C_RUN = """
import sys, time
from pathlib import Path
import torch
from stemsplit.audio import reader, writer
from stemsplit.inference import runner

moment = sys.argv[1]
decode = reader.decode_chunks
def decoding(info):
    for chunk in decode(info):
        if moment == "decode" and info.path.name == "c.wav":
            Path("ready").touch()
            time.sleep(0.2)
        yield chunk
reader.decode_chunks = decoding
launch = runner.DeviceRunner.launch
big = torch.randn(1000, 1000)
launched = []
def slow(self, *args, **kwargs):
    end = time.monotonic() + (6.0 if launched else 0.0)
    launched.append(1)
    while time.monotonic() < end:
        big @ big
    return launch(self, *args, **kwargs)
runner.DeviceRunner.launch = slow
write = writer.StemWriter.write
def writing(self, block):
    if moment == "write":
        Path("ready").touch()
    write(self, block)
writer.StemWriter.write = writing
sys.argv = ["stemsplit", *sys.argv[2:]]
from stemsplit.cli import main
main()
"""


@posix_only
@pytest.mark.parametrize("moment", ["decode", "mid-batch", "write"])
def test_ctrl_c_exits_130_at_any_moment_under_load(model_file: Path, tmp_path: Path, moment: str) -> None:
    """#27: after Ctrl-C, a device thread still inside native code made the interpreter's exit abort
    (``terminate called without an active exception``, exit 134)."""
    for name in ("a", "b", "c"):  # one window each (the test model's window is 0.25 s)
        write_audio(tmp_path / f"{name}.wav", seconds=0.2, seed=ord(name))
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the abort showed on a busy machine
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **TORCH_BACKEND}
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_RUN, moment, "a.wav", "b.wav", "c.wav", "-n", str(model_file)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        ready = tmp_path / "ready"
        while not (ready.exists() if moment != "mid-batch" else _first_line(proc)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the moment never came"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        load.kill()
        load.wait()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "terminate called" not in err and "Traceback" not in err
    assert "interrupted" in err


def _first_line(proc: subprocess.Popen[str]) -> bool:
    """Whether the run has printed its first result (non-blocking)."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout.fileno()], [], [], 0)
    return bool(ready)
