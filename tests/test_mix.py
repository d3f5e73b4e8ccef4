"""audio/stemset.py and audio/mix.py: the stems of a track, and a balance of them rendered against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from stemsplit.audio import mix
from stemsplit.audio.mix import MixSettings, parse_gain, render_mix, write_mix
from stemsplit.audio.stemset import find_stems
from stemsplit.audio.writer import WriteOptions
from stemsplit.errors import InvalidOptionError

SR = 44100
Array = npt.NDArray[np.float64]


def _sine(freq: float, seconds: float, amp: float = 0.25) -> Array:
    t = np.arange(round(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * freq * t)


def write_stems(folder: Path, stems: dict[str, Array]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in stems.items():
        sf.write(
            folder / f"{name}.wav", np.stack([x, 0.5 * x], axis=1).astype(np.float32), SR, subtype="FLOAT"
        )
    return folder


def _render(folder: Path, settings: MixSettings) -> Array:
    stems = find_stems(folder)
    settings.check(stems)
    return np.concatenate(list(render_mix(stems, settings, block_frames=10000)), axis=1).astype(np.float64)


def _frequency(x: Array) -> float:
    """The strongest frequency of ``x`` (Hz), parabolic interpolation between FFT bins."""
    x = x[len(x) // 4 : 3 * len(x) // 4]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / len(x)


@pytest.fixture
def four(tmp_path: Path) -> tuple[Path, dict[str, Array]]:
    rng = np.random.default_rng(7)
    sig = {
        "drums": 0.2 * rng.standard_normal(3 * SR),
        "bass": _sine(110, 3),
        "other": _sine(660, 3),
        "vocals": _sine(440, 3),
    }
    return write_stems(tmp_path / "song", sig), sig


def test_the_stems_of_a_folder_are_found_in_order(four: tuple[Path, dict[str, Array]]) -> None:
    stems = find_stems(four[0])
    assert stems.names == ("drums", "bass", "other", "vocals")
    assert (stems.samplerate, stems.frames) == (SR, 3 * SR)
    assert [s.pitched for s in stems.stems] == [False, True, True, True]


def test_the_mix_is_the_sum_of_the_stems(four: tuple[Path, dict[str, Array]]) -> None:
    folder, sig = four
    y = _render(folder, MixSettings())
    ref = sum(sig.values())
    assert y.shape == (2, 3 * SR)
    np.testing.assert_allclose(y[0], ref, atol=1e-6)
    np.testing.assert_allclose(y[1], 0.5 * ref, atol=1e-6)


def test_gains_in_decibels_and_linear(four: tuple[Path, dict[str, Array]]) -> None:
    folder, sig = four
    name, vocals = parse_gain("vocals=-6dB")
    assert name == "vocals" and vocals == pytest.approx(10 ** (-6 / 20))
    assert parse_gain("bass = 0.5") == ("bass", 0.5)
    y = _render(folder, MixSettings(gains={"vocals": vocals, "bass": 0.5}))
    ref = sig["drums"] + 0.5 * sig["bass"] + sig["other"] + 10 ** (-6 / 20) * sig["vocals"]
    np.testing.assert_allclose(y[0], ref, atol=1e-6)


@pytest.mark.parametrize(
    ("mute", "solo", "heard"),
    [
        ({"bass"}, set(), {"drums", "other", "vocals"}),
        (set(), {"vocals", "bass"}, {"vocals", "bass"}),
        ({"vocals"}, {"vocals", "bass"}, {"bass"}),  # muted wins over solo
        ({"drums", "bass", "other", "vocals"}, set(), set()),
    ],
)
def test_mute_and_solo(
    four: tuple[Path, dict[str, Array]], mute: set[str], solo: set[str], heard: set[str]
) -> None:
    folder, sig = four
    y = _render(folder, MixSettings(mute=frozenset(mute), solo=frozenset(solo)))
    ref = sum((sig[n] for n in heard), np.zeros(3 * SR))
    np.testing.assert_allclose(y[0], ref, atol=1e-6)


def test_start_and_end_cut_the_track(four: tuple[Path, dict[str, Array]]) -> None:
    folder, sig = four
    y = _render(folder, MixSettings(start_s=0.5, end_s=2.0))
    np.testing.assert_allclose(y[0], sum(sig.values())[SR // 2 : 2 * SR], atol=1e-6)


@pytest.mark.parametrize("tempo", [0.5, 0.8, 1.25, 1.5])
def test_tempo_changes_the_duration_and_keeps_the_pitch(tmp_path: Path, tempo: float) -> None:
    folder = write_stems(tmp_path / "s", {"vocals": _sine(440, 4)})
    y = _render(folder, MixSettings(tempo=tempo))
    assert y.shape[1] == pytest.approx(4 * SR / tempo, rel=0.01)
    assert _frequency(y[0]) == pytest.approx(440, rel=0.01)


@pytest.mark.parametrize("key", [-12, -5, 2, 7, 12])
def test_key_moves_the_pitch_and_keeps_the_duration(tmp_path: Path, key: int) -> None:
    folder = write_stems(tmp_path / "s", {"vocals": _sine(440, 4)})
    y = _render(folder, MixSettings(key=key))
    assert y.shape[1] == pytest.approx(4 * SR, rel=0.01)
    assert _frequency(y[0]) == pytest.approx(440 * 2 ** (key / 12), rel=0.01)


def test_drums_are_never_shifted(tmp_path: Path) -> None:
    folder = write_stems(tmp_path / "s", {"drums": _sine(300, 4), "bass": _sine(220, 4)})
    only_drums = _render(folder, MixSettings(key=5, solo=frozenset({"drums"})))
    np.testing.assert_array_equal(only_drums[0], _render(folder, MixSettings(solo=frozenset({"drums"})))[0])
    slow_drums = _render(folder, MixSettings(key=5, tempo=0.75, solo=frozenset({"drums"})))
    assert _frequency(slow_drums[0]) == pytest.approx(300, rel=0.01)
    slow_bass = _render(folder, MixSettings(key=5, tempo=0.75, solo=frozenset({"bass"})))
    assert _frequency(slow_bass[0]) == pytest.approx(220 * 2 ** (5 / 12), rel=0.01)


def test_segment_joins_keep_the_level_and_the_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mix, "SEGMENT_S", 1.0)  # many joins in a short track
    folder = write_stems(tmp_path / "s", {"vocals": _sine(440, 6, amp=0.5)})
    y = _render(folder, MixSettings(tempo=0.8, key=2))
    assert y.shape[1] == round(6 * SR / 0.8)
    body = y[0, SR // 2 : -SR // 2]
    windows = body[: len(body) // 512 * 512].reshape(-1, 512)
    peaks = np.abs(windows).max(axis=1)
    assert peaks.min() > 0.4 and peaks.max() < 0.6
    assert _frequency(y[0]) == pytest.approx(440 * 2 ** (2 / 12), rel=0.01)


def test_a_last_segment_shorter_than_the_fade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mix, "SEGMENT_S", 1.0)
    folder = write_stems(tmp_path / "s", {"vocals": _sine(440, 2.01)})  # the last segment: 10 ms
    y = _render(folder, MixSettings(tempo=1.25, key=-1))
    assert y.shape[1] == round(round(2.01 * SR) / 1.25)


def test_write_mix_16_bit_equals_the_sum(four: tuple[Path, dict[str, Array]], tmp_path: Path) -> None:
    folder, sig = four
    out = tmp_path / "mix.wav"
    write_mix(
        find_stems(folder),
        MixSettings(mute=frozenset({"drums"})),
        out,
        WriteOptions(format="wav", clip="none"),
    )
    data, rate = sf.read(out, always_2d=True)
    assert rate == SR
    ref = sig["bass"] + sig["other"] + sig["vocals"]
    assert np.abs(data[:, 0] - ref).max() <= 2e-4


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (MixSettings(mute=frozenset({"guitar"})), "no stem 'guitar'"),
        (MixSettings(gains={"piano": 1.0}), "--gain"),
        (MixSettings(tempo=1.6), "--tempo"),
        (MixSettings(tempo=0.4), "--tempo"),
        (MixSettings(key=13), "--key"),
        (MixSettings(start_s=5.0), "--start"),
        (MixSettings(start_s=2.0, end_s=1.0), "--end"),
    ],
)
def test_bad_settings_are_refused(
    four: tuple[Path, dict[str, Array]], settings: MixSettings, words: str
) -> None:
    with pytest.raises(InvalidOptionError, match=words):
        settings.check(find_stems(four[0]))


@pytest.mark.parametrize("text", ["vocals", "=0.5", "vocals=loud", "vocals=-0.5", "vocals=30dB"])
def test_bad_gains_are_refused(text: str) -> None:
    with pytest.raises(InvalidOptionError, match="--gain"):
        parse_gain(text)


def test_folders_without_stems_or_of_unequal_stems_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidOptionError, match="no stems found"):
        find_stems(tmp_path / "empty")
    write_stems(tmp_path / "odd", {"a": _sine(100, 1), "b": _sine(100, 2)})
    with pytest.raises(InvalidOptionError, match="differ in length"):
        find_stems(tmp_path / "odd")
