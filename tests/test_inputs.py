"""Input discovery: files, folders (recursive), globs (``**`` included), the output folder, missing paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemsplit.inputs import discover_inputs, is_audio_name


def touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def found(items) -> list[Path]:
    assert not any(i.missing for i in items), items
    return [i.path for i in items]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("name", "audio"),
    [("a.wav", True), ("a.FLAC", True), ("a.Mp3", True), ("a.m4a", True), ("a.txt", False),
     ("wav", False), ("a.wav.partial", False), ("cover.jpg", False)],
)  # fmt: skip
def test_audio_names_are_case_insensitive(name: str, audio: bool) -> None:
    assert is_audio_name(Path(name)) is audio


def test_folders_are_searched_recursively_in_sorted_order_with_any_case(tmp_path: Path) -> None:
    touch(Path("lib"), "b.MP3", "a.wav", "notes.txt", "sub/deeper/c.Flac", "sub/cover.jpg", "sub/d.ogg")
    assert found(discover_inputs(["lib"])) == [
        Path("lib/a.wav"), Path("lib/b.MP3"), Path("lib/sub/d.ogg"), Path("lib/sub/deeper/c.Flac"),
    ]  # fmt: skip
    assert all(i.argument == "lib" for i in discover_inputs(["lib"]))


def test_a_file_named_explicitly_is_kept_whatever_its_extension() -> None:
    touch(Path("."), "song.dat")
    assert found(discover_inputs(["song.dat"])) == [Path("song.dat")]


def test_globs_are_expanded_here_including_double_star() -> None:
    touch(Path("m"), "x.flac", "y.wav", "a/b/z.flac", "a/readme.flac.txt")
    assert found(discover_inputs(["m/*.flac"])) == [Path("m/x.flac")]
    assert set(found(discover_inputs(["m/**/*.flac"]))) == {Path("m/x.flac"), Path("m/a/b/z.flac")}
    # A glob that matches folders searches them.
    assert set(found(discover_inputs(["m/a*"]))) == {Path("m/a/b/z.flac")}


def test_output_folder_inside_an_input_folder_is_skipped() -> None:
    touch(Path("music"), "song.wav", "separated/htdemucs/song/vocals.wav", "other/keep.wav")
    assert set(found(discover_inputs(["music"], Path("music/separated")))) == {
        Path("music/other/keep.wav"), Path("music/song.wav"),
    }  # fmt: skip
    # Also through a glob, and with the output folder given as an absolute path.
    assert found(discover_inputs(["music/**/*.wav"], Path("music/separated").resolve())) == [
        Path("music/other/keep.wav"), Path("music/song.wav"),
    ]  # fmt: skip
    # Without an output folder inside, everything is found.
    assert len(found(discover_inputs(["music"], Path("elsewhere")))) == 3


def test_duplicates_are_removed_keeping_the_first_occurrence() -> None:
    (a,) = touch(Path("d"), "a.wav")
    touch(Path("d"), "b.wav")
    items = discover_inputs(["d/a.wav", "d", "./d/a.wav", str(a.resolve()), "d/*.wav"])
    assert found(items) == [Path("d/a.wav"), Path("d/b.wav")]
    assert [i.argument for i in items] == ["d/a.wav", "d"]


def test_missing_paths_and_empty_globs_are_reported_in_place() -> None:
    touch(Path("."), "ok.wav")
    items = discover_inputs(["nope.wav", "ok.wav", "none/*.mp3", "*.txt"])
    assert [(i.argument, i.missing) for i in items] == [
        ("nope.wav", True), ("ok.wav", False), ("none/*.mp3", True), ("*.txt", True),
    ]  # fmt: skip
    assert items[0].path == Path("nope.wav")


def test_an_empty_folder_gives_nothing() -> None:
    Path("empty").mkdir()
    assert discover_inputs(["empty"]) == []
