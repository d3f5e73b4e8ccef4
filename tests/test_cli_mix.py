"""``stemsplit mix``: a balance of a stem folder or of a separated audio file, rendered into a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from separation_helpers import make_tiny_th, write_audio
from stemsplit.cli.app import app

runner = CliRunner()
SR = 44100


def invoke(*args: str | Path):
    return runner.invoke(app, ["mix", *(str(a) for a in args)], catch_exceptions=False)


@pytest.fixture
def stems(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    folder = tmp_path / "track"
    folder.mkdir()
    sig = {}
    for name in ("drums", "bass", "other", "vocals"):
        x = (0.2 * rng.standard_normal((SR, 2))).astype(np.float32)
        sf.write(folder / f"{name}.flac", x, SR, subtype="PCM_24")
        sig[name] = sf.read(folder / f"{name}.flac", dtype="float64")[0]
    return folder, sig


def test_the_mix_is_the_balance_of_the_stems(
    stems: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    folder, sig = stems
    out = tmp_path / "mix.wav"
    result = invoke(
        folder, "-o", out, "--mute", "bass", "--gain", "vocals=-6dB", "--bit-depth", "32f", "--clip", "none"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out}\n"
    got, rate = sf.read(out)
    assert rate == SR
    ref = sig["drums"] + sig["other"] + 10 ** (-6 / 20) * sig["vocals"]
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("ext", ["flac", "mp3"])
def test_the_format_follows_the_extension(
    stems: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, ext: str
) -> None:
    out = tmp_path / f"mix.{ext}"
    assert invoke(stems[0], "-o", out, "--tempo", "0.8", "--key", "-2").exit_code == 0
    info = sf.info(out)
    assert info.format == {"flac": "FLAC", "mp3": "MP3"}[ext]
    assert info.duration == pytest.approx(1 / 0.8, rel=0.02)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mute", "guitar"], "no stem 'guitar'"),
        (["--solo", "vocals,piano"], "no stem 'piano'"),
        (["--gain", "vocals"], "--gain vocals is not valid"),
        (["--tempo", "fast"], "--tempo fast is not valid"),
        (["--key", "13"], "--key 13 is not valid"),
        (["--start", "2"], "--start"),
        (["--bit-depth", "8"], "--bit-depth 8 is not valid"),
        (["--clip", "soft"], "--clip soft is not valid"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    stems: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, args: list[str], words: str
) -> None:
    out = tmp_path / "mix.wav"
    result = invoke(stems[0], "-o", out, *args)
    assert result.exit_code == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_paths_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, out, words in [
        (empty, "m.wav", "no stems found"),
        (tmp_path / "missing", "m.wav", "no such file or folder"),
        (empty, "m.ogg", "as .wav, .flac or .mp3"),
    ]:
        result = invoke(path, "-o", tmp_path / out)
        assert result.exit_code == 2 and words in result.stderr, result.stderr


def test_an_audio_file_is_separated_first_then_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = make_tiny_th(tmp_path / "model")
    song = tmp_path / "song.wav"
    write_audio(song, seconds=0.5)
    bad = invoke(song, "-o", "x.wav", "-n", model, "--mute", "guitar")
    assert bad.exit_code == 2 and "no stem 'guitar'" in bad.stderr and not (tmp_path / "separated").exists()
    result = invoke(
        song,
        "-o",
        "practice.wav",
        "-n",
        model,
        "--solo",
        "vocals,bass",
        "--bit-depth",
        "32f",
        "--clip",
        "none",
    )
    assert result.exit_code == 0, result.stderr
    folder = next((tmp_path / "separated").glob("*/song"))
    ref = sf.read(folder / "vocals.wav")[0] + sf.read(folder / "bass.wav")[0]
    np.testing.assert_allclose(sf.read(tmp_path / "practice.wav")[0], ref, atol=1e-6)
    stamp = (folder / "vocals.wav").stat().st_mtime_ns
    assert invoke(song, "-o", "again.wav", "-n", model).exit_code == 0
    assert (folder / "vocals.wav").stat().st_mtime_ns == stamp  # resumed: not separated again


def test_the_separation_takes_the_default_commands_device_and_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audio file PATH is separated as the default command would with the same options: a bad value is
    refused before any work, and the stems are made at the ``--precision`` given (the default command finds
    them complete at that precision, and redoes them at another)."""
    from stemsplit.cli import separate as cli_separate

    monkeypatch.chdir(tmp_path)
    model = make_tiny_th(tmp_path / "model")
    song = tmp_path / "song.wav"
    write_audio(song, seconds=0.5)
    bad = invoke(song, "-o", "x.wav", "-n", model, "--precision", "half")
    assert bad.exit_code == 2 and "half" in bad.stderr and not (tmp_path / "separated").exists()
    result = invoke(song, "-o", "mix.wav", "-n", model, "-d", "cpu", "--precision", "bfloat16", "--offline")
    assert result.exit_code == 0, result.stderr

    def status(precision: str) -> str:
        run = runner.invoke(
            cli_separate.separate_app,
            [str(song), "-n", str(model), "-d", "cpu", "--precision", precision, "--json", "--dry-run"],
            catch_exceptions=False,
        )
        assert run.exit_code == 0, run.stderr
        return run.stdout

    assert '"action": "skip (complete)"' in status("bfloat16")
    assert '"action": "separate"' in status("float32")
