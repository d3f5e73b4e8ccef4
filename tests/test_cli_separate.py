"""``stemsplit [OPTIONS] PATHS...`` end to end: Typer's runner, a real subprocess, a tiny model (local file,
bag, or registry entry served from loopback), every option of the design's list, batches, resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from checkpoints import damage_tensors
from httpserver import LoopbackServer
from separation_helpers import TORCH_BACKEND, read_audio, write_audio
from stemsplit import pipeline
from stemsplit._version import __version__
from stemsplit.audio import StemWriter
from stemsplit.cli import separate as cli_separate
from stemsplit.weights import loading
from stemsplit.weights import registry as models
from stemsplit.weights.cache import ModelCache
from stemsplit.weights.registry import ModelSpec, WeightFile, make_registry

pytestmark = pytest.mark.usefixtures("one_thread_in_tmp")

FOUR = ("drums", "bass", "other", "vocals")
EXACT = ("--bit-depth", "32f", "--clip", "none", "--precision", "float32", "-d", "cpu")
runner = CliRunner()


@pytest.fixture
def song(tmp_path: Path) -> np.ndarray:
    return write_audio(tmp_path / "song.wav", seconds=0.5)


def json_lines(text: str) -> list[dict]:
    """``--json`` output: one JSON object per line (JSON Lines)."""
    return [json.loads(line) for line in text.splitlines()]


def invoke(*args: str | Path):
    return runner.invoke(cli_separate.separate_app, [str(a) for a in args], catch_exceptions=False)


def run_ok(model: Path, *args: str | Path):
    result = invoke(*args, "-n", model)
    assert result.exit_code == 0, result.stderr
    return result


def stem_paths(folder: Path, stems=FOUR, ext="wav") -> list[Path]:
    return [folder / f"{s}.{ext}" for s in stems]


def engine_stems(model: Path, mix: np.ndarray) -> np.ndarray:
    """The engine on the whole track in memory (an independent path from the streamed pipeline)."""
    import torch

    from stemsplit.inference import EngineOptions, separate_tensor

    bag = loading.load_model(loading.describe_model(str(model)))
    options = EngineOptions(device="cpu", precision="float32")
    return separate_tensor(bag, torch.from_numpy(mix), options=options).numpy().astype(np.float64)


# --- the default run ---------------------------------------------------------------------------


def test_default_run_writes_the_demucs_layout_and_prints_only_paths(
    model_file: Path, song: np.ndarray
) -> None:
    result = run_ok(model_file, "song.wav")
    folder = Path("separated") / model_file.stem / "song"
    expected = stem_paths(folder)
    assert result.stdout.splitlines() == [str(p) for p in expected]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(p.name for p in expected), "stemsplit.json"])
    for path in expected:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            44100,
            2,
            song.shape[1],
            "PCM_16",
        )
    assert "1 done, 0 skipped" in result.stderr


def test_float_output_equals_the_engine_on_the_whole_track(model_file: Path, song: np.ndarray) -> None:
    result = run_ok(model_file, "song.wav", *EXACT)
    expected = engine_stems(model_file, song)
    for k, path in enumerate(Path(p) for p in result.stdout.splitlines()):
        decoded, rate = read_audio(path)
        assert rate == 44100
        np.testing.assert_allclose(decoded, expected[k], atol=1e-5, err_msg=path.name)


# --- output options ----------------------------------------------------------------------------


def test_out_and_filename(model_file: Path, song: np.ndarray) -> None:
    result = run_ok(
        model_file, "song.wav", "-o", "stems", "--filename", "{track}.{trackext}/{model}_{stem}.{ext}"
    )
    folder = Path("stems/song.wav")
    assert result.stdout.splitlines() == [str(folder / f"{model_file.stem}_{s}.wav") for s in FOUR]
    assert (folder / "stemsplit.json").is_file()
    assert invoke("song.wav", "-n", model_file, "--filename", "{track}/{oops}.{ext}").exit_code == 2


@pytest.mark.parametrize(
    ("args", "ext", "subtype"),
    [
        (("--format", "flac"), "flac", "PCM_16"),
        (("--format", "flac", "--bit-depth", "24"), "flac", "PCM_24"),
        (("--bit-depth", "24"), "wav", "PCM_24"),
        (("--bit-depth", "32f"), "wav", "FLOAT"),
        (("--format", "wav", "--bit-depth", "16"), "wav", "PCM_16"),
    ],
)
def test_format_and_bit_depth(model_file: Path, song: np.ndarray, args, ext: str, subtype: str) -> None:
    result = run_ok(model_file, "song.wav", *args)
    paths = [Path(p) for p in result.stdout.splitlines()]
    assert [p.suffix for p in paths] == [f".{ext}"] * 4
    assert {sf.info(str(p)).subtype for p in paths} == {subtype}


def test_mp3_and_its_bitrate(model_file: Path, song: np.ndarray) -> None:
    low = run_ok(model_file, "song.wav", "--format", "mp3", "--mp3-bitrate", "64", "-o", "low")
    high = run_ok(
        model_file, "song.wav", "--format", "mp3", "--bit-depth", "24", "-o", "high"
    )  # 320 by default
    low_paths, high_paths = ([Path(p) for p in r.stdout.splitlines()] for r in (low, high))
    assert all(p.suffix == ".mp3" and sf.info(str(p)).format == "MP3" for p in low_paths + high_paths)
    seconds = song.shape[1] / 44100
    for path, kbps in [(low_paths[0], 64), (high_paths[0], 320)]:
        assert path.stat().st_size == pytest.approx(kbps * 1000 / 8 * seconds, rel=0.5), path
    assert invoke("song.wav", "-n", model_file, "--format", "mp3", "--mp3-bitrate", "400").exit_code == 2


def test_mp3_with_an_explicit_rate_it_lacks_is_a_usage_error_before_any_work(
    model_file: Path, song: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``--format mp3 --sample-rate 96000`` silently wrote 44.1 kHz stems."""

    def refuse(*args, **kwargs):
        raise AssertionError("no model may be described or loaded")

    monkeypatch.setattr(pipeline.batch, "describe_model", refuse)
    for extra in ((), ("--dry-run",)):
        result = invoke("song.wav", "-n", model_file, "--format", "mp3", "--sample-rate", "96000", *extra)
        assert result.exit_code == 2, result.stderr
        message = _flat(result.stderr)
        assert "--sample-rate 96000" in message and "MP3" in message
        assert "32000, 44100, 48000" in message
        assert result.stdout == "" and not Path("separated").exists()


def test_mp3_of_an_input_at_a_rate_mp3_lacks_is_written_at_44100_with_a_warning(
    model_file: Path, tmp_path: Path
) -> None:
    write_audio(tmp_path / "hi.wav", seconds=0.3, rate=96000)
    result = run_ok(model_file, "hi.wav", "--format", "mp3", "--stems", "bass", "--json")
    (track,) = json_lines(result.stdout)
    assert sf.info(track["outputs"]["bass"]).samplerate == 44100
    warned = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warned) == 1, result.stderr
    assert "MP3 cannot store the input's 96000 Hz" in _flat(result.stderr)
    assert "written at 44100 Hz" in _flat(result.stderr)
    assert [w["kind"] for w in track["warnings"]] == ["sample_rate"]
    wav = run_ok(model_file, "hi.wav", "--stems", "bass", "-o", "wav")
    assert "Warning" not in wav.stderr  # wav keeps 96 kHz: nothing to say


def test_sample_rate_option_and_input_rate(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "hi.wav", seconds=0.5, rate=48000)
    result = run_ok(model_file, "hi.wav", "--sample-rate", "22050", "-o", "a")
    for path in map(Path, result.stdout.splitlines()):
        info = sf.info(str(path))
        assert (info.samplerate, info.frames) == (22050, 11025)
    result = run_ok(model_file, "hi.wav", "--sample-rate", "input", "-o", "b")
    for path in map(Path, result.stdout.splitlines()):
        info = sf.info(str(path))
        assert (info.samplerate, info.frames, info.channels) == (48000, 24000, 2)


def test_mono_input_gives_mono_stems(model_file: Path, tmp_path: Path) -> None:
    mono = write_audio(tmp_path / "mono.wav", seconds=0.4, channels=1)
    result = run_ok(model_file, "mono.wav", *EXACT)
    stereo = engine_stems(model_file, np.repeat(mono, 2, axis=0))
    for k, path in enumerate(map(Path, result.stdout.splitlines())):
        decoded, _ = read_audio(path)
        assert decoded.shape == mono.shape
        np.testing.assert_allclose(decoded[0], stereo[k].mean(0), atol=1e-5)


def test_48k_input_gives_48k_stems_of_the_same_length(model_file: Path, tmp_path: Path) -> None:
    audio = write_audio(tmp_path / "a48.flac", seconds=0.37, rate=48000, subtype="PCM_24")
    result = run_ok(model_file, "a48.flac", "--format", "flac")
    for path in map(Path, result.stdout.splitlines()):
        info = sf.info(str(path))
        assert (info.samplerate, info.frames, info.channels) == (48000, audio.shape[1], 2)


def test_two_stems_add_minus_none(model_file: Path, song: np.ndarray) -> None:
    full = run_ok(model_file, "song.wav", *EXACT, "-o", "full")
    drums, bass, other, _ = (read_audio(Path(p))[0] for p in full.stdout.splitlines())

    add = run_ok(model_file, "song.wav", *EXACT, "-o", "add", "--two-stems", "vocals")
    assert [Path(p).name for p in add.stdout.splitlines()] == ["vocals.wav", "no_vocals.wav"]
    np.testing.assert_allclose(read_audio(Path(add.stdout.split()[1]))[0], drums + bass + other, atol=2e-6)

    minus = run_ok(
        model_file, "song.wav", *EXACT, "-o", "minus", "--two-stems", "vocals", "--other-method", "minus"
    )
    vocals, no_vocals = (read_audio(Path(p))[0] for p in minus.stdout.splitlines())
    np.testing.assert_allclose(no_vocals, song.astype(np.float64) - vocals, atol=2e-6)

    none = run_ok(model_file, "song.wav", "-o", "none", "--two-stems", "bass", "--other-method", "none")
    assert [Path(p).name for p in none.stdout.splitlines()] == ["bass.wav"]
    assert sorted(p.name for p in Path(none.stdout.strip()).parent.iterdir()) == [
        "bass.wav",
        "stemsplit.json",
    ]


def test_stems_keeps_only_some_in_the_given_order(model_file: Path, song: np.ndarray) -> None:
    result = run_ok(model_file, "song.wav", "--stems", "vocals,drums")
    assert [Path(p).name for p in result.stdout.splitlines()] == ["vocals.wav", "drums.wav"]
    bad = invoke("song.wav", "-n", model_file, "--stems", "vocals,piano")
    assert bad.exit_code == 2 and "drums, bass, other, vocals" in bad.stderr


def test_clip_modes(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "loud.wav", seconds=0.4, peak=8.0)  # float input beyond full scale
    common = ("loud.wav", "--bit-depth", "32f", "--precision", "float32")
    raw = [
        read_audio(Path(p))[0]
        for p in run_ok(model_file, *common, "--clip", "none", "-o", "n").stdout.split()
    ]
    peak = max(np.abs(r).max() for r in raw)
    assert peak > 1.2, "the test needs stems that clip"
    rescaled = [read_audio(Path(p))[0] for p in run_ok(model_file, *common, "-o", "r").stdout.split()]
    gain = 0.99 / peak  # one gain shared by all stems, so they still sum to (a scaled) mix
    for r, x in zip(raw, rescaled, strict=True):
        np.testing.assert_allclose(x, r * gain, atol=1e-6)
    clamped = [
        read_audio(Path(p))[0]
        for p in run_ok(model_file, *common, "--clip", "clamp", "-o", "c").stdout.split()
    ]
    for r, x in zip(raw, clamped, strict=True):
        np.testing.assert_allclose(x, np.clip(r, -1, 1), atol=1e-6)


# --- compute options ---------------------------------------------------------------------------


def test_compute_options_do_not_change_the_result(model_file: Path, song: np.ndarray) -> None:
    base = run_ok(model_file, "song.wav", *EXACT, "-o", "a", "--report", "a.json")
    other = run_ok(
        model_file, "song.wav", *EXACT, "-o", "b", "--batch-size", "1", "--jobs", "1", "--report", "b.json"
    )
    for x, y in zip(base.stdout.split(), other.stdout.split(), strict=True):
        np.testing.assert_allclose(read_audio(Path(x))[0], read_audio(Path(y))[0], atol=1e-6)
    (track,) = json.loads(Path("b.json").read_text())["tracks"]
    assert (track["device"], track["precision"], track["batch_size"]) == ("cpu", "float32", 1)


def test_segment_and_overlap(model_file: Path, song: np.ndarray) -> None:
    base = run_ok(model_file, "song.wav", *EXACT, "-o", "a")
    short = run_ok(model_file, "song.wav", *EXACT, "-o", "b", "--segment", "0.2", "--overlap", "0.5")
    a, b = (read_audio(Path(r.stdout.split()[3]))[0] for r in (base, short))
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-4)
    too_long = invoke("song.wav", "-n", model_file, "--segment", "0.3", "-o", "c")
    assert too_long.exit_code == 2 and "--segment 0.3 is longer" in too_long.stderr
    assert not any(Path("c").rglob("*.wav"))
    assert invoke("song.wav", "-n", model_file, "--overlap", "1").exit_code == 2


def test_shifts_and_seed(model_file: Path, song: np.ndarray) -> None:
    def vocals(out: str, *args: str) -> np.ndarray:
        result = run_ok(model_file, "song.wav", *EXACT, "--stems", "vocals", "-o", out, *args)
        return read_audio(Path(result.stdout.strip()))[0]

    one = vocals("a", "--shifts", "1", "--seed", "1")
    again = vocals("b", "--shifts", "1", "--seed", "1")
    other_seed = vocals("c", "--shifts", "1", "--seed", "2")
    no_shift = vocals("d")
    np.testing.assert_array_equal(one, again)
    assert not np.allclose(one, other_seed, atol=1e-4)
    assert not np.allclose(one, no_shift, atol=1e-4)


# --- skip, overwrite, resume -------------------------------------------------------------------


def test_rerun_skips_complete_tracks_and_overwrite_redoes_them(model_file: Path, song: np.ndarray) -> None:
    first = run_ok(model_file, "song.wav")
    paths = [Path(p) for p in first.stdout.split()]
    stamps = [p.stat().st_mtime_ns for p in paths]
    skipped = run_ok(model_file, "song.wav", "--skip-existing")
    assert skipped.stdout.split() == [str(p) for p in paths]  # the stems asked for exist: printed
    assert "0 done, 1 skipped" in skipped.stderr
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    changed = run_ok(model_file, "song.wav", "--clip", "clamp")  # other settings: not complete
    assert changed.stdout.split() == [str(p) for p in paths]
    stamps = [p.stat().st_mtime_ns for p in paths]
    redone = run_ok(model_file, "song.wav", "--clip", "clamp", "--overwrite")
    assert redone.stdout.split() == [str(p) for p in paths] and "1 done" in redone.stderr
    assert all(p.stat().st_mtime_ns > s for p, s in zip(paths, stamps, strict=True))


def interrupt_writing(monkeypatch: pytest.MonkeyPatch, victim: str) -> list[str]:
    """The first block written for a stem path containing ``victim`` raises KeyboardInterrupt (a Ctrl-C
    mid-write: some audio is already in the temporary files). Returns the record of interrupts."""
    hits: list[str] = []
    write = StemWriter.write

    def interrupted(stem_writer: StemWriter, block: np.ndarray) -> None:
        write(stem_writer, block)
        if victim in str(stem_writer.path):
            hits.append(stem_writer.name)
            raise KeyboardInterrupt

    monkeypatch.setattr(StemWriter, "write", interrupted)
    return hits


def interrupt_publishing(monkeypatch: pytest.MonkeyPatch, victim: str, stem: str) -> list[str]:
    """Renaming ``stem`` of the track into place raises KeyboardInterrupt (the stems before it are in place)."""
    hits: list[str] = []
    publish = StemWriter.publish

    def interrupted(stem_writer: StemWriter) -> None:
        if victim in str(stem_writer.path) and stem_writer.name == stem:
            hits.append(stem)
            raise KeyboardInterrupt
        publish(stem_writer)

    monkeypatch.setattr(StemWriter, "publish", interrupted)
    return hits


def test_resume_after_a_kill_mid_write(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_audio(tmp_path / "in" / "a.wav", seconds=0.4, seed=1)
    write_audio(tmp_path / "in" / "b.wav", seconds=0.4, seed=2)
    with monkeypatch.context() as patch:
        hits = interrupt_writing(patch, "/b/")
        killed = invoke("in", "-n", model_file)
    assert hits == ["drums"] and killed.exit_code == 130 and "interrupted" in killed.stderr
    a_dir, b_dir = (Path("separated") / model_file.stem / t for t in ("a", "b"))
    assert sorted(p.name for p in a_dir.iterdir()) == sorted([f"{s}.wav" for s in FOUR] + ["stemsplit.json"])
    assert not b_dir.exists() or list(b_dir.iterdir()) == []  # no stem, no temp file, no sidecar
    stamps = {p: p.stat().st_mtime_ns for p in a_dir.iterdir()}

    resumed = run_ok(model_file, "in")
    assert "1 done, 1 skipped" in resumed.stderr
    assert resumed.stdout.split() == [str(p) for p in (*stem_paths(a_dir), *stem_paths(b_dir))]
    assert {p: p.stat().st_mtime_ns for p in a_dir.iterdir()} == stamps
    assert sorted(p.name for p in b_dir.iterdir()) == sorted([f"{s}.wav" for s in FOUR] + ["stemsplit.json"])


def test_kill_between_stem_renames_is_not_taken_for_complete(
    model_file: Path, song: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (#7): an interrupted --overwrite left the old sidecar beside a half-replaced set of stems."""
    first = run_ok(model_file, "song.wav", *EXACT)
    before = {Path(p).name: read_audio(Path(p))[0] for p in first.stdout.split()}
    with monkeypatch.context() as patch:
        hits = interrupt_publishing(patch, "song", "bass")
        killed = invoke("song.wav", "-n", model_file, *EXACT, "--shifts", "1", "--overwrite")
    assert hits == ["bass"] and killed.exit_code == 130
    folder = Path("separated") / model_file.stem / "song"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # temp files were removed
    # drums.wav now holds --shifts 1 audio: the default settings must not take the track as complete.
    again = run_ok(model_file, "song.wav", *EXACT)
    assert "1 done" in again.stderr
    for name, audio in before.items():
        np.testing.assert_array_equal(read_audio(folder / name)[0], audio)


# --- batches ---------------------------------------------------------------------------------


def test_folders_and_globs(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "lib" / "x.WAV", seconds=0.3)
    write_audio(tmp_path / "lib" / "sub" / "y.flac", seconds=0.3, subtype="PCM_16")
    (tmp_path / "lib" / "notes.txt").write_text("not audio")
    result = run_ok(model_file, "lib", "-o", "lib/out", "--stems", "vocals")
    assert result.stdout.split() == [f"lib/out/{model_file.stem}/{t}/vocals.wav" for t in ("x", "y")]
    again = run_ok(
        model_file, "lib", "-o", "lib/out", "--stems", "vocals"
    )  # the output folder is not an input
    assert "0 done, 2 skipped (already complete), 0 failed" in again.stderr
    globbed = run_ok(model_file, "lib/**/*.flac", "-o", "g", "--stems", "vocals")
    assert globbed.stdout.split() == [f"g/{model_file.stem}/y/vocals.wav"]


def test_a_folder_without_audio_fails_like_a_glob_that_matches_nothing(model_file: Path) -> None:
    """Regression: ``mkdir e; stemsplit e`` exited 0 with "0 done" and no word about the folder."""
    Path("e").mkdir()
    (Path("e") / "notes.txt").write_text("no audio here")
    folder = invoke("e", "-n", model_file)
    glob = invoke("nothing/*.wav", "-n", model_file)
    assert folder.exit_code == glob.exit_code == 1, folder.stderr
    assert folder.stdout == glob.stdout == ""
    message = _flat(folder.stderr)
    assert "Failed: e: no audio files in this folder" in message and ".wav, .flac" in message
    assert "Failed: nothing/*.wav: no such file" in glob.stderr
    dry = invoke("e", "-n", model_file, "--dry-run")
    assert dry.exit_code == 1 and dry.stdout.startswith("not found       e: no audio files in this folder")


def test_hidden_files_found_in_folders_are_skipped(model_file: Path, tmp_path: Path) -> None:
    """Regression: macOS ``._song.wav`` files (exFAT drives) and ``.git`` made a batch fail."""
    write_audio(tmp_path / "lib" / "song.wav", seconds=0.3)
    for name in ("._song.wav", ".DS_Store", ".git/objects/x.wav"):
        (tmp_path / "lib" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "lib" / name).write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    result = run_ok(model_file, "lib", "--stems", "vocals")
    assert result.stdout.split() == [f"separated/{model_file.stem}/song/vocals.wav"]
    assert "1 done, 0 skipped (already complete), 0 failed" in result.stderr
    assert "._song" not in result.stderr
    explicit = invoke("lib/._song.wav", "-n", model_file, "--stems", "vocals")  # named: still tried
    assert explicit.exit_code == 1 and "Failed: lib/._song.wav" in explicit.stderr


def test_bad_files_fail_alone_with_exit_code_1(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "good1.wav", seconds=0.3)
    (tmp_path / "text.mp3").write_text("this is not an mp3\n" * 20)
    (tmp_path / "empty.wav").write_bytes(b"")
    write_audio(tmp_path / "good2.flac", seconds=0.3, subtype="PCM_16")
    result = invoke("good1.wav", "text.mp3", "empty.wav", "missing.wav", "good2.flac", "-n", model_file,
                    "--stems", "vocals", "--report", "r.json")  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout.split() == [
        f"separated/{model_file.stem}/{t}/vocals.wav" for t in ("good1", "good2")
    ]
    for name in ("text.mp3", "empty.wav", "missing.wav"):
        assert f"Failed: {name}" in result.stderr
    assert "2 done, 0 skipped (already complete), 3 failed" in result.stderr
    tracks = json.loads(Path("r.json").read_text())["tracks"]
    assert [(t["input"], t["status"]) for t in tracks] == [
        ("good1.wav", "done"), ("text.mp3", "failed"), ("empty.wav", "failed"), ("missing.wav", "failed"),
        ("good2.flac", "done"),
    ]  # fmt: skip
    assert all(t["error"] for t in tracks if t["status"] == "failed")


def test_dry_run_loads_no_model_and_writes_nothing(
    model_file: Path, song, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run must not load the model")

    Path("bad.wav").write_bytes(b"RIFF nonsense")
    with monkeypatch.context() as patch:
        patch.setattr(loading, "load_model", refuse)
        patch.setattr(pipeline.batch, "load_model", refuse)
        text = invoke("song.wav", "bad.wav", "-n", model_file, "--dry-run")
        as_json = invoke("song.wav", "bad.wav", "-n", model_file, "--dry-run", "--json")
    assert text.exit_code == 1 and as_json.exit_code == 1  # the real run would fail on bad.wav
    assert not Path("separated").exists()
    lines = text.stdout.splitlines()
    assert lines[0].startswith("separate") and "song.wav" in lines[0] and "44100 Hz, 2 ch" in lines[0]
    assert lines[1].startswith("cannot decode   bad.wav: ") and lines[1].count("bad.wav") == 1
    good, bad = json_lines(as_json.stdout)
    assert (
        good["action"] == "separate"
        and good["outputs"]["vocals"] == f"separated/{model_file.stem}/song/vocals.wav"
    )
    assert good["duration_s"] == pytest.approx(0.5) and (good["samplerate"], good["channels"]) == (44100, 2)
    assert bad["action"] == "cannot decode" and "bad.wav" in bad["error"]
    assert "nothing was separated (--dry-run)" in text.stderr
    run_ok(model_file, "song.wav")
    (track,) = json_lines(invoke("song.wav", "-n", model_file, "--dry-run", "--json").stdout)
    assert track["action"] == "skip (complete)"
    quiet = invoke("song.wav", "-n", model_file, "--dry-run", "-q")
    assert quiet.stdout.startswith("skip (complete) song.wav") and quiet.stderr == ""


def test_dry_run_reads_only_a_local_models_header(
    model_file: Path, song: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``--dry-run -n local.th`` read every tensor and hashed the whole file."""
    from stemsplit.weights import checkpoint, download

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not read the tensors or hash the model file")

    with monkeypatch.context() as patch:
        for module, name in (
            (checkpoint, "load_checkpoint"),
            (loading, "sha256_file"),
            (download, "sha256_file"),
        ):
            patch.setattr(module, name, refuse)
        dry = invoke("song.wav", "-n", model_file, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.startswith("separate") and "song.wav" in dry.stdout

    # A file whose header is fine but whose tensors are cut short passes the dry run; the real run still
    # refuses it up front (exit 3, nothing written), as before.
    damaged = damage_tensors(model_file, Path("damaged.th"))
    assert invoke("song.wav", "-n", damaged, "--dry-run").exit_code == 0
    real = invoke("song.wav", "-n", damaged)
    assert real.exit_code == 3 and "damaged.th" in _flat(real.stderr)
    assert real.stdout == "" and not Path("separated").exists()


def test_report_schema(model_file: Path, song: np.ndarray) -> None:
    sf.write("silent.wav", np.zeros((8000, 2), dtype=np.float32), 44100, subtype="FLOAT")
    result = invoke("song.wav", "silent.wav", "nope.wav", "-n", model_file, "--report", "out/report.json")
    assert result.exit_code == 1

    def strict(constant: str):
        raise ValueError(f"not JSON: {constant}")

    document = json.loads(Path("out/report.json").read_text(), parse_constant=strict)
    assert set(document) == {"stemsplit_version", "model", "settings", "summary", "tracks"}
    assert document["stemsplit_version"] == __version__
    assert document["model"] == {
        "name": model_file.stem,
        "weights": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "path": str(model_file),
    }
    assert document["summary"] == {
        "done": 2,
        "skipped": 0,
        "failed": 1,
        "interrupted": 0,
        "done_with_warnings": 1,
    }
    assert document["settings"]["model"] == str(model_file) and document["settings"]["out_dir"] == "separated"
    types = {
        "input": str, "status": str, "error": (str, type(None)), "outputs": dict, "duration_s": (float, type(None)),
        "samplerate": (int, type(None)), "channels": (int, type(None)), "codec": (str, type(None)),
        "output_samplerate": (int, type(None)), "timings": dict, "model": (str, type(None)),
        "device": (str, type(None)), "precision": (str, type(None)), "batch_size": (int, type(None)),
        "node": type(None), "gain": (float, type(None)), "stems": dict, "warnings": list,
    }  # fmt: skip
    for track in document["tracks"]:
        assert set(track) == set(types)
        for key, kind in types.items():
            assert isinstance(track[key], kind), (key, track[key])
    done, silent, failed = document["tracks"]
    assert set(done["outputs"]) == set(FOUR) and set(done["timings"]) == {"decode", "separate", "total"}
    assert set(done["stems"]["vocals"]) == {"peak", "rms", "peak_dbfs"}
    assert math.isclose(
        done["stems"]["vocals"]["peak_dbfs"], 20 * math.log10(done["stems"]["vocals"]["peak"])
    )
    assert silent["stems"]["vocals"]["peak"] == 0.0 and silent["stems"]["vocals"]["peak_dbfs"] is None
    assert done["warnings"] == [] and failed["warnings"] == []
    assert [w["kind"] for w in silent["warnings"]] == ["silent_input"]
    assert (
        silent["warnings"][0]["message"]
        == "silent.wav: the input is silent (every sample is zero), so are its stems"
    )
    assert failed["status"] == "failed" and failed["outputs"] == {} and "nope.wav" in failed["error"]
    assert done["model"] == silent["model"] == model_file.stem and failed["model"] is None  # not probed


def test_json_output(model_file: Path, song: np.ndarray) -> None:
    result = run_ok(model_file, "song.wav", "--json", "--two-stems", "vocals")
    (track,) = json_lines(result.stdout)
    assert track["status"] == "done" and list(track["outputs"]) == ["vocals", "no_vocals"]
    assert track["outputs"]["vocals"] == f"separated/{model_file.stem}/song/vocals.wav"


def test_quiet_prints_only_errors_and_verbose_prints_details(model_file: Path, song: np.ndarray) -> None:
    quiet = run_ok(model_file, "song.wav", "-q", "-o", "q")
    assert quiet.stderr == "" and len(quiet.stdout.split()) == 4
    failing = invoke("song.wav", "nope.wav", "-n", model_file, "-q", "-o", "q")
    assert failing.exit_code == 1 and failing.stderr.strip().startswith("Failed: nope.wav")
    assert "done" not in failing.stderr
    verbose = run_ok(model_file, "song.wav", "-v", "-o", "v", "-d", "cpu")
    assert "song.wav: done in" in verbose.stderr and "on cpu" in verbose.stderr
    # which precision ``auto`` chose and the CPU flag it rests on (the suite's simulated CPU has no AMX)
    assert "compute: cpu, float32 (float32: no AMX (amx_bf16)" in _flat(verbose.stderr)
    # and what runs the networks on the CPU, with why (the suite's simulated CPU is an AMD one, no runtime)
    assert ", torch (PyTorch: ONNX Runtime is not installed" in _flat(verbose.stderr)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_a_cpu_emulates_is_honoured_with_one_warning_per_run(
    model_file: Path, tmp_path: Path, precision: str
) -> None:
    for name in ("a", "b", "c"):
        write_audio(tmp_path / f"{name}.wav", seconds=0.2)
    result = invoke("a.wav", "b.wav", "c.wav", "-n", model_file, "--precision", precision, "-d", "cpu", "-q")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split()) == 12
    text = _flat(result.stderr)
    assert text.count(f"Warning: --precision {precision}") == 1, result.stderr
    assert "slower than float32" in text and "--precision auto uses float32 here" in text
    report = invoke("a.wav", "-n", model_file, "--precision", "float32", "-d", "cpu", "-q", "--overwrite")
    assert report.exit_code == 0 and report.stderr == ""  # float32 is never warned about


def test_warnings_go_to_stderr(model_file: Path, tmp_path: Path) -> None:
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (11025, 6)).astype(np.float32)
    sf.write(str(tmp_path / "surround.wav"), audio, 44100)
    result = invoke("surround.wav", "-n", model_file, "--stems", "bass")
    assert result.exit_code == 0 and "Warning:" in result.stderr and "surround.wav" in result.stderr
    assert result.stdout.split() == [f"separated/{model_file.stem}/surround/bass.wav"]
    quiet = invoke("surround.wav", "-n", model_file, "--stems", "bass", "-q", "--overwrite")
    assert quiet.exit_code == 0 and quiet.stdout == result.stdout
    assert quiet.stderr.startswith("Warning: surround.wav: 6 channels downmixed")  # -q quiets progress only


def _flat(text: str) -> str:
    """Rich wraps long lines at the terminal's width: compare text with single spaces."""
    return " ".join(text.split())


def test_truncated_input_is_done_with_a_warning_in_the_summary_the_report_and_with_q(
    model_file: Path, tmp_path: Path
) -> None:
    write_audio(tmp_path / "cut.wav", seconds=2.5)
    whole = Path("cut.wav").read_bytes()
    Path("cut.wav").write_bytes(whole[: int(len(whole) * 0.4)])  # the header still says 2.5 s
    write_audio(tmp_path / "fine.wav", seconds=0.3, seed=3)
    expected = [f"separated/{model_file.stem}/{t}/vocals.wav" for t in ("cut", "fine")]

    result = invoke("cut.wav", "fine.wav", "-n", model_file, "--stems", "vocals", "--report", "r.json")
    assert result.exit_code == 0, result.stderr  # what decoded was separated: done, not failed
    assert result.stdout.split() == expected  # stdout carries only results, warnings or not
    stderr = _flat(result.stderr)
    assert "Warning: cut.wav: ends at 1.0 s but its header says 2.5 s (truncated file?)" in stderr
    assert "done, 1 warning" in stderr  # the summary table's row for cut.wav
    assert "2 done (1 with warnings), 0 skipped (already complete), 0 failed" in stderr
    document = json.loads(Path("r.json").read_text())
    assert document["summary"] == {
        "done": 2,
        "skipped": 0,
        "failed": 0,
        "interrupted": 0,
        "done_with_warnings": 1,
    }
    cut, fine = document["tracks"]
    assert cut["status"] == "done" and fine["warnings"] == []
    (warning,) = cut["warnings"]
    assert warning["kind"] == "truncated_audio" and warning["message"].startswith("cut.wav: ends at 1.0 s")

    quiet = invoke("cut.wav", "fine.wav", "-n", model_file, "--stems", "vocals", "-q", "--overwrite")
    assert quiet.exit_code == 0 and quiet.stdout == result.stdout
    assert _flat(quiet.stderr) == f"Warning: {warning['message']}"  # no progress, no summary, the warning


def test_silent_input_gets_one_warning(model_file: Path, tmp_path: Path) -> None:
    """Regression (#12): four "near-silent" warnings for one silent input, one of them "no other"."""
    sf.write(str(tmp_path / "silence.wav"), np.zeros((8000, 2), np.float32), 44100)
    result = run_ok(model_file, "silence.wav", "--two-stems", "vocals", "--json")
    (track,) = json_lines(result.stdout)
    assert track["status"] == "done" and list(track["outputs"]) == ["vocals", "no_vocals"]
    assert [w["message"] for w in track["warnings"]] == [
        "silence.wav: the input is silent (every sample is zero), so are its stems"
    ]
    warned = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warned == [f"Warning: {track['warnings'][0]['message']}"]
    assert "1 done (1 with warnings)" in _flat(result.stderr) and "no other" not in result.stderr


def test_paths_with_markup_and_emoji_codes_are_printed_verbatim(model_file: Path, tmp_path: Path) -> None:
    """Regression (#7): Rich turned ':fire:' into an emoji on stdout and ate '[live]' in messages."""
    name = "a :fire: [live]"
    write_audio(tmp_path / f"{name}.wav", seconds=0.3)
    (tmp_path / f"{name}.mp3").write_text("not audio")
    result = invoke(f"{name}.wav", f"{name}.mp3", "-n", model_file, "--stems", "vocals")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"separated/{model_file.stem}/{name}/vocals.wav"]
    assert Path(result.stdout.strip()).is_file()
    assert f"Failed: {name}.mp3" in result.stderr
    assert f"{name}.wav" in result.stderr  # the summary table


# --- models ----------------------------------------------------------------------------------


@pytest.fixture
def registry_model(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LoopbackServer, str]]:
    payload = model_file.read_bytes()
    wf = WeightFile("0123abcd", model_file.name, "hybrid_transformer/", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(models, "MODELS", make_registry(ModelSpec("tinyreg", "A test model.", FOUR, (wf,))))
    with LoopbackServer() as server:
        server.serve(f"/hybrid_transformer/{wf.filename}", payload)
        monkeypatch.setenv("STEMSPLIT_MODEL_URL", server.url)
        yield server, f"/hybrid_transformer/{wf.filename}"


def test_registry_model_is_downloaded_once_then_used_offline(
    registry_model, song: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, route = registry_model
    offline = invoke("song.wav", "-n", "tinyreg", "--offline")
    assert offline.exit_code == 3 and "tinyreg" in offline.stderr and "offline" in offline.stderr
    assert server.hits == []

    first = invoke("song.wav", "-n", "tinyreg", "--stems", "vocals")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.split() == ["separated/tinyreg/song/vocals.wav"]
    assert [h.status for h in server.hits_for(route)] == [200]
    assert (ModelCache().folder() / route.rsplit("/", 1)[1]).is_file()

    def refuse(*args, **kwargs):
        raise OSError("test: sockets are forbidden")

    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    second = invoke("song.wav", "-n", "tinyreg", "--two-stems", "vocals")
    assert second.exit_code == 0, second.stderr
    assert second.stdout.split() == [
        "separated/tinyreg/song/vocals.wav",
        "separated/tinyreg/song/no_vocals.wav",
    ]
    assert len(server.hits) == 1


def test_segment_over_a_registry_models_window_is_refused_before_loading(
    song: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``--segment 8`` was refused only after htdemucs had been downloaded and loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not be obtained")

    monkeypatch.setattr(pipeline.batch, "load_model", refuse)
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "1")
    for extra in ((), ("--dry-run",)):
        result = invoke("song.wav", "--segment", "8", *extra)
        assert result.exit_code == 2, result.stderr
        assert "--segment 8 is longer than the model's 7.8 s window" in _flat(result.stderr)
        assert result.stdout == "" and not Path("separated").exists()
    assert invoke("song.wav", "-n", "htdemucs_6s", "--segment", "7.81", "--dry-run").exit_code == 2
    assert invoke("song.wav", "--segment", "7.8", "--dry-run").exit_code == 0  # the limit itself is fine
    # Hybrid Demucs takes any length; hdemucs_mmi's window, 44 s, is the longest --segment it accepts.
    long = invoke("song.wav", "-n", "hdemucs_mmi", "--segment", "44.5", "--dry-run")
    assert long.exit_code == 2
    assert "--segment 44.5 is longer than the model's 44 s window (hdemucs_mmi), the longest it accepts; use 44 or " \
        "less" in _flat(long.stderr)  # fmt: skip
    assert invoke("song.wav", "-n", "hdemucs_mmi", "--segment", "44", "--dry-run").exit_code == 0


def test_segment_over_a_local_models_window_is_refused_when_planned(model_file: Path, song) -> None:
    dry = invoke("song.wav", "-n", model_file, "--segment", "0.3", "--dry-run")  # the tiny model: 0.25 s
    assert dry.exit_code == 2
    assert "--segment 0.3 is longer than the model's 0.25 s window" in _flat(dry.stderr)
    assert invoke("song.wav", "-n", model_file, "--segment", "0.25", "--dry-run").exit_code == 0


def test_segment_is_still_checked_on_the_loaded_weights(registry_model, song: np.ndarray) -> None:
    """A registry entry that does not state its window: the check happens once the weights are loaded."""
    assert models.get_model_spec("tinyreg").segment is None
    assert invoke("song.wav", "-n", "tinyreg", "--segment", "0.3", "--dry-run").exit_code == 0
    result = invoke("song.wav", "-n", "tinyreg", "--segment", "0.3")
    assert result.exit_code == 2 and "--segment 0.3 is longer than the model's 0.25 s" in _flat(result.stderr)
    assert not any(Path("separated").rglob("*.wav"))


def test_unknown_model_suggests_the_closest_name(song: np.ndarray) -> None:
    result = invoke("song.wav", "-n", "htdemucs_fx")
    assert result.exit_code == 2 and "Did you mean 'htdemucs_ft'" in result.stderr
    assert result.stdout == ""
    missing = invoke("song.wav", "-n", "no/such/model.th")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "ogg"),
        ("--bit-depth", "8"),
        ("--format", "flac", "--bit-depth", "32f"),
        ("--sample-rate", "abc"),
        ("--sample-rate", "100"),
        ("--stems", ","),
        ("--two-stems", "guitar"),
        ("--stems", "bass", "--two-stems", "vocals"),
        ("--other-method", "mul"),
        ("--clip", "soft"),
        ("--precision", "float64"),
        ("--batch-size", "0"),
        ("--shifts", "-1"),
        ("--filename", "{track}/{model}.{ext}"),
        ("--no-such-option",),
    ],
)
def test_usage_errors_exit_2(model_file: Path, song: np.ndarray, args) -> None:
    result = invoke("song.wav", "-n", model_file, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and not Path("separated").exists()


def test_version_and_help() -> None:
    assert invoke("--version").stdout == f"stemsplit {__version__}\n"
    help_text = invoke("--help").stdout
    for option in ("--model", "--out", "--filename", "--two-stems", "--other-method", "--stems", "--format",
                   "--bit-depth", "--mp3-bitrate", "--sample-rate", "--clip", "--device", "--precision",
                   "--batch-size", "--jobs", "--segment", "--overlap", "--shifts", "--seed", "--overwrite",
                   "--dry-run", "--report", "--offline", "--quiet", "--verbose", "--json"):  # fmt: skip
        assert option in help_text, option


def test_jobs_help_states_the_default_the_engine_really_uses() -> None:
    """Regression: the help promised "all cores", but without --jobs the engine keeps torch's own thread
    count (one per physical core, OMP_NUM_THREADS overrides); see the engine's threads test."""
    help_text = " ".join(invoke("--help").stdout.split())
    assert "-j, --jobs N CPU threads [default: one per physical core; OMP_NUM_THREADS overrides]" in help_text
    assert "all cores" not in help_text
    assert pipeline.SeparationOptions().jobs is None  # passed on as EngineOptions(threads=None)


# --- a real subprocess -------------------------------------------------------------------------


def _stemsplit(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **TORCH_BACKEND}
    return subprocess.run(
        [sys.executable, "-m", "stemsplit", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_subprocess_batch_with_a_bad_file(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "one.wav", seconds=0.3)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    done = _stemsplit(
        "one.wav", "broken.wav", "-n", model_file, "--two-stems", "vocals", "-j", "1", cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"separated/{model_file.stem}/one/{s}.wav" for s in ("vocals", "no_vocals")
    ]
    assert "Failed: broken.wav" in done.stderr and "Traceback" not in done.stderr
    again = _stemsplit("one.wav", "-n", model_file, "--two-stems", "vocals", "-j", "1", "-q", cwd=tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (0, done.stdout, "")  # skipped: same paths


def test_subprocess_usage_error(tmp_path: Path) -> None:
    done = _stemsplit("x.wav", "--format", "ogg", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and "--format" in done.stderr
    ours = _stemsplit("x.wav", "--format", "mp3", "--sample-rate", "96000", cwd=tmp_path)
    assert ours.returncode == 2 and ours.stdout == ""
    assert ours.stderr.startswith("Error: --sample-rate 96000")
    assert len(ours.stderr.strip().splitlines()) == 1  # one line: no traceback hint for a usage error


def test_another_input_with_the_same_name_gets_its_own_folder_across_runs(model_file: Path) -> None:
    """Regression: ``stemsplit a/song.wav; stemsplit b/song.wav`` replaced a's stems with b's."""
    Path("a").mkdir()
    Path("b").mkdir()
    write_audio(Path("a/song.wav"), seconds=0.5, seed=1)
    write_audio(Path("b/song.wav"), seconds=0.7, seed=2)
    base = Path(f"separated/{model_file.stem}")
    first = run_ok(model_file, "a/song.wav")
    assert first.stdout.split() == [str(p) for p in stem_paths(base / "song")]
    a_stems = {p: p.read_bytes() for p in stem_paths(base / "song")}

    second = run_ok(model_file, "b/song.wav")
    assert "1 done, 0 skipped" in second.stderr
    assert second.stdout.splitlines() == [str(p) for p in stem_paths(base / "song (wav)")]  # in-batch suffix
    assert {p: p.read_bytes() for p in a_stems} == a_stems  # a's stems are untouched
    assert sf.info(base / "song (wav)" / "vocals.wav").frames == sf.info("b/song.wav").frames
    assert run_ok(model_file, "b/song.wav", "--dry-run").stdout.startswith("skip (complete) b/song.wav")

    # Each input finds its own stems again, whatever the order: both are complete.
    again = run_ok(model_file, "b/song.wav", "a/song.wav")
    assert "0 done, 2 skipped" in again.stderr
    # --overwrite redoes an input's own stems, still not the other's.
    redone = run_ok(model_file, "b/song.wav", "--overwrite")
    assert redone.stdout.splitlines() == [str(p) for p in stem_paths(base / "song (wav)")]
    assert {p: p.read_bytes() for p in a_stems} == a_stems
    assert sorted(p.name for p in base.iterdir()) == ["song", "song (wav)"]


def test_a_moved_input_is_still_complete(model_file: Path) -> None:
    """Moving the music folder (or renaming a file to the same track name) does not separate it again."""
    Path("old").mkdir()
    write_audio(Path("old/song.wav"), seconds=0.5, seed=1)
    run_ok(model_file, "old/song.wav")
    Path("old").rename("new")
    again = run_ok(model_file, "new/song.wav")
    assert "0 done, 1 skipped" in again.stderr
    assert sorted(p.name for p in Path(f"separated/{model_file.stem}").iterdir()) == ["song"]


def test_an_edited_input_is_redone_in_its_own_folder(model_file: Path) -> None:
    """Same path, new content (the user re-exported the file): redone in place, no new folder."""
    write_audio(Path("song.wav"), seconds=0.5, seed=1)
    first = run_ok(model_file, "song.wav")
    write_audio(Path("song.wav"), seconds=0.7, seed=2)
    edited = run_ok(model_file, str(Path("song.wav").resolve()))  # another spelling of the same path
    assert "1 done, 0 skipped" in edited.stderr
    assert edited.stdout.split() == first.stdout.split()
    assert sf.info(first.stdout.split()[0]).frames == sf.info("song.wav").frames
    assert [p.name for p in Path(f"separated/{model_file.stem}").iterdir()] == ["song"]
