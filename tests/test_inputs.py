"""Input discovery: files, folders (recursive), globs (``**`` included), the output folder, hidden files,
missing paths and folders without audio."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemsplit.pipeline.inputs import discover_inputs, is_audio_name, missing_reason


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


def test_a_folder_without_audio_is_reported_like_an_empty_glob() -> None:
    """Regression: ``stemsplit empty/`` used to find nothing and say nothing (exit 0, "0 done")."""
    Path("empty").mkdir()
    touch(Path("docs"), "notes.txt", "cover.jpg", "._song.wav", ".hidden/x.wav")
    items = discover_inputs(["empty", "docs", "none/*.wav", "docs/*"])
    assert [(i.argument, i.missing, i.no_audio) for i in items] == [
        ("empty", True, "folder"), ("docs", True, "folder"), ("none/*.wav", True, None),
        ("docs/*", True, "glob"),
    ]  # fmt: skip
    folder, _, nothing, glob = (missing_reason(i) for i in items)
    assert folder.startswith("empty: no audio files in this folder") and ".wav, .flac, .mp3" in folder
    assert "name a file directly" in folder
    assert nothing.startswith("none/*.wav: no such file, folder or matching glob")
    assert glob.startswith("docs/*: the glob matches no audio file") and ".flac" in glob
    assert "\n" not in folder + nothing + glob


def test_a_folder_whose_only_audio_is_the_output_folder_has_no_audio() -> None:
    touch(Path("music"), "separated/htdemucs/song/vocals.wav")
    (item,) = discover_inputs(["music"], Path("music/separated"))
    assert (item.missing, item.no_audio) == (True, "folder")


def test_hidden_files_and_folders_are_skipped_when_searching() -> None:
    """Regression: macOS ``._song.wav`` companions on exFAT drives failed batches with "cannot decode"."""
    touch(Path("m"), "song.wav", "._song.wav", ".DS_Store", ".git/objects/x.wav", ".hidden.flac",
          "sub/._b.flac", "sub/b.flac", ".Trashes/c.mp3")  # fmt: skip
    assert found(discover_inputs(["m"])) == [Path("m/song.wav"), Path("m/sub/b.flac")]
    assert set(found(discover_inputs(["m/**/*.*"]))) == {Path("m/song.wav"), Path("m/sub/b.flac")}
    assert set(found(discover_inputs(["m/*"]))) == {Path("m/song.wav"), Path("m/sub/b.flac")}
    assert set(found(discover_inputs(["m/**"]))) == {Path("m/song.wav"), Path("m/sub/b.flac")}


def test_hidden_files_named_explicitly_are_kept() -> None:
    touch(Path("m"), "._song.wav", ".git/x.wav")
    assert found(discover_inputs(["m/._song.wav"])) == [Path("m/._song.wav")]
    assert found(discover_inputs(["m/.*.wav"])) == [Path("m/._song.wav")]  # the pattern spells out the dot
    assert found(discover_inputs(["m/.git"])) == [Path("m/.git/x.wav")]  # a hidden folder named explicitly
