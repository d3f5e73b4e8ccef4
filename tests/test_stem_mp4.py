"""NI stem files (issue #18): five tracks read back with PyAV, boxes parsed independently, atomicity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import av
import mutagen.mp4
import numpy as np
import pytest
import soundfile as sf
import soxr

from audio_fixtures import png_bytes, snr_db, sweep
from mp4_boxes import Mp4
from stemsplit.audio import (
    Picture,
    StemManifest,
    StemMp4Writer,
    TrackTags,
    TrackWriter,
    WriteOptions,
    remove_stale_temporaries,
)
from stemsplit.audio import stem_mp4 as stem_mp4_module
from stemsplit.errors import AudioWriteError, InvalidOptionError

SOURCES = ("drums", "bass", "other", "vocals")
RATE = 44100


def stems_and_mix(seconds: float = 2.0, *, level: float = 0.2, grid_bits: int | None = None, sources=SOURCES):
    """Distinct sweeps per source and their sum; with ``grid_bits``, values on the ``2**(bits-1)`` grid."""
    n = round(RATE * seconds) + 37  # not a multiple of any codec's frame size
    stems = {}
    for i, name in enumerate(sources):
        x = level * sweep(RATE, n / RATE, f0=40.0 * (i + 1), f1=4000.0 * (i + 1))[:, :n] / 0.5
        if grid_bits:
            scale = 2 ** (grid_bits - 1)
            x = np.round(x * scale / len(sources)) / scale  # small enough that sums stay exact
        stems[name] = x.astype(np.float32)
    mix = np.zeros_like(stems[sources[0]])
    for x in stems.values():
        mix += x
    return stems, mix


def write(path: Path, options: WriteOptions, stems: dict, mix: np.ndarray, *, block: int = 10_000, **kw):
    frames = mix.shape[1]
    with StemMp4Writer(path, options, sources=list(stems), samplerate=RATE, frames=frames, **kw) as w:
        for start in range(0, frames, block):
            w.write_master(mix[:, start : start + block])
            w.write_all({name: x[:, start : start + block] for name, x in stems.items()})
    assert w.report is not None
    return w.report


def decode(path: Path) -> list[np.ndarray]:
    """Every audio stream decoded on its own, as PyAV gives it (channels, frames)."""
    out = []
    with av.open(str(path)) as container:
        count = len(container.streams.audio)
    for k in range(count):
        with av.open(str(path)) as container:
            frames = [f.to_ndarray() for f in container.decode(container.streams.audio[k])]
        out.append(np.concatenate(frames, axis=1))
    return out


def durations(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [int(s.duration * s.time_base * s.rate) for s in container.streams.audio]


# --- what Traktor and Mixxx read -----------------------------------------------------------------


def test_aac_file_holds_the_master_and_four_stems_in_order(tmp_path: Path) -> None:
    stems, mix = stems_and_mix()
    out = tmp_path / "song.stem.mp4"
    report = write(out, WriteOptions(format="stem.mp4"), stems, mix)
    frames = mix.shape[1]

    with av.open(str(out)) as container:
        audio = container.streams.audio
        assert len(audio) == 5 and len(container.streams) == 5
        assert {(s.codec_context.name, s.rate, s.channels) for s in audio} == {("aac", RATE, 2)}
    assert durations(out) == [frames] * 5  # the edit lists hide the priming and the padding exactly
    decoded = decode(out)
    assert len({d.shape for d in decoded}) == 1  # equal lengths as decoded, too
    for k, reference in enumerate([mix, *stems.values()]):
        assert decoded[k].shape[1] >= frames
        assert snr_db(reference, decoded[k][:, :frames]) >= 25.0, k
    assert [s.name for s in report.stems] == ["master", *SOURCES]
    assert report.gain == 1.0 and {s.frames for s in report.stems} == {frames}


@pytest.mark.parametrize("bits", [16, 24])
def test_alac_tracks_are_bit_exact(tmp_path: Path, bits: int) -> None:
    stems, mix = stems_and_mix(grid_bits=bits)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4", stem_codec="alac", bit_depth=str(bits)), stems, mix)

    decoded = decode(out)
    scale = 2 ** (bits - 1)
    for k, reference in enumerate([mix, *stems.values()]):
        got = decoded[k] if bits == 16 else decoded[k] >> 8
        assert got.dtype == (np.int16 if bits == 16 else np.int32)
        np.testing.assert_array_equal(got, np.round(reference.astype(np.float64) * scale).astype(got.dtype))


def test_alac_stems_equal_the_16_bit_wav_stems(tmp_path: Path) -> None:
    """The same blocks through TrackWriter's 16-bit wav and through the stem file decode to equal integers."""
    stems, mix = stems_and_mix(grid_bits=16)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4", stem_codec="alac"), stems, mix)
    wavs = {name: tmp_path / f"{name}.wav" for name in SOURCES}
    with TrackWriter(wavs, WriteOptions(), samplerate=RATE, channels=2) as track:
        track.write_all(stems)
    decoded = decode(out)
    for k, name in enumerate(SOURCES, start=1):
        np.testing.assert_array_equal(decoded[k], sf.read(wavs[name], dtype="int16")[0].T)


def test_the_boxes_traktor_and_mixxx_read(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=1.0)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4"), stems, mix)

    mp4 = Mp4.read(out)
    assert mp4.order == ["ftyp", "moov", "mdat"]  # moov in front, padding dropped
    manifest = mp4.stem_manifest()
    assert manifest["version"] == 1
    assert manifest["stems"] == [
        {"name": "Drums", "color": "#009E73"},
        {"name": "Bass", "color": "#D55E00"},
        {"name": "Other", "color": "#CC79A7"},
        {"name": "Vocals", "color": "#56B4E9"},
    ]
    assert set(manifest["mastering_dsp"]["compressor"]) == {
        "enabled", "input_gain", "output_gain", "threshold", "ratio", "attack", "release", "hp_cutoff", "dry_wet"
    }  # fmt: skip
    assert set(manifest["mastering_dsp"]["limiter"]) == {"enabled", "threshold", "ceiling", "release"}
    flags = mp4.tkhd_flags()
    assert len(flags) == 5 and flags[0] & 1 and not any(f & 1 for f in flags[1:])
    assert mp4.offsets_inside_mdat()


def test_names_and_colours_can_be_chosen(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=0.5)
    out = tmp_path / "song.stem.mp4"
    manifest = StemManifest().relabel(names={"vocals": "Acapella ä"}, colors={"drums": "#ff0000"})
    write(out, WriteOptions(format="stem.mp4"), stems, mix, manifest=manifest)
    listed = Mp4.read(out).stem_manifest()["stems"]
    assert listed[0] == {"name": "Drums", "color": "#FF0000"}
    assert listed[3] == {"name": "Acapella ä", "color": "#56B4E9"}


TAGS = TrackTags(
    title="Song Ä",
    artist="The Band",
    album="Album",
    track="3/12",
    date="1997",
    pictures=(Picture(png_bytes((10, 200, 30)), "image/png"),),
)


def test_tags_and_cover_are_copied(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=0.5)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4"), stems, mix, tags=TAGS)
    tags = mutagen.mp4.MP4(out).tags
    assert tags is not None
    assert tags["\xa9nam"] == ["Song Ä"] and tags["\xa9ART"] == ["The Band"] and tags["\xa9alb"] == ["Album"]
    assert tags["trkn"] == [(3, 12)] and tags["\xa9day"] == ["1997"]
    assert bytes(tags["covr"][0]) == TAGS.pictures[0].data
    assert tags["covr"][0].imageformat == mutagen.mp4.MP4Cover.FORMAT_PNG
    assert Mp4.read(out).offsets_inside_mdat()  # the tags were written before moov was moved


def test_only_jpeg_and_png_covers_are_written(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=0.3)
    out = tmp_path / "song.stem.mp4"
    pictures = (Picture(b"GIF89a", "image/gif"), Picture(b"\xff\xd8\xff", "image/jpeg"))
    write(out, WriteOptions(format="stem.mp4"), stems, mix, tags=TrackTags(pictures=pictures))
    covers = mutagen.mp4.MP4(out).tags["covr"]
    assert [bytes(c) for c in covers] == [b"\xff\xd8\xff"]
    assert covers[0].imageformat == mutagen.mp4.MP4Cover.FORMAT_JPEG


def test_an_untitled_input_gets_the_fallback_title(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=0.3)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4"), stems, mix, tags=TrackTags(artist="X"), title_fallback="song")
    assert mutagen.mp4.MP4(out).tags["\xa9nam"] == ["song"]


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs a system ffprobe (apt-get install ffmpeg)")
@pytest.mark.parametrize("codec", ["aac", "alac"])
def test_ffprobe_sees_five_audio_streams_and_the_tags(tmp_path: Path, codec: str) -> None:
    stems, mix = stems_and_mix(seconds=0.5)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4", stem_codec=codec), stems, mix, tags=TAGS)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(probe.stdout)
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert [s["codec_name"] for s in audio] == [codec] * 5
    assert {s["channels"] for s in audio} == {2} and {s["sample_rate"] for s in audio} == {str(RATE)}
    assert len({s["duration"] for s in audio}) == 1
    assert [s["disposition"]["default"] for s in audio] == [1, 0, 0, 0, 0]
    tags = info["format"]["tags"]
    assert tags["title"] == "Song Ä" and tags["artist"] == "The Band" and tags["album"] == "Album"


# --- rates, folding, clipping --------------------------------------------------------------------


def test_stems_are_resampled_to_the_output_rate_and_the_master_is_taken_as_given(tmp_path: Path) -> None:
    stems, _ = stems_and_mix(seconds=1.0)
    frames_out = 48000  # one second at 48 kHz
    master = (0.5 * sweep(48000, 1.0, f1=5000)).astype(np.float32)
    out = tmp_path / "song.stem.mp4"
    options = WriteOptions(format="stem.mp4", stem_codec="alac")
    with StemMp4Writer(out, options, sources=SOURCES, samplerate=48000, frames=frames_out) as w:
        w.write_master(master)
        w.write_all(stems)
    assert w.samplerate == 48000
    decoded = decode(out)
    assert [d.shape for d in decoded] == [(2, frames_out)] * 5
    np.testing.assert_allclose(decoded[0] / 32768, master, atol=1 / 32768)
    expected = soxr.resample(stems["bass"].T, 44100, 48000, quality="HQ").T
    assert snr_db(expected[:, :frames_out], decoded[2] / 32768) > 60.0


def test_aac_at_a_rate_it_lacks_is_written_at_44100(tmp_path: Path) -> None:
    options = WriteOptions(format="stem.mp4")
    assert options.samplerate_for(37800) == 44100 and options.samplerate_for(96000) == 96000
    assert WriteOptions(format="stem.mp4", stem_codec="alac").samplerate_for(37800) == 37800
    stems = {name: np.zeros((2, 44100), np.float32) for name in SOURCES}
    out = tmp_path / "song.stem.mp4"
    with StemMp4Writer(out, options, sources=SOURCES, samplerate=37800, frames=37800) as w:
        w.write_master(np.zeros((2, 44100), np.float32))
        w.write_all(stems)
    assert w.samplerate == 44100 and durations(out) == [44100] * 5


def test_a_six_stem_model_is_folded_into_four_stems(tmp_path: Path) -> None:
    six = ("drums", "bass", "other", "vocals", "guitar", "piano")
    stems, mix = stems_and_mix(grid_bits=16, sources=six)
    out = tmp_path / "song.stem.mp4"
    frames = mix.shape[1]
    options = WriteOptions(format="stem.mp4", stem_codec="alac")
    with StemMp4Writer(out, options, sources=six, samplerate=RATE, frames=frames) as w:
        w.write_master(mix)
        w.write_all(stems)
    assert w.folded == ("guitar", "piano")
    decoded = decode(out)
    assert len(decoded) == 5
    other = stems["other"].astype(np.float64) + stems["guitar"] + stems["piano"]
    np.testing.assert_array_equal(decoded[3], np.round(other * 32768).astype(np.int16))
    np.testing.assert_array_equal(decoded[4], np.round(stems["vocals"] * 32768.0).astype(np.int16))


def test_rescale_applies_one_gain_to_the_master_and_every_stem(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(level=0.45)  # the mix of four -6 dBFS-ish sweeps peaks well above 1
    peak = float(np.abs(mix).max())
    assert peak > 1.0
    out = tmp_path / "song.stem.mp4"
    report = write(out, WriteOptions(format="stem.mp4", stem_codec="alac"), stems, mix)
    assert report.gain == pytest.approx(0.99 / peak)
    assert report.stems[0].peak == pytest.approx(peak)  # reported before the gain
    decoded = decode(out)
    for k, reference in enumerate([mix, *stems.values()]):
        np.testing.assert_allclose(decoded[k] / 32768, reference * report.gain, atol=1.01 / 32768)
    assert not list(tmp_path.glob(".*"))  # stages removed


def test_clamp_clamps_each_track(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(level=0.45)
    out = tmp_path / "song.stem.mp4"
    report = write(out, WriteOptions(format="stem.mp4", stem_codec="alac", clip="clamp"), stems, mix)
    assert report.gain == 1.0 and report.stems[0].clipped_samples > 0
    decoded = decode(out)
    np.testing.assert_allclose(decoded[0] / 32768, np.clip(mix, -1, 1), atol=1.01 / 32768)


def test_nan_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "song.stem.mp4"
    bad = np.full((2, 100), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        with StemMp4Writer(
            out, WriteOptions(format="stem.mp4"), sources=SOURCES, samplerate=RATE, frames=100
        ) as w:
            w.write_all(dict.fromkeys(SOURCES, bad))
    assert list(tmp_path.iterdir()) == []


# --- atomicity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_no_stem_file(tmp_path: Path, exc: type[BaseException]) -> None:
    stems, mix = stems_and_mix(seconds=1.0)
    out = tmp_path / "song.stem.mp4"
    with pytest.raises(exc):
        with StemMp4Writer(
            out, WriteOptions(format="stem.mp4"), sources=SOURCES, samplerate=RATE, frames=mix.shape[1]
        ) as w:
            w.write_master(mix[:, :20000])
            w.write_all({name: x[:, :20000] for name, x in stems.items()})
            assert not out.exists() and len(list(tmp_path.iterdir())) == 6  # the muxed file and 5 stages
            raise exc
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("step", ["rewrite", "replace"])
def test_an_interrupt_while_closing_leaves_no_stem_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    stems, mix = stems_and_mix(seconds=0.5)
    out = tmp_path / "song.stem.mp4"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if step == "rewrite":
        monkeypatch.setattr(stem_mp4_module.isobmff, "rewrite", interrupted)
    else:
        monkeypatch.setattr(stem_mp4_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(out, WriteOptions(format="stem.mp4"), stems, mix)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_stem_file_survives_an_aborted_rewrite(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=0.5)
    out = tmp_path / "song.stem.mp4"
    write(out, WriteOptions(format="stem.mp4"), stems, mix)
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with StemMp4Writer(
            out, WriteOptions(format="stem.mp4"), sources=SOURCES, samplerate=RATE, frames=10
        ) as w:
            w.write_all({name: np.zeros((2, 5), np.float32) for name in SOURCES})
            raise KeyboardInterrupt
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_killed_writer_leaves_only_temporaries_that_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "song.stem.mp4"
    w = StemMp4Writer(out, WriteOptions(format="stem.mp4"), sources=SOURCES, samplerate=RATE, frames=1000)
    w.write_all({name: np.zeros((2, 500), np.float32) for name in SOURCES})
    left = sorted(tmp_path.iterdir())  # a hard kill now would leave exactly these
    assert left and all(p.name.startswith(f".{out.name}.") for p in left)
    old = time.time() - 3600
    for p in left:
        os.utime(p, (old, old))
    assert sorted(remove_stale_temporaries([out])) == left
    w.abort()


def test_unwritable_destination_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AudioWriteError) as info:
        StemMp4Writer(
            blocker / "song.stem.mp4",
            WriteOptions(format="stem.mp4"),
            sources=SOURCES,
            samplerate=RATE,
            frames=10,
        )
    assert "song.stem.mp4" in str(info.value) and "\n" not in str(info.value)


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "option"),
    [
        ({"stem_codec": "opus"}, "--stem-codec"),
        ({"aac_bitrate": 16}, "--aac-bitrate"),
        ({"aac_bitrate": 1024}, "--aac-bitrate"),
        ({"stem_codec": "alac", "bit_depth": "32f"}, "--bit-depth"),
    ],
)
def test_bad_stem_options_are_refused(bad: dict, option: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        WriteOptions(format="stem.mp4", **bad)
    assert info.value.option == option


def test_an_explicit_rate_aac_lacks_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="AAC cannot store") as info:
        WriteOptions(format="stem.mp4").check_samplerate(37800)
    assert "--stem-codec alac" in str(info.value)
    WriteOptions(format="stem.mp4", stem_codec="alac").check_samplerate(37800)


def test_stem_files_are_not_written_by_the_per_stem_writer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="StemMp4Writer"):
        TrackWriter({"drums": tmp_path / "a"}, WriteOptions(format="stem.mp4"), samplerate=RATE, channels=2)
    with pytest.raises(ValueError, match=r"stem\.mp4"):
        StemMp4Writer(tmp_path / "a", WriteOptions(), sources=SOURCES, samplerate=RATE, frames=1)
    with pytest.raises(ValueError, match="at least one frame"):
        StemMp4Writer(
            tmp_path / "a", WriteOptions(format="stem.mp4"), sources=SOURCES, samplerate=RATE, frames=0
        )
    assert list(tmp_path.iterdir()) == []


def test_min_bytes_covers_the_five_stages(tmp_path: Path) -> None:
    stems, mix = stems_and_mix(seconds=1.0)
    frames = mix.shape[1]
    options = WriteOptions(format="stem.mp4")
    out = tmp_path / "song.stem.mp4"
    w = StemMp4Writer(out, options, sources=SOURCES, samplerate=RATE, frames=frames)
    w.write_master(mix)
    w.write_all(stems)
    staged = sum(p.stat().st_size for p in tmp_path.glob("*.stage"))
    w.abort()
    assert options.min_bytes(frames, 1, RATE) == staged  # mono inputs get stereo stem files
    assert WriteOptions(format="stem.mp4", clip="clamp").min_bytes(frames, 2, RATE) == 0
