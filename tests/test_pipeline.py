"""The pipeline below the CLI: stem plans and their maths, the sidecar's resume check, ``Separator``, bags."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from separation_helpers import OneThread, make_ft_bag, make_tiny_th, read_audio, write_audio
from stemsplit import pipeline
from stemsplit.errors import (
    AudioDecodeError,
    CompileFallbackWarning,
    DeviceFallbackWarning,
    DownmixWarning,
    InvalidOptionError,
    NearSilentStemWarning,
    SidecarWarning,
    SilentInputWarning,
    StemsplitWarning,
    TagCopyWarning,
    TruncatedAudioWarning,
)
from stemsplit.inference import EngineOptions, separate_tensor
from stemsplit.model import HTDemucs
from stemsplit.pipeline import SeparationOptions, StemPlan, plan_batch, plan_stems, separate_batch
from stemsplit.pipeline.sidecar import Provenance, is_complete, made_from_other_input, write_sidecar
from stemsplit.separator import Separator

FOUR = ("drums", "bass", "other", "vocals")
EXACT = {"device": "cpu", "precision": "float32"}
FLOAT_OUT = {"format": "wav", "bit_depth": "32f", "clip": "none"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with OneThread():
        yield


# --- plan_stems ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "computed", "written", "needs_mix"),
    [
        ({}, FOUR, FOUR, False),
        ({"two_stems": "vocals"}, FOUR, ("vocals", "no_vocals"), False),
        ({"two_stems": "vocals", "other_method": "add"}, FOUR, ("vocals", "no_vocals"), False),
        ({"two_stems": "drums", "other_method": "minus"}, ("drums",), ("drums", "no_drums"), True),
        ({"two_stems": "bass", "other_method": "none"}, ("bass",), ("bass",), False),
        ({"stems": ("vocals", "drums")}, ("vocals", "drums"), ("vocals", "drums"), False),
        ({"stems": ("bass", "bass")}, ("bass",), ("bass",), False),
    ],
)
def test_plan_stems(settings, computed, written, needs_mix) -> None:
    plan = plan_stems(FOUR, SeparationOptions(**settings))
    assert (plan.computed, plan.written, plan.needs_mix) == (computed, written, needs_mix)


@pytest.mark.parametrize("settings", [{"two_stems": "guitar"}, {"stems": ("vocals", "piano")}])
def test_unknown_stem_lists_the_models_stems(settings) -> None:
    with pytest.raises(InvalidOptionError, match="drums, bass, other, vocals") as info:
        plan_stems(FOUR, SeparationOptions(**settings))
    assert info.value.option in ("--two-stems", "--stems")


def test_stems_and_two_stems_together_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="either"):
        SeparationOptions(stems=("vocals",), two_stems="vocals")


# --- StemPlan.combine against plain numpy ---------------------------------------------------------


@pytest.fixture
def block() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.standard_normal((4, 2, 257)).astype(np.float32), rng.standard_normal((2, 257)).astype(
        np.float32
    )


@pytest.mark.parametrize("stem", FOUR)
def test_add_is_the_sum_of_the_other_stems(block, stem: str) -> None:
    stems, _ = block
    out = plan_stems(FOUR, SeparationOptions(two_stems=stem)).combine(stems, None)
    k = FOUR.index(stem)
    others = [stems[i].astype(np.float64) for i in range(4) if i != k]
    assert list(out) == [stem, f"no_{stem}"]
    np.testing.assert_array_equal(out[stem], stems[k])
    np.testing.assert_allclose(out[f"no_{stem}"], others[0] + others[1] + others[2], atol=1e-5)


def test_minus_is_mix_minus_stem(block) -> None:
    stems, mix = block
    plan = plan_stems(FOUR, SeparationOptions(two_stems="bass", other_method="minus"))
    out = plan.combine(stems[:1], mix)  # the engine returns only the computed stem
    np.testing.assert_array_equal(out["bass"], stems[0])
    np.testing.assert_allclose(out["no_bass"], mix.astype(np.float64) - stems[0], atol=1e-6)


def test_selected_stems_pass_through_in_order(block) -> None:
    stems, _ = block
    out = StemPlan(("vocals", "drums"), ("vocals", "drums")).combine(stems[:2], None)
    assert list(out) == ["vocals", "drums"]
    np.testing.assert_array_equal(out["drums"], stems[1])


# --- the sidecar ----------------------------------------------------------------------------------


def source_of(sidecar: Path) -> Path:
    """The input the ``finished`` fixture's stems were made from."""
    return sidecar.parent / "x.wav"


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Provenance, dict[str, Path], Path]:
    stems = {}
    for i, stem in enumerate(("vocals", "no_vocals")):
        stems[stem] = tmp_path / f"{stem}.wav"
        stems[stem].write_bytes(b"w" * (100 + i))
    prov = Provenance("htdemucs", "abc123", SeparationOptions(two_stems="vocals").output_settings())
    sidecar = tmp_path / "stemsplit.json"
    source = tmp_path / "x.wav"
    source.write_bytes(b"the input")
    write_sidecar(sidecar, prov, stems, source, {"gain": 1.0})
    return prov, stems, sidecar


def test_complete_track_is_recognised(finished) -> None:
    prov, stems, sidecar = finished
    assert is_complete(sidecar, prov, stems, source_of(sidecar))
    assert [p.name for p in sidecar.parent.iterdir() if p.name.startswith(".")] == []  # no temp left
    record = json.loads(sidecar.read_text())
    assert record["stems"]["no_vocals"] == {"file": "no_vocals.wav", "bytes": 101}


def test_truncated_or_missing_stem_is_not_complete(finished) -> None:
    prov, stems, sidecar = finished
    with stems["vocals"].open("r+b") as f:
        f.truncate(50)
    assert not is_complete(sidecar, prov, stems, source_of(sidecar))
    stems["vocals"].write_bytes(b"w" * 100)
    assert is_complete(sidecar, prov, stems, source_of(sidecar))
    stems["no_vocals"].unlink()
    assert not is_complete(sidecar, prov, stems, source_of(sidecar))


@pytest.mark.parametrize(
    "change",
    [
        {"weights_id": "def456"},
        {"model": "htdemucs_ft"},
        {"settings": SeparationOptions(two_stems="vocals", clip="clamp").output_settings()},
        {"settings": SeparationOptions(two_stems="vocals", shifts=1).output_settings()},
        {"settings": SeparationOptions(two_stems="vocals", bit_depth="24").output_settings()},
        {"settings": SeparationOptions(two_stems="vocals", samplerate=48000).output_settings()},
    ],
)
def test_other_weights_or_settings_are_not_complete(finished, change) -> None:
    prov, stems, sidecar = finished
    assert not is_complete(sidecar, dataclasses.replace(prov, **change), stems, source_of(sidecar))


def test_another_input_or_an_edited_input_is_not_complete(finished) -> None:
    """Same output names, different audio (another folder's song.wav, or the file re-exported)."""
    import os

    prov, stems, sidecar = finished
    source = source_of(sidecar)
    other = sidecar.parent / "other.wav"
    other.write_bytes(b"different")
    assert not is_complete(sidecar, prov, stems, other)
    os.utime(source, ns=(1, 1))  # touched, same bytes: still complete (hash compared)
    assert is_complete(sidecar, prov, stems, source)
    source.write_bytes(b"the INPUT")  # same size, new content
    assert not is_complete(sidecar, prov, stems, source)
    source.unlink()
    assert not is_complete(sidecar, prov, stems, source)


def test_the_sidecar_says_whose_stems_they_are(finished, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file (by any path, even edited) or the same content owns them; another file with other
    content does not."""
    _, _, sidecar = finished
    source = source_of(sidecar)
    assert json.loads(sidecar.read_text())["input"]["path"] == str(source.resolve())
    monkeypatch.chdir(sidecar.parent)
    assert not made_from_other_input(sidecar, source)
    assert not made_from_other_input(sidecar, Path("x.wav"))  # relative, same file
    (sidecar.parent / "link.wav").symlink_to(source)
    assert not made_from_other_input(sidecar, Path("link.wav"))
    source.write_bytes(b"edited")  # the user re-exported the same file: still its own stems
    assert not made_from_other_input(sidecar, source)
    copy = sidecar.parent / "sub" / "x.wav"
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())  # the edited bytes, not those recorded: another track
    assert made_from_other_input(sidecar, copy)
    source.unlink()  # the owner is gone; the copy holds other bytes than those recorded: not its stems
    assert made_from_other_input(sidecar, copy)
    for unreadable in ("{not json", "[]", '{"input": {"bytes": 3}}', '{"input": {"path": 5}}'):
        sidecar.write_text(unreadable)  # nothing says whose they are
        assert not made_from_other_input(sidecar, copy)
    sidecar.unlink()
    assert not made_from_other_input(sidecar, copy)


def test_a_copy_of_the_recorded_content_is_the_same_track(finished) -> None:
    """Regression (#12): an identical file in another folder went to ``x (wav)``, although completion is
    checked against the input's content."""
    _, _, sidecar = finished
    source = source_of(sidecar)
    copy = sidecar.parent / "elsewhere" / "x.wav"
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())  # a new file (new mtime), the same bytes: hashed and accepted
    assert source.exists() and not made_from_other_input(sidecar, copy)


def test_a_moved_input_still_owns_its_stems(finished) -> None:
    """The recorded file is gone: the same bytes elsewhere are the same track (a moved library is not
    separated again), other bytes are another track."""
    _, _, sidecar = finished
    source = source_of(sidecar)
    moved = sidecar.parent / "elsewhere" / "renamed.wav"
    moved.parent.mkdir()
    source.rename(moved)  # keeps size and modification time
    assert not made_from_other_input(sidecar, moved)
    moved.write_bytes(b"the INPUT")  # same size, other bytes, new mtime: hashed and refused
    assert made_from_other_input(sidecar, moved)


def test_other_stems_or_a_bad_sidecar_are_not_complete(finished) -> None:
    prov, stems, sidecar = finished
    assert not is_complete(sidecar, prov, {"vocals": stems["vocals"]}, source_of(sidecar))
    sidecar.write_text("{not json")
    assert not is_complete(sidecar, prov, stems, source_of(sidecar))
    sidecar.unlink()
    assert not is_complete(sidecar, prov, stems, source_of(sidecar))


# --- Separator (the library API) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def separator(tmp_path_factory: pytest.TempPathFactory) -> Separator:
    return Separator(str(make_tiny_th(tmp_path_factory.mktemp("model"))), **EXACT)


def test_separate_tensor_equals_the_engine_and_sums_like_it(separator: Separator) -> None:
    wav = torch.from_numpy(_noise(2, 17_641))
    stems = separator.separate_tensor(wav, 44100)
    engine = separate_tensor(separator.bag, wav, options=EngineOptions(**EXACT))  # (S, C, T)
    assert list(stems) == list(FOUR) and all(s.shape == wav.shape for s in stems.values())
    assert all(s.dtype == torch.float32 for s in stems.values())
    for k, stem in enumerate(FOUR):
        torch.testing.assert_close(stems[stem], engine[k], atol=1e-6, rtol=0)
    torch.testing.assert_close(sum(stems.values()), engine.sum(0), atol=1e-5, rtol=0)
    assert not torch.allclose(stems["drums"], stems["vocals"])  # the model really separates


def test_separate_tensor_mono_is_the_mean_of_the_stereo_result(separator: Separator) -> None:
    mono = torch.from_numpy(_noise(1, 12_001)[0])
    stems = separator.separate_tensor(mono)
    assert all(s.shape == mono.shape for s in stems.values())
    stereo = separate_tensor(separator.bag, mono.expand(2, -1).contiguous(), options=EngineOptions(**EXACT))
    for k, stem in enumerate(FOUR):
        torch.testing.assert_close(stems[stem], stereo[k].mean(0), atol=1e-6, rtol=0)
    stems_2d = separator.separate_tensor(mono[None])
    assert stems_2d["bass"].shape == (1, 12_001)


@pytest.mark.parametrize(
    ("rate", "length"), [(48000, 24_001), (48000, 20_031), (22050, 9_999), (32000, 16_000)]
)
def test_separate_tensor_keeps_rate_length_and_channels(separator: Separator, rate: int, length: int) -> None:
    wav = torch.from_numpy(_noise(2, length))
    stems = separator.separate_tensor(wav, rate)
    assert {tuple(s.shape) for s in stems.values()} == {(2, length)}
    # Resampled in and out, the stems still add up to about the engine's sum at the model's rate.
    assert all(torch.isfinite(s).all() for s in stems.values())


def test_separate_tensor_two_stems_minus(separator: Separator) -> None:
    sep = Separator(str(separator.model.path), two_stems="vocals", other_method="minus", **EXACT)
    wav = torch.from_numpy(_noise(2, 15_000))
    out = sep.separate_tensor(wav)
    assert list(out) == ["vocals", "no_vocals"]
    torch.testing.assert_close(out["no_vocals"], wav - out["vocals"], atol=1e-6, rtol=0)


def test_separate_tensor_refuses_three_channels(separator: Separator) -> None:
    with pytest.raises(InvalidOptionError, match="1 or 2 channels"):
        separator.separate_tensor(torch.zeros(3, 1000))


def test_separate_file_writes_stems(separator: Separator, tmp_path: Path) -> None:
    write_audio(tmp_path / "in.wav", seconds=0.3)
    paths = separator.separate_file(tmp_path / "in.wav", out_dir=tmp_path / "o", format="flac")
    assert paths == {s: tmp_path / "o" / separator.model.name / "in" / f"{s}.flac" for s in FOUR}
    assert all(p.is_file() for p in paths.values())


def test_separate_file_writes_the_sidecar_and_keeps_other_inputs_stems(
    separator: Separator, tmp_path: Path
) -> None:
    """The library writes what the command writes: a re-run of the command skips the track, and another
    input with the same name does not overwrite it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_audio(tmp_path / "a" / "song.wav", seconds=0.3, seed=1)
    write_audio(tmp_path / "b" / "song.wav", seconds=0.4, seed=2)
    first = separator.separate_file(tmp_path / "a" / "song.wav", out_dir=tmp_path / "o")
    folder = first["vocals"].parent
    record = json.loads((folder / "stemsplit.json").read_text())
    assert record["input"]["path"] == str((tmp_path / "a" / "song.wav").resolve())
    assert record["weights"] == separator.model.weights_id != ""
    kept = {p: p.read_bytes() for p in first.values()}

    second = separator.separate_file(tmp_path / "b" / "song.wav", out_dir=tmp_path / "o")
    assert second["vocals"].parent == folder.with_name("song (wav)")
    assert {p: p.read_bytes() for p in kept} == kept


def _noise(channels: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(frames)
    return (0.3 * rng.standard_normal((channels, frames))).astype(np.float32)


# --- an htdemucs_ft-shaped bag --------------------------------------------------------------------


def test_ft_bag_with_minus_runs_only_the_specialist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml, members = make_ft_bag(tmp_path / "bag")
    mix = write_audio(tmp_path / "in" / "song.wav", seconds=0.6, subtype="FLOAT")
    calls: list[int] = []
    trunk = HTDemucs.trunk  # the runner calls a staged model's stages, not its forward

    def counting(self, x, xt):
        calls.append(id(self))
        return trunk(self, x, xt)

    monkeypatch.setattr(HTDemucs, "trunk", counting)
    options = SeparationOptions(
        model=str(yaml),
        out_dir=tmp_path / "out",
        two_stems="vocals",
        other_method="minus",
        **EXACT,
        **FLOAT_OUT,
    )
    batch = plan_batch([str(tmp_path / "in")], options)
    (result,) = separate_batch(batch, options)
    assert result.status == "done", result.error
    assert calls and len(set(calls)) == 1, "only the vocals specialist may run"
    assert list(result.outputs) == ["vocals", "no_vocals"]
    vocals, rate = read_audio(result.outputs["vocals"])
    no_vocals, _ = read_audio(result.outputs["no_vocals"])
    assert rate == 44100 and vocals.shape == mix.shape
    np.testing.assert_allclose(no_vocals, mix.astype(np.float64) - vocals, atol=2e-6)
    assert np.abs(vocals).max() > 1e-3

    # The vocals are the fourth member's alone (identity weights): run it on its own and compare.
    calls.clear()
    alone = dataclasses.replace(options, model=str(members[3]), out_dir=tmp_path / "alone")
    (single,) = separate_batch(plan_batch([str(tmp_path / "in")], alone), alone)
    np.testing.assert_array_equal(read_audio(single.outputs["vocals"])[0], vocals)
    other = dataclasses.replace(options, model=str(members[0]), out_dir=tmp_path / "m0")
    (first,) = separate_batch(plan_batch([str(tmp_path / "in")], other), other)
    assert not np.allclose(read_audio(first.outputs["vocals"])[0], vocals, atol=1e-4)


def test_pipeline_report_fields(tmp_path: Path) -> None:
    model = make_tiny_th(tmp_path / "m")
    write_audio(tmp_path / "a.wav", seconds=0.3, rate=48000, channels=1)
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "o", **EXACT)
    (result,) = separate_batch(plan_batch([str(tmp_path / "a.wav")], options), options)
    assert (result.status, result.samplerate, result.output_samplerate, result.channels) == (
        "done",
        48000,
        48000,
        1,
    )
    assert result.duration_s == pytest.approx(0.3)
    assert result.device == "cpu" and result.precision == "float32" and result.gain == 1.0
    assert set(result.stems) == set(FOUR)
    assert result.warnings == ()
    assert pipeline.summarise([result]) == {
        "done": 1,
        "skipped": 0,
        "failed": 0,
        "interrupted": 0,
        "done_with_warnings": 0,
    }


def test_settings_that_cannot_change_the_files_do_not_make_tracks_stale() -> None:
    base = SeparationOptions().output_settings()
    assert SeparationOptions(other_method="minus").output_settings() == base  # no --two-stems
    assert SeparationOptions(seed=7).output_settings() == base  # no --shifts
    assert (
        SeparationOptions(format="mp3", bit_depth="24").output_settings()
        == SeparationOptions(format="mp3").output_settings()
    )
    assert (
        SeparationOptions(shifts=1, seed=7).output_settings() != SeparationOptions(shifts=1).output_settings()
    )
    assert (
        SeparationOptions(two_stems="vocals", other_method="minus").output_settings()
        != SeparationOptions(two_stems="vocals").output_settings()
    )


# --- warnings kept in the result ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "kind"),
    [
        (TruncatedAudioWarning, "truncated_audio"),
        (DownmixWarning, "downmix"),
        (TagCopyWarning, "tag_copy"),
        (NearSilentStemWarning, "near_silent_stem"),
        (SidecarWarning, "sidecar"),
        (DeviceFallbackWarning, "device_fallback"),
        (CompileFallbackWarning, "compile_fallback"),
        (StemsplitWarning, "warning"),
    ],
)
def test_warning_kinds(category: type[Warning], kind: str) -> None:
    assert pipeline.warning_kind(category) == kind


def _surround(path: Path, seconds: float = 0.3) -> Path:
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, (int(44100 * seconds), 6)).astype(np.float32)
    sf.write(str(path), audio, 44100)
    return path


def test_track_warnings_are_kept_in_the_result_and_issued_once(tmp_path: Path) -> None:
    model = make_tiny_th(tmp_path / "m")
    path = _surround(tmp_path / "surround.wav")
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "o", stems=("bass",), **EXACT)
    with pytest.warns(DownmixWarning, match="6 channels downmixed") as caught:
        (result,) = separate_batch(plan_batch([str(path)], options), options)
    assert result.status == "done"
    assert [w.category for w in caught] == [DownmixWarning]  # issued once
    assert [(w.kind, w.message) for w in result.warnings] == [("downmix", str(caught[0].message))]
    assert result.to_dict()["warnings"] == [{"kind": "downmix", "message": str(caught[0].message)}]
    assert pipeline.summarise([result])["done_with_warnings"] == 1


def test_warnings_are_shown_as_they_happen_not_when_the_track_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A downmix is known when reading starts: an hour-long track must not hide it until the end."""
    model = make_tiny_th(tmp_path / "m")
    path = _surround(tmp_path / "surround.wav")
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "o", stems=("bass",), **EXACT)
    real = pipeline.workers.TrackStream
    shown_before_separating: list[int] = []

    def watched(*args, **kwargs):  # the engine starts on a track
        shown_before_separating.append(len(caught))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline.workers, "TrackStream", watched)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        (result,) = separate_batch(plan_batch([str(path)], options), options)
    assert shown_before_separating == [1] and [w.category for w in caught] == [DownmixWarning]
    assert [w.kind for w in result.warnings] == ["downmix"]


def test_ignored_warnings_are_still_recorded_and_other_warnings_pass_through(tmp_path: Path) -> None:
    model = make_tiny_th(tmp_path / "m")
    path = _surround(tmp_path / "surround.wav")
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "o", stems=("bass",), **EXACT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", StemsplitWarning)
        warnings.simplefilter("always", RuntimeWarning)
        with pipeline.collect_warnings() as noted:
            warnings.warn("unrelated", RuntimeWarning, stacklevel=1)
        assert noted == []
        (result,) = separate_batch(plan_batch([str(path)], options), options)
    assert [w.category for w in caught] == [RuntimeWarning]
    assert [w.kind for w in result.warnings] == ["downmix"]


def test_a_failed_track_keeps_the_warnings_issued_before_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(pipeline.workers.Scheduler):
        def step(self, *, only_full: bool = False) -> bool:
            raise AudioDecodeError("decoder gave up", path=path)

    model = make_tiny_th(tmp_path / "m")
    path = _surround(tmp_path / "surround.wav")
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "o", **EXACT)
    monkeypatch.setattr(pipeline.workers, "Scheduler", Broken)
    with pytest.warns(DownmixWarning):
        (result,) = separate_batch(plan_batch([str(path)], options), options)
    assert result.status == "failed" and result.error == "decoder gave up"
    assert [w.kind for w in result.warnings] == ["downmix"]
    assert pipeline.summarise([result])["done_with_warnings"] == 0


def test_a_silent_input_gets_one_warning_not_one_per_stem(separator: Separator, tmp_path: Path) -> None:
    """Regression (#12): a silent input gave four "near-silent" warnings, one saying "the track may have
    no other"."""
    sf.write(str(tmp_path / "silence.wav"), np.zeros((8000, 2), np.float32), 44100)
    with pytest.warns(SilentInputWarning) as caught:
        result = separator.separate_file_result(tmp_path / "silence.wav", out_dir=tmp_path / "o")
    assert result.status == "done" and set(result.outputs) == set(FOUR)  # still written, in full
    assert [w.kind for w in result.warnings] == ["silent_input"]
    (issued,) = [w.message for w in caught]
    assert isinstance(issued, SilentInputWarning) and issued.peak_dbfs == -math.inf
    assert str(issued) == result.warnings[0].message
    assert (
        str(issued)
        == f"{tmp_path / 'silence.wav'}: the input is silent (every sample is zero), so are its stems"
    )
    assert not any(isinstance(w.message, NearSilentStemWarning) for w in caught)


def test_only_quiet_stems_of_a_track_that_is_not_silent_are_flagged(tmp_path: Path) -> None:
    # The levels as the writer measured them; -inf is an all-zero stem.
    levels = {"drums": -12.0, "bass": -60.0, "vocals": -72.4, "other": -80.0, "no_vocals": -math.inf}
    with pytest.warns(NearSilentStemWarning) as caught:
        pipeline.track._check_levels(tmp_path / "t.wav", -3.0, levels, FOUR)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 't.wav'}: vocals: near-silent (peak -72.4 dBFS): the track may have no vocals",
        f"{tmp_path / 't.wav'}: other: near-silent (peak -80.0 dBFS): the track may have no instruments "
        "other than drums, bass and vocals",
        f"{tmp_path / 't.wav'}: no_vocals: silent (every sample is zero): the track may contain nothing but vocals",
    ]
    with pytest.warns(NearSilentStemWarning) as caught:
        pipeline.track._check_levels(tmp_path / "t.wav", -3.0, {"no_other": -70.0}, FOUR)
    assert "the track may contain nothing but instruments other than drums, bass and vocals" in str(
        caught[0].message
    )
    with pytest.warns(
        SilentInputWarning
    ) as caught:  # the input is near-silent: one warning, whatever the stems
        pipeline.track._check_levels(tmp_path / "t.wav", -65.0, levels, FOUR)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 't.wav'}: the input is near-silent (peak -65.0 dBFS), so are its stems"
    ]


def test_a_track_that_does_not_finish_leaves_no_folder_it_created(
    separator: Separator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#12: the library's one-track path removes the empty folders of a failed or interrupted track too."""
    from stemsplit.audio import StemWriter
    from stemsplit.errors import AudioWriteError

    write_audio(tmp_path / "in.wav", seconds=0.3)
    (tmp_path / "kept").mkdir()
    for stop in (KeyboardInterrupt(), AudioWriteError("disk full", path=tmp_path)):

        def fail(stem_writer: StemWriter, block: np.ndarray, stop: BaseException = stop) -> None:
            raise stop

        monkeypatch.setattr(StemWriter, "write", fail)
        with pytest.raises(type(stop)):
            separator.separate_file_result(tmp_path / "in.wav", out_dir=tmp_path / "kept" / "new")
        assert list((tmp_path / "kept").iterdir()) == []  # new/<model>/in is gone; kept was there before


def test_loud_input_has_no_warnings(separator: Separator, tmp_path: Path) -> None:
    write_audio(tmp_path / "in.wav", seconds=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = separator.separate_file_result(tmp_path / "in.wav", out_dir=tmp_path / "o")
    assert result.warnings == ()
    assert all(v["peak_dbfs"] > pipeline.NEAR_SILENT_DBFS for v in result.stems.values())


@pytest.mark.parametrize("limit", [Fraction(39, 5), Fraction(12355, 10000), Fraction(1, 4)])
def test_the_segment_suggested_by_the_error_is_accepted(limit: Fraction) -> None:
    pipeline.check_segment(float(limit), limit)  # the window itself is fine
    with pytest.raises(InvalidOptionError) as info:
        pipeline.check_segment(float(limit) + 0.01, limit)
    suggested = float(str(info.value).rsplit("use ", 1)[1].removesuffix(" or less"))
    assert suggested <= limit and limit - Fraction(suggested) < Fraction(1, 100)
    pipeline.check_segment(suggested, limit)


def test_a_track_too_big_for_the_disk_fails_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    def not_reached(*args, **kwargs):
        raise AssertionError("the track was read although its stems cannot fit")

    model = make_tiny_th(tmp_path / "m")
    write_audio(tmp_path / "song.wav", seconds=1.0)
    options = SeparationOptions(model=str(model), out_dir=tmp_path / "o", **EXACT)
    batch = plan_batch([str(tmp_path / "song.wav")], options)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("u", "total used free")(10**9, 0, 1000))
    monkeypatch.setattr(pipeline.track, "TrackBuffer", not_reached)
    (result,) = separate_batch(batch, options)
    assert result.status == "failed" and "not enough free disk space" in (result.error or "")
    assert not (tmp_path / "o").exists()


def test_separator_warns_once_about_a_precision_the_cpu_emulates(tmp_path: Path) -> None:
    from stemsplit.errors import SlowPrecisionWarning

    model = make_tiny_th(tmp_path)
    with pytest.warns(SlowPrecisionWarning, match="bfloat16 is emulated on this CPU") as caught:
        sep = Separator(str(model), device="cpu", precision="bfloat16")
        sep.separate_tensor(torch.zeros(2, 4410), 44100)
        sep.separate_tensor(torch.zeros(2, 4410), 44100)
    assert len([w for w in caught if issubclass(w.category, SlowPrecisionWarning)]) == 1
