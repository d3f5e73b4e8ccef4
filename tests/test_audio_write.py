"""Stem writing (issue #5): formats, rates, channels, clip modes, statistics, atomicity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import bandlimited_noise, snr_db, sweep
from stemsplit.audio import (
    StemWriter,
    TrackWriter,
    WriteOptions,
    convert,
    read_audio,
)
from stemsplit.errors import AudioWriteError, InvalidOptionError

STEMS = ("drums", "bass", "other", "vocals")


def feed(writer: TrackWriter, stems: dict[str, np.ndarray], block: int = 10_000) -> None:
    """Stream every stem in blocks of ``block`` frames, interleaved like the engine does."""
    n = next(iter(stems.values())).shape[1]
    for start in range(0, n, block):
        writer.write_all({name: audio[:, start : start + block] for name, audio in stems.items()})


def read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float64", always_2d=True)[0].T


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "depth", "subtype", "tolerance"),
    [
        ("wav", "16", "PCM_16", 2.0 / 32768),
        ("wav", "24", "PCM_24", 2.0 / 2**23),
        ("wav", "32f", "FLOAT", 0.0),
        ("flac", "16", "PCM_16", 2.0 / 32768),
        ("flac", "24", "PCM_24", 2.0 / 2**23),
    ],
)
def test_lossless_round_trip(tmp_path: Path, fmt: str, depth: str, subtype: str, tolerance: float) -> None:
    audio = sweep(44100, 1.0)
    out = tmp_path / f"drums.{fmt}"
    with TrackWriter(
        {"drums": out}, WriteOptions(format=fmt, bit_depth=depth), samplerate=44100, channels=2
    ) as w:
        feed(w, {"drums": audio}, block=7_777)
    info = sf.info(out)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (fmt.upper(), subtype, 44100, 2)
    got = read(out)
    assert got.shape == audio.shape
    assert np.max(np.abs(got - audio)) <= tolerance


@pytest.mark.parametrize("kbps", [128, 320])
def test_mp3_round_trip_and_bitrate(tmp_path: Path, kbps: int) -> None:
    seconds = 3.0
    audio = sweep(44100, seconds, f1=10_000)
    out = tmp_path / "vocals.mp3"
    options = WriteOptions(format="mp3", mp3_bitrate=kbps)
    with TrackWriter({"vocals": out}, options, samplerate=44100, channels=2) as w:
        feed(w, {"vocals": audio})
    assert sf.info(out).format == "MP3"
    got = read(out)
    assert got.shape == audio.shape  # the LAME tag makes the length exact
    assert snr_db(audio, got) > 20.0
    measured_kbps = out.stat().st_size * 8 / seconds / 1000
    assert measured_kbps == pytest.approx(kbps, rel=0.1)


def test_mp3_at_a_rate_mpeg_lacks_falls_back_to_44100(tmp_path: Path) -> None:
    out = tmp_path / "a.mp3"
    with TrackWriter({"a": out}, WriteOptions(format="mp3"), samplerate=96000, channels=2, frames=96000) as w:
        w.write("a", np.zeros((2, 44100), np.float32))
    assert sf.info(out).samplerate == 44100
    assert w.report is not None and w.report.stems[0].frames == 44100


def test_an_explicit_rate_mp3_lacks_is_refused_naming_the_rates_it_has() -> None:
    with pytest.raises(InvalidOptionError) as info:
        WriteOptions(format="mp3").check_samplerate(96000)
    assert info.value.option == "--sample-rate"
    assert "96000" in str(info.value) and "32000, 44100, 48000" in str(info.value)
    for rate in (8000, 22050, 32000, 44100, 48000):
        WriteOptions(format="mp3").check_samplerate(rate)  # MPEG-1 and the lower MPEG-2/2.5 rates
    for fmt in ("wav", "flac"):
        WriteOptions(format=fmt).check_samplerate(96000)  # any rate


def test_flac_float_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="flac") as info:
        WriteOptions(format="flac", bit_depth="32f")
    assert info.value.option == "--bit-depth"


@pytest.mark.parametrize("bad", [{"mp3_bitrate": 500}, {"clip": "tanh"}, {"format": "ogg"}])
def test_bad_options_are_refused(bad: dict) -> None:
    with pytest.raises(InvalidOptionError):
        WriteOptions(**bad)


# --- rates and channels ------------------------------------------------------------------------


def test_back_to_input_rate_with_exact_length(tmp_path: Path) -> None:
    """A 48 kHz input: model blocks at 44.1 kHz come back at 48 kHz with the input's exact length."""
    n = 48000 + 77
    original = bandlimited_noise(48000, n / 48000, cutoff_hz=18000, fade_s=0.02)
    model = convert(original, 48000, 44100)
    out = tmp_path / "bass.wav"
    options = WriteOptions(bit_depth="32f", clip="none")
    with TrackWriter({"bass": out}, options, samplerate=48000, channels=2, frames=n) as w:
        feed(w, {"bass": model}, block=4096)
    got = read(out)
    assert sf.info(out).samplerate == 48000
    assert got.shape == (2, n)
    assert snr_db(original, got) >= 60.0


def test_mono_input_gives_mono_stems(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = (0.3 * rng.standard_normal((2, 20_000))).astype(np.float32)
    out = tmp_path / "other.wav"
    with TrackWriter({"other": out}, WriteOptions(bit_depth="32f"), samplerate=44100, channels=1) as w:
        feed(w, {"other": model})
    assert sf.info(out).channels == 1
    got = read(out)
    np.testing.assert_allclose(got[0], (model[0].astype(np.float64) + model[1]) / 2, atol=1e-7)


def test_stems_that_round_trip_the_reader(tmp_path: Path) -> None:
    """Reader → writer at the same rate: identity stems reproduce a 24-bit flac input bit for bit."""
    src = tmp_path / "in.flac"
    sf.write(src, sweep(44100, 1.0).T, 44100, subtype="PCM_24")
    audio, info = read_audio(src)
    out = tmp_path / "x.flac"
    options = WriteOptions(format="flac", bit_depth="24")
    with TrackWriter({"x": out}, options, samplerate=info.samplerate, channels=2, frames=info.frames) as w:
        feed(w, {"x": audio})
    np.testing.assert_array_equal(read(out), read(src))


# --- clipping ----------------------------------------------------------------------------------


def _stems(peak_of_loudest: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    stems = {
        name: (0.2 * rng.standard_normal((2, 30_000))).clip(-0.6, 0.6).astype(np.float32) for name in STEMS
    }
    stems["drums"] = stems["drums"] / np.abs(stems["drums"]).max() * peak_of_loudest
    return stems


def _write(tmp_path: Path, stems: dict[str, np.ndarray], **options) -> tuple[TrackWriter, dict[str, Path]]:
    paths = {name: tmp_path / f"{name}.wav" for name in stems}
    with TrackWriter(paths, WriteOptions(**options), samplerate=44100, channels=2) as writer:
        feed(writer, stems)
    return writer, paths


def test_rescale_applies_one_shared_gain_so_stems_still_sum(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=1.6)
    writer, paths = _write(tmp_path, stems, bit_depth="32f", clip="rescale")
    report = writer.report
    assert report is not None
    assert report.gain == pytest.approx(0.99 / 1.6, rel=1e-6)
    got = {name: read(path) for name, path in paths.items()}
    for name in STEMS:
        np.testing.assert_allclose(got[name], stems[name] * report.gain, atol=1e-6)
    mix = sum(stems.values())
    np.testing.assert_allclose(sum(got.values()), mix * report.gain, atol=1e-5)
    assert max(np.abs(g).max() for g in got.values()) <= 0.99 + 1e-6
    assert all(s.clipped_samples == 0 for s in report.stems)
    assert report.gain_db == pytest.approx(20 * np.log10(0.99 / 1.6))
    assert leftovers(tmp_path) == sorted(f"{n}.wav" for n in STEMS)  # stages removed


def test_rescale_leaves_stems_alone_when_nothing_clips(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=0.9)
    writer, paths = _write(tmp_path, stems, bit_depth="32f")
    assert writer.report is not None and writer.report.gain == 1.0
    for name in STEMS:
        np.testing.assert_array_equal(read(paths[name]), stems[name])


def test_rescale_re_encodes_pcm_from_the_stage(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=2.0)
    writer, paths = _write(tmp_path, stems, bit_depth="16", clip="rescale")
    assert writer.report is not None
    got = read(paths["drums"])
    np.testing.assert_allclose(got, stems["drums"] * writer.report.gain, atol=2 / 32768)


def test_clamp(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=1.5)
    writer, paths = _write(tmp_path, stems, bit_depth="32f", clip="clamp")
    assert writer.report is not None and writer.report.gain == 1.0
    np.testing.assert_array_equal(read(paths["drums"]), np.clip(stems["drums"], -1, 1))
    expected_clipped = int(np.count_nonzero(np.abs(stems["drums"]) > 1.0))
    assert expected_clipped > 0
    assert writer.report.stems[0].clipped_samples == expected_clipped


def test_none_keeps_float_values_above_full_scale(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=1.5)
    writer, paths = _write(tmp_path, stems, bit_depth="32f", clip="none")
    got = read(paths["drums"])
    assert np.abs(got).max() == pytest.approx(1.5, rel=1e-6)
    np.testing.assert_array_equal(got, stems["drums"])
    assert writer.report is not None
    assert writer.report.stems[0].clipped_samples == np.count_nonzero(np.abs(stems["drums"]) > 1.0)


def test_none_with_pcm_clamps(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=1.5)
    _, paths = _write(tmp_path, stems, bit_depth="16", clip="none")
    got = read(paths["drums"])
    assert np.abs(got).max() <= 1.0
    np.testing.assert_allclose(got, np.clip(stems["drums"], -1, 1), atol=2 / 32768)


def test_peak_and_rms_are_reported(tmp_path: Path) -> None:
    stems = _stems(peak_of_loudest=0.8)
    writer, _ = _write(tmp_path, stems, bit_depth="24")
    assert writer.report is not None
    by_name = {s.name: s for s in writer.report.stems}
    for name, audio in stems.items():
        x = audio.astype(np.float64)
        assert by_name[name].peak == pytest.approx(np.abs(x).max(), rel=1e-6)
        assert by_name[name].rms == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-6)
        assert by_name[name].frames == audio.shape[1]
    assert [s.name for s in writer.report.stems] == list(STEMS)


def test_silent_stems_have_no_nan(tmp_path: Path) -> None:
    stems = {name: np.zeros((2, 5000), np.float32) for name in STEMS}
    writer, paths = _write(tmp_path, stems, bit_depth="16")
    assert writer.report is not None and writer.report.gain == 1.0
    for stat in writer.report.stems:
        assert (stat.peak, stat.rms) == (0.0, 0.0)
        assert stat.peak_dbfs == -np.inf
    assert not np.any(read(paths["vocals"]))


def test_nan_block_is_refused(tmp_path: Path) -> None:
    block = np.zeros((2, 100), np.float32)
    block[0, 5] = np.nan
    with (
        pytest.raises(ValueError, match="NaN"),
        TrackWriter({"a": tmp_path / "a.wav"}, samplerate=44100, channels=2) as w,
    ):
        w.write("a", block)
    assert leftovers(tmp_path) == []


# --- atomicity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["rescale", "clamp"])
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_file(tmp_path: Path, clip: str, exc: type[BaseException]) -> None:
    out = tmp_path / "separated" / "song"
    paths = {name: out / f"{name}.flac" for name in STEMS}
    audio = sweep(44100, 0.5)
    with (
        pytest.raises(exc),
        TrackWriter(paths, WriteOptions(format="flac", clip=clip), samplerate=44100, channels=2) as w,
    ):
        w.write_all(dict.fromkeys(STEMS, audio[:, :10_000]))
        assert len(leftovers(out)) == 4 * (2 if clip == "rescale" else 1)  # temp files exist meanwhile
        raise exc("interrupted mid-stream")
    assert leftovers(out) == []


def test_existing_stem_survives_an_aborted_rewrite(tmp_path: Path) -> None:
    final = tmp_path / "vocals.wav"
    final.write_bytes(b"previous run")
    with pytest.raises(RuntimeError), TrackWriter({"vocals": final}, samplerate=44100, channels=2) as w:
        w.write("vocals", np.zeros((2, 1000), np.float32))
        raise RuntimeError("boom")
    assert final.read_bytes() == b"previous run"
    assert leftovers(tmp_path) == ["vocals.wav"]


def test_no_final_name_before_close(tmp_path: Path) -> None:
    paths = {name: tmp_path / f"{name}.wav" for name in STEMS}
    writer = TrackWriter(paths, WriteOptions(clip="clamp"), samplerate=44100, channels=2)
    writer.write_all(dict.fromkeys(STEMS, np.zeros((2, 1000), np.float32)))
    assert not any(p.exists() for p in paths.values())
    assert all(name.startswith(".") and name.endswith(".partial") for name in leftovers(tmp_path))
    writer.close()
    assert all(p.exists() for p in paths.values())
    assert leftovers(tmp_path) == sorted(p.name for p in paths.values())


def test_unwritable_destination_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker / "drums.wav"
    with pytest.raises(AudioWriteError) as info:
        StemWriter("drums", target, WriteOptions(), samplerate=44100, channels=2)
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert blocker.read_text() == "not a folder"


def test_stale_temporaries_of_a_killed_run_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import os
    import time

    from stemsplit.audio import remove_stale_temporaries

    final = tmp_path / "vocals.wav"
    stale = [tmp_path / ".vocals.wav.0123abcd.partial", tmp_path / ".vocals.wav.0123abcd.stage"]
    live = tmp_path / ".vocals.wav.fedc9876.partial"
    other = tmp_path / ".drums.wav.0123abcd.partial"  # another stem's: not asked about
    for path in (*stale, live, other):
        path.write_bytes(b"x")
    old = time.time() - 3600
    for path in (*stale, other):
        os.utime(path, (old, old))
    assert sorted(remove_stale_temporaries([final])) == sorted(stale)
    assert live.exists() and other.exists() and not any(p.exists() for p in stale)


def test_fresh_temporaries_of_a_dead_run_are_removed_and_a_live_runs_kept(tmp_path: Path) -> None:
    """#27: a resume right after a kill finds the dead run's temporaries fresh; their token names the dead
    process, so they go whatever their age, while a live process's stay."""
    import subprocess
    import sys

    from stemsplit.audio import remove_stale_temporaries
    from stemsplit.audio.writer import temp_token

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = temp_token().split("-")[1]
        final = tmp_path / "vocals.wav"
        gone = [
            tmp_path / f".vocals.wav.{int(dead.stdout):x}-{host}-abcdef.{s}" for s in ("partial", "stage")
        ]
        gone.append(tmp_path / f".vocals.wav.{int(dead.stdout):x}-{host}-abcdef.mux.partial")
        kept = [
            tmp_path / f".vocals.wav.{live.pid:x}-{host}-abcdef.partial",  # a live run's
            tmp_path / f".vocals.wav.{temp_token()}.partial",  # this process's own
            tmp_path / f".vocals.wav.{int(dead.stdout):x}-{'0000' if host != '0000' else '0001'}-ab.partial",
        ]  # the last: another host's, where a process id says nothing
        for path in (*gone, *kept):
            path.write_bytes(b"x")
        assert sorted(remove_stale_temporaries([final])) == sorted(gone)
        assert all(p.exists() for p in kept)
    finally:
        live.kill()
        live.wait()


# --- disk space ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "samplerate"),
    [
        (WriteOptions(), 44100),
        (WriteOptions(bit_depth="24", clip="clamp"), 48000),
        (WriteOptions(format="mp3", mp3_bitrate=128), 44100),
        (WriteOptions(format="mp3", clip="clamp"), 22050),  # MPEG-2: 320 kbit/s asked, 160 possible
        (WriteOptions(format="mp3", clip="clamp"), 8000),  # MPEG-2.5: at most 64 kbit/s
        (WriteOptions(format="flac"), 44100),
    ],
)
def test_min_bytes_is_a_lower_bound_of_what_a_stem_really_takes(
    tmp_path: Path, options: WriteOptions, samplerate: int
) -> None:
    """Measured on real files: the encoded file plus the float32 stage (rescale) at their largest."""
    signal = sweep(samplerate, 3.0)  # (2, frames), -6 dBFS
    frames = signal.shape[1]
    writer = StemWriter(
        "drums",
        tmp_path / f"drums.{options.extension}",
        options,
        samplerate=samplerate,
        channels=2,
        frames=frames,
        samplerate_in=samplerate,
    )
    writer.write(signal)
    writer.end_stream()
    staged = writer.stage_path.stat().st_size if writer.stage_path.exists() else 0
    writer.finish()
    writer.publish()
    used = staged + writer.path.stat().st_size
    bound = options.min_bytes(frames, 2, samplerate)
    assert bound <= used
    if options.format == "wav":  # exact but for the header
        assert used - bound < 200


def test_a_track_that_cannot_fit_on_the_disk_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    frames = 10 * 44100  # per stem: 1,764,000 bytes of 16-bit wav + 3,528,000 of float32 stage
    free = {"bytes": 4 * 5_292_000 - 1}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, free["bytes"]))
    paths = {name: tmp_path / "out" / "song" / f"{name}.wav" for name in STEMS}

    with pytest.raises(AudioWriteError) as info:
        TrackWriter(paths, WriteOptions(), samplerate=44100, channels=2, frames=frames)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: not enough free disk space") and "21 MB needed" in message
    assert "-o" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the folder

    free["bytes"] = 4 * 5_292_000
    TrackWriter(paths, WriteOptions(), samplerate=44100, channels=2, frames=frames).abort()
    TrackWriter(paths, WriteOptions(), samplerate=44100, channels=2).abort()  # length unknown: no check
