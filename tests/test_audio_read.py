"""Probing and streaming reads (issue #5): formats, conversion, determinism, bad inputs."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import mutagen.mp4
import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_fixtures import (
    bandlimited_noise,
    png_bytes,
    snr_db,
    sweep,
    write_pyav,
    write_video_only,
)
from stemsplit.audio import (
    AudioReader,
    check_supported,
    convert,
    downmix_matrix,
    output_frames,
    probe,
    read_audio,
)
from stemsplit.audio.convert import Reblocker, StreamResampler
from stemsplit.errors import (
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    DownmixWarning,
    TruncatedAudioWarning,
    UnsupportedAudioError,
)


def exact_frames(n: int, rate_in: int, rate_out: int) -> int:
    """Round half up of n·out/in, computed with exact fractions (independent of output_frames)."""
    value = Fraction(n * rate_out, rate_in)
    return int(value + Fraction(1, 2)) if value.denominator != 1 else int(value)


# --- probe -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subtype", "codec", "container", "bits"),
    [
        ("a.wav", "PCM_16", "pcm_s16", "wav", 16),
        ("a.wav", "PCM_24", "pcm_s24", "wav", 24),
        ("a.wav", "FLOAT", "pcm_f32", "wav", 32),
        ("a.flac", "PCM_24", "flac", "flac", 24),
        ("a.aiff", "PCM_16", "pcm_s16", "aiff", 16),
        ("a.ogg", "VORBIS", "vorbis", "ogg", None),
        ("a.mp3", "MPEG_LAYER_III", "mp3", "mp3", None),
    ],
)
def test_probe_libsndfile_formats(tmp_path: Path, name, subtype, codec, container, bits) -> None:
    path = tmp_path / name
    audio = sweep(32000, 1.25, channels=2)
    sf.write(path, audio.T, 32000, subtype=subtype)
    info = probe(path)
    assert (info.samplerate, info.channels) == (32000, 2)
    backend = "pyav" if codec == "mp3" else "soundfile"  # MPEG audio never reaches libmpg123 (#27)
    assert (info.codec, info.container, info.bit_depth, info.backend) == (codec, container, bits, backend)
    if container in ("wav", "flac", "aiff", "mp3"):
        assert info.frames == 40000
        assert info.duration_s == pytest.approx(1.25)


def test_probe_m4a_uses_pyav(tmp_path: Path) -> None:
    path = tmp_path / "a.m4a"
    write_pyav(path, sweep(48000, 1.0), 48000, "aac")
    info = probe(path)
    assert info.backend == "pyav"
    assert (info.codec, info.samplerate, info.channels, info.bit_depth) == ("aac", 48000, 2, None)
    assert "mp4" in info.container
    assert info.duration_s == pytest.approx(1.0, abs=0.05)


def test_probe_does_not_decode(tmp_path: Path) -> None:
    """A wav whose samples are garbage still probes: only the header is read."""
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros((1000, 1), np.float32), 22050, subtype="PCM_16")
    info = probe(path)
    assert info.frames == 1000
    assert info.samplerate == 22050


# --- decoding and conversion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "subtype"),
    [("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("flac", "PCM_16"), ("flac", "PCM_24")],
)
def test_read_native_rate_is_lossless(tmp_path: Path, ext: str, subtype: str) -> None:
    path = tmp_path / f"a.{ext}"
    audio = sweep(44100, 0.5)
    sf.write(path, audio.T, 44100, subtype=subtype)
    expected = sf.read(path, dtype="float32", always_2d=True)[0].T
    got, info = read_audio(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert info.frames == audio.shape[1]


def test_blocks_are_deterministic_and_join_to_one_shot(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    n = 48000 * 2 + 123
    audio = bandlimited_noise(48000, n / 48000)
    sf.write(path, audio.T, 48000, subtype="PCM_24")
    reader = AudioReader(path, block_frames=10_000)
    first = list(reader)
    second = list(reader)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(b.shape == (2, 10_000) for b in first[:-1])
    assert 0 < first[-1].shape[1] <= 10_000
    joined = np.concatenate(first, axis=1)
    decoded = sf.read(path, dtype="float32", always_2d=True)[0].T
    np.testing.assert_array_equal(joined, convert(decoded, 48000, 44100))
    assert joined.shape[1] == exact_frames(n, 48000, 44100)
    assert (reader.frames_in, reader.frames_out) == (n, joined.shape[1])
    # soxr's own one-shot resampler agrees up to its length rule
    reference = soxr.resample(decoded.T, 48000, 44100, quality="HQ").T
    m = min(reference.shape[1], joined.shape[1])
    np.testing.assert_allclose(joined[:, :m], reference[:, :m], atol=1e-6)


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(48000, 44100), (22050, 44100), (8000, 44100), (44100, 48000)]
)
@pytest.mark.parametrize("n", [1, 999, 44101])
def test_output_frames_rule(rate_in: int, rate_out: int, n: int) -> None:
    assert output_frames(n, rate_in, rate_out) == exact_frames(n, rate_in, rate_out)
    x = np.ones((1, n), np.float32)
    assert convert(x, rate_in, rate_out).shape == (1, exact_frames(n, rate_in, rate_out))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=2500),
    st.sampled_from([(48000, 44100), (44100, 44100), (32000, 44100), (44100, 22050)]),
)
def test_streaming_is_chunking_invariant(chunks: list[int], block: int, rates: tuple[int, int]) -> None:
    rng = np.random.default_rng(len(chunks))
    total = sum(chunks)
    x = rng.standard_normal((total, 2)).astype(np.float32)
    rs = StreamResampler(*rates, channels=2)
    blocker = Reblocker(2, block)
    out, pos = [], 0
    for size in chunks:
        out += blocker.push(rs.process(x[pos : pos + size]))
        pos += size
    out += blocker.push(rs.flush())
    out.append(blocker.remainder())
    assert all(b.shape == (2, block) for b in out[:-1])
    joined = np.concatenate(out, axis=1)
    np.testing.assert_array_equal(joined, convert(x.T, *rates))


def test_resample_round_trip_keeps_60_db(tmp_path: Path) -> None:
    """48 kHz → 44.1 kHz (reader) → 48 kHz (convert back) keeps band-limited content at ≥ 60 dB SNR."""
    path = tmp_path / "a.wav"
    audio = bandlimited_noise(48000, 2.0, cutoff_hz=18000, fade_s=0.02)
    sf.write(path, audio.T, 48000, subtype="FLOAT")
    model, _ = read_audio(path)
    back = convert(model, 44100, 48000)
    assert back.shape == audio.shape
    assert snr_db(audio, back) >= 60.0


def test_mono_is_duplicated_for_the_model(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    audio = sweep(44100, 0.5, channels=1)
    sf.write(path, audio.T, 44100, subtype="FLOAT")
    got, info = read_audio(path)
    assert info.channels == 1
    assert got.shape == (2, audio.shape[1])
    np.testing.assert_array_equal(got[0], audio[0])
    np.testing.assert_array_equal(got[1], audio[0])
    native, _ = read_audio(path, channels=None)
    assert native.shape == (1, audio.shape[1])


def test_six_channels_are_downmixed_with_itu_coefficients(tmp_path: Path) -> None:
    path = tmp_path / "surround.wav"
    n = 4410
    t = np.arange(n) / 44100
    audio = np.stack([0.1 * np.sin(2 * np.pi * (200 + 100 * c) * t) for c in range(6)]).astype(np.float32)
    sf.write(path, audio.T, 44100, subtype="FLOAT")
    with pytest.warns(DownmixWarning, match="6 channels"):
        got, _ = read_audio(path)
    L, R, C, _lfe, Ls, Rs = audio.astype(np.float64)
    g = np.sqrt(0.5)
    expected = np.stack([L + g * C + g * Ls, R + g * C + g * Rs])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert downmix_matrix(6).shape == (2, 6)


def test_m4a_aac_is_read_through_pyav(tmp_path: Path) -> None:
    path = tmp_path / "a.m4a"
    audio = sweep(44100, 2.0, f1=8000)
    write_pyav(path, audio, 44100, "aac", bit_rate=192_000)
    got, info = read_audio(path)
    assert info.backend == "pyav"
    assert got.shape == audio.shape  # the mp4 edit list trims priming and padding exactly
    assert snr_db(audio, got) > 15.0  # lossy, but aligned sample for sample


def test_m4a_alac_is_lossless_through_pyav(tmp_path: Path) -> None:
    path = tmp_path / "a.m4a"
    audio = sweep(48000, 1.0)
    write_pyav(path, audio, 48000, "alac")
    got, info = read_audio(path, samplerate=None)
    assert (info.codec, info.backend) == ("alac", "pyav")
    expected = np.round(audio.astype(np.float64) * 32767) / 32768  # the 16-bit values the test encoded
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_webm_opus_is_read_through_pyav(tmp_path: Path) -> None:
    path = tmp_path / "a.webm"
    audio = sweep(48000, 1.0, f1=6000)
    write_pyav(path, audio, 48000, "libopus", bit_rate=128_000)
    got, info = read_audio(path, samplerate=None)
    assert (info.codec, info.backend) == ("opus", "pyav")
    assert abs(got.shape[1] - audio.shape[1]) <= 960  # opus pre-skip/padding: within one frame


def test_tags_that_are_not_utf8_do_not_stop_a_pyav_read(tmp_path: Path) -> None:
    # PyAV before 19 raises UnicodeDecodeError on such a tag unless av.open is told to ignore it; PyAV 19
    # removed that argument (passing it is a TypeError). Either way the audio is read.
    path = tmp_path / "latin1-title.m4a"
    audio = sweep(44100, 0.5, f1=8000)
    write_pyav(path, audio, 44100, "aac")
    tags = mutagen.mp4.MP4(path)
    tags["\xa9nam"] = ["Cafe!"]
    tags.save()
    data = path.read_bytes()
    assert data.count(b"Cafe!") == 1
    path.write_bytes(data.replace(b"Cafe!", b"Caf\xe9!"))  # same length: no box size changes
    got, info = read_audio(path)
    assert info.backend == "pyav"
    assert got.shape == audio.shape


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_speech_from_espeak_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "stemsplit reads audio"], check=True, timeout=30)
    original = sf.read(path, dtype="float32", always_2d=True)[0].T
    rate = sf.info(path).samplerate
    got, _ = read_audio(path)
    back = convert(got, 44100, rate, channels=1)
    assert back.shape == original.shape
    assert snr_db(original, back) > 40.0


def test_silent_file_reads_as_zeros(tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros((48000, 2), np.float32), 48000, subtype="PCM_16")
    got, _ = read_audio(path)
    assert got.shape == (2, 44100)
    assert np.all(np.isfinite(got))
    assert not np.any(got)


def test_very_short_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    audio = sweep(48000, 0.05)
    sf.write(path, audio.T, 48000, subtype="FLOAT")
    got, info = read_audio(path)
    assert info.duration_s is not None and info.duration_s < 0.1
    assert got.shape == (2, exact_frames(2400, 48000, 44100))


# --- bad inputs ---------------------------------------------------------------------------------


def _one_line_naming(err: AudioError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message
    assert str(path) in message
    assert err.path == path


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioFileNotFoundError) as info:
        probe(path)
    _one_line_naming(info.value, path)
    assert isinstance(info.value, FileNotFoundError)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioFileNotFoundError, match="folder") as info:
        AudioReader(tmp_path)
    _one_line_naming(info.value, tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty") as info:
        probe(path)
    _one_line_naming(info.value, path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("noise.mp3", np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes()),
        ("header_only.wav", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00"),
    ],
)
def test_corrupt_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as info:
        list(AudioReader(path))
    _one_line_naming(info.value, path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("notes.txt", b"this is a text file, not audio\n" * 40), ("cover.png", png_bytes(size=8))],
)
def test_not_audio(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=r"no audio stream|cannot be read as audio") as info:
        probe(path)
    _one_line_naming(info.value, path)


def test_video_without_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video_only(path)
    with pytest.raises(AudioDecodeError, match="no audio stream") as info:
        probe(path)
    _one_line_naming(info.value, path)


def test_sample_rate_below_8k(tmp_path: Path) -> None:
    path = tmp_path / "phone.wav"
    sf.write(path, np.zeros((4000, 1), np.float32), 4000)
    assert probe(path).samplerate == 4000  # probing describes it; reading refuses it
    with pytest.raises(UnsupportedAudioError, match="8000 Hz") as info:
        AudioReader(path)
    _one_line_naming(info.value, path)
    with pytest.raises(UnsupportedAudioError):
        check_supported(probe(path))


def test_wav_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(AudioError, match="no audio samples") as info:
        list(AudioReader(path))
    _one_line_naming(info.value, path)


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_truncated_file_decodes_what_is_there_and_warns(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"cut.{ext}"
    audio = bandlimited_noise(44100, 4.0, seed=5)
    sf.write(path, audio.T, 44100)
    intact = sf.read(path, dtype="float32", always_2d=True)[0].T
    _truncate(path, 0.5)
    assert probe(path).frames == audio.shape[1]  # the header still claims the full length
    with pytest.warns(TruncatedAudioWarning, match=str(path)):
        got, _ = read_audio(path)
    assert 0.3 * audio.shape[1] < got.shape[1] < 0.6 * audio.shape[1]
    if ext != "mp3":  # lossless: what decoded is exactly the start of the intact file
        np.testing.assert_array_equal(got, intact[:, : got.shape[1]])


def test_truncation_is_reported_once_per_reader_over_several_passes(tmp_path: Path) -> None:
    """The pipeline reads twice (statistics, then separation); the user is told once."""
    import warnings

    path = tmp_path / "cut.wav"
    sf.write(path, bandlimited_noise(44100, 4.0, seed=6).T, 44100)
    _truncate(path, 0.5)
    reader = AudioReader(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = np.concatenate(list(reader), axis=1)
        second = np.concatenate(list(reader), axis=1)
    assert [w.category for w in caught] == [TruncatedAudioWarning]
    np.testing.assert_array_equal(first, second)


def test_slightly_short_file_does_not_warn(tmp_path: Path) -> None:
    """Within 1 s of the header's length: no warning (pytest turns warnings into errors)."""
    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros((44100 * 3, 2), np.float32), 44100, subtype="PCM_16")
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 44100 * 2 * 2 // 2])  # half a second missing
    got, _ = read_audio(path)
    assert got.shape[1] == 44100 * 3 - 22050
