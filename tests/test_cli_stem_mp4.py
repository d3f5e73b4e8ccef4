"""``--format stem.mp4`` end to end (issue #18): the command with a tiny model, resume, folding, usage errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from checkpoints import SIX, random_state, save_th, tiny_kwargs
from mp4_boxes import Mp4
from separation_helpers import write_audio
from stemsplit.audio import StemMp4Writer
from stemsplit.cli import separate as cli_separate
from stemsplit.weights import loading

pytestmark = pytest.mark.usefixtures("one_thread_in_tmp")

runner = CliRunner()
EXACT = ("--precision", "float32", "-d", "cpu")


@pytest.fixture(scope="module")
def six_stem_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = tiny_kwargs(sources=list(SIX))
    folder = tmp_path_factory.mktemp("six")
    path = save_th(folder / "six.tmp", kwargs, random_state(HTDemucs(config_from_kwargs(kwargs))))
    return path.rename(folder / f"5c90dfd2-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.th")


@pytest.fixture
def song(tmp_path: Path) -> np.ndarray:
    return write_audio(tmp_path / "song.wav", seconds=0.5)  # float32: read back exactly


def invoke(*args: str | Path):
    return runner.invoke(cli_separate.separate_app, [str(a) for a in args], catch_exceptions=False)


def run_ok(model: Path, *args: str | Path):
    result = invoke(*args, "-n", model)
    assert result.exit_code == 0, result.stderr
    return result


def decode(path: Path) -> list[np.ndarray]:
    tracks = []
    for k in range(5):
        with av.open(str(path)) as container:
            assert len(container.streams.audio) == 5
            frames = [f.to_ndarray() for f in container.decode(container.streams.audio[k])]
        tracks.append(np.concatenate(frames, axis=1))
    return tracks


def engine_stems(model: Path, mix: np.ndarray) -> np.ndarray:
    """The engine on the whole track in memory (an independent path from the streamed pipeline)."""
    import torch

    from stemsplit.inference import EngineOptions, separate_tensor

    bag = loading.load_model(loading.describe_model(str(model)))
    options = EngineOptions(device="cpu", precision="float32")
    return separate_tensor(bag, torch.from_numpy(mix), options=options).numpy().astype(np.float64)


def test_one_stem_file_per_track_with_the_master_and_the_engines_stems(model_file: Path, song) -> None:
    result = run_ok(model_file, "song.wav", "--format", "stem.mp4", "--stem-codec", "alac", "--json", *EXACT)
    (track,) = [json.loads(line) for line in result.stdout.splitlines()]  # JSON Lines: one per track
    out = Path("separated") / model_file.stem / "song.stem.mp4"
    assert track["outputs"] == {"stem.mp4": str(out)}
    assert sorted(p.name for p in out.parent.iterdir()) == ["song.stem.mp4", "song.stemsplit.json"]
    assert list(track["stems"]) == ["master", "drums", "bass", "other", "vocals"]
    decoded = decode(out)
    assert {d.shape for d in decoded} == {song.shape}
    gain = track["gain"]
    master = np.round(song.astype(np.float64) * gain * 32768)
    assert np.abs(decoded[0] - master).max() <= (0 if gain == 1.0 else 1)
    expected = engine_stems(model_file, song) * gain
    for k, stem in enumerate(expected, start=1):
        np.testing.assert_allclose(decoded[k] / 32768, np.clip(stem, -1, 1), atol=1.01 / 32768 + 1e-5)
    assert Mp4.read(out).stem_manifest()["version"] == 1


def test_a_plain_command_prints_the_one_path(model_file: Path, song) -> None:
    result = run_ok(model_file, "song.wav", "--format", "stem.mp4")
    out = Path("separated") / model_file.stem / "song.stem.mp4"
    assert result.stdout.splitlines() == [str(out)]
    with av.open(str(out)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"] * 5


def test_rerun_skips_a_complete_stem_file_and_a_changed_setting_redoes_it(model_file: Path, song) -> None:
    first = run_ok(model_file, "song.wav", "--format", "stem.mp4")
    out = Path(first.stdout.strip())
    stamp = out.stat().st_mtime_ns
    again = run_ok(model_file, "song.wav", "--format", "stem.mp4")
    assert again.stdout == first.stdout  # a skipped track prints its existing file
    assert "0 done, 1 skipped" in again.stderr and out.stat().st_mtime_ns == stamp
    for changed in (("--aac-bitrate", "128"), ("--stem-names", "vocals=Voice"), ("--stem-codec", "alac")):
        redone = run_ok(model_file, "song.wav", "--format", "stem.mp4", *changed)
        assert redone.stdout.split() == [str(out)] and "1 done" in redone.stderr, changed
    assert Mp4.read(out).stem_manifest()["stems"][3]["name"] == "Vocals"  # the last run's default names


def test_names_and_colours_from_the_command_line(model_file: Path, song) -> None:
    result = run_ok(
        model_file, "song.wav", "--format", "stem.mp4", "--stem-names", "vocals=Acapella,other=Keys",
        "--stem-colors", "drums=#112233",
    )  # fmt: skip
    stems = Mp4.read(Path(result.stdout.strip())).stem_manifest()["stems"]
    assert [s["name"] for s in stems] == ["Drums", "Bass", "Keys", "Acapella"]
    assert [s["color"] for s in stems] == ["#112233", "#D55E00", "#CC79A7", "#56B4E9"]


def test_a_six_stem_model_folds_guitar_and_piano_into_other_with_a_note(six_stem_file: Path, song) -> None:
    result = run_ok(
        six_stem_file, "song.wav", "--format", "stem.mp4", "--stem-codec", "alac", "--json", *EXACT
    )
    (track,) = [json.loads(line) for line in result.stdout.splitlines()]  # JSON Lines: one per track
    assert "guitar and piano are mixed into 'other'" in result.stderr
    decoded = decode(Path(track["outputs"]["stem.mp4"]))
    stems = dict(zip(SIX, engine_stems(six_stem_file, song) * track["gain"], strict=True))
    folded = stems["other"] + stems["guitar"] + stems["piano"]
    np.testing.assert_allclose(decoded[3] / 32768, np.clip(folded, -1, 1), atol=1.01 / 32768 + 1e-5)
    np.testing.assert_allclose(decoded[4] / 32768, np.clip(stems["vocals"], -1, 1), atol=1.01 / 32768 + 1e-5)
    dry = run_ok(six_stem_file, "song.wav", "--format", "stem.mp4", "--dry-run", "--overwrite")
    assert "guitar and piano are mixed into 'other'" in dry.stderr


def test_a_mono_input_gives_a_stereo_stem_file(model_file: Path, tmp_path: Path) -> None:
    mono = write_audio(tmp_path / "mono.wav", channels=1, seconds=0.3)
    result = run_ok(model_file, "mono.wav", "--format", "stem.mp4", "--stem-codec", "alac")
    decoded = decode(Path(result.stdout.strip()))
    expected = np.round(mono[0].astype(np.float64) * 32768).astype(np.int16)
    np.testing.assert_array_equal(decoded[0], np.stack([expected, expected]))


def test_an_input_at_a_rate_aac_lacks_gives_44100_with_a_warning(model_file: Path, tmp_path: Path) -> None:
    write_audio(tmp_path / "odd.wav", rate=37800, seconds=0.3)
    result = run_ok(model_file, "odd.wav", "--format", "stem.mp4")
    assert "AAC cannot store the input's 37800 Hz" in result.stderr and "--stem-codec alac" in result.stderr
    with av.open(result.stdout.strip()) as container:
        assert {s.rate for s in container.streams.audio} == {44100}
    kept = run_ok(model_file, "odd.wav", "--format", "stem.mp4", "--stem-codec", "alac", "-o", "alac")
    with av.open(kept.stdout.strip()) as container:
        assert {s.rate for s in container.streams.audio} == {37800}


def test_an_interrupted_run_leaves_no_stem_file_and_the_next_run_finishes(
    model_file: Path, song, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = StemMp4Writer.write_all

    def interrupted(writer: StemMp4Writer, blocks) -> None:
        write(writer, blocks)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(StemMp4Writer, "write_all", interrupted)
        killed = invoke("song.wav", "-n", model_file, "--format", "stem.mp4")
    assert killed.exit_code == 130
    folder = Path("separated") / model_file.stem
    assert not folder.exists() or list(folder.iterdir()) == []  # no stem file, no temporary, no sidecar
    resumed = run_ok(model_file, "song.wav", "--format", "stem.mp4")
    assert "1 done" in resumed.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["song.stem.mp4", "song.stemsplit.json"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--two-stems", "vocals"), "--two-stems cannot be used with --format stem.mp4"),
        (("--stems", "vocals"), "--stems cannot be used with --format stem.mp4"),
        (("--filename", "{model}/{track}/{stem}.{ext}"), "has no {stem}"),
        (("--stem-colors", "vocals=red"), "#RRGGBB"),
        (("--stem-names", "voice=A"), "'voice' is not a stem"),
        (("--stem-codec", "alac", "--bit-depth", "32f"), "ALAC cannot store 32-bit float"),
        (("--sample-rate", "37800"), "AAC cannot store it"),
        (("--aac-bitrate", "8"), "--aac-bitrate"),
    ],
)
def test_usage_errors_exit_2_and_say_why(model_file: Path, song, args, words: str) -> None:
    result = invoke("song.wav", "-n", model_file, "--format", "stem.mp4", *args)
    assert result.exit_code == 2, result.stderr
    assert words in " ".join(result.stderr.split()) and result.stdout == ""
    assert not Path("separated").exists()


def test_stem_names_without_a_stem_file_are_a_usage_error(model_file: Path, song) -> None:
    result = invoke("song.wav", "-n", model_file, "--stem-names", "vocals=A")
    assert result.exit_code == 2 and "add --format stem.mp4" in " ".join(result.stderr.split())


def test_a_model_without_the_four_stems_is_refused_before_any_work(tmp_path: Path, song) -> None:
    from stemsplit.model import HTDemucs
    from stemsplit.weights.checkpoint import config_from_kwargs

    kwargs = tiny_kwargs(sources=["vocals", "accompaniment"])
    path = save_th(tmp_path / "two.th", kwargs, random_state(HTDemucs(config_from_kwargs(kwargs))))
    result = invoke("song.wav", "-n", path, "--format", "stem.mp4")
    assert result.exit_code == 2 and "needs a model with drums, bass, vocals" in " ".join(
        result.stderr.split()
    )
    assert not Path("separated").exists()


def test_the_wav_stems_of_the_same_run_are_unchanged(model_file: Path, song) -> None:
    """The stem file's stems equal the per-stem WAV writer's for the same run (ALAC against 16-bit WAV)."""
    clamp = ("--clip", "clamp", *EXACT)  # each stem on its own, whatever the master's peak
    wav = run_ok(model_file, "song.wav", "-o", "wav", *clamp)
    stem = run_ok(model_file, "song.wav", "-o", "mp4", "--format", "stem.mp4", "--stem-codec", "alac", *clamp)
    decoded = decode(Path(stem.stdout.strip()))
    for k, path in enumerate(wav.stdout.split(), start=1):
        reference = sf.read(path, dtype="int16")[0].T.astype(np.int32)
        assert np.abs(decoded[k].astype(np.int32) - reference).max() <= 1  # libsndfile floors, we round


def test_stem_file_settings_are_recorded_only_for_stem_files() -> None:
    from stemsplit.pipeline import SeparationOptions

    plain = SeparationOptions(format="flac").output_settings()
    assert not {"stem_codec", "aac_bitrate", "stem_names", "stem_colors"} & set(plain)  # old sidecars hold
    alac = SeparationOptions(format="stem.mp4", stem_codec="alac", bit_depth="24").output_settings()
    assert (alac["stem_codec"], alac["aac_bitrate"], alac["bit_depth"]) == ("alac", None, "24")
    aac = SeparationOptions(format="stem.mp4", stem_colors={"bass": "#000000"}).output_settings()
    assert (aac["aac_bitrate"], aac["bit_depth"]) == (256, None)
    assert aac["stem_colors"] == ["#009E73", "#000000", "#CC79A7", "#56B4E9"]
    assert SeparationOptions(format="stem.mp4").template == "{model}/{track}.{ext}"
    assert SeparationOptions().template == "{model}/{track}/{stem}.{ext}"


def test_the_library_writes_stem_files_too(model_file: Path, song) -> None:
    from stemsplit import Separator

    separator = Separator(model=str(model_file), device="cpu")
    paths = separator.separate_file("song.wav", out_dir="lib", format="stem.mp4")
    assert paths == {"stem.mp4": Path("lib") / model_file.stem / "song.stem.mp4"}
    assert len(decode(paths["stem.mp4"])) == 5
