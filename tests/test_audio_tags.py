"""Tags and cover art copied from the input onto every stem (issue #5)."""

from __future__ import annotations

import base64
from pathlib import Path

import mutagen.flac
import mutagen.id3
import mutagen.mp4
import mutagen.oggvorbis
import mutagen.wave
import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import png_bytes, sweep, write_pyav
from stemsplit.audio import TrackTags, TrackWriter, WriteOptions, read_tags

COVER = png_bytes((10, 200, 30), size=6)
EXPECTED = TrackTags(title="Song Ä", artist="The Band", album="Album", track="3/12", date="1997")


def _tag_mp3(path: Path) -> None:
    sf.write(path, sweep(44100, 0.3).T, 44100, format="MP3")
    id3 = mutagen.id3.ID3()
    id3.add(mutagen.id3.TIT2(encoding=3, text=["Song Ä"]))
    id3.add(mutagen.id3.TPE1(encoding=3, text=["The Band"]))
    id3.add(mutagen.id3.TALB(encoding=3, text=["Album"]))
    id3.add(mutagen.id3.TRCK(encoding=3, text=["3/12"]))
    id3.add(mutagen.id3.TDRC(encoding=3, text=["1997"]))
    id3.add(mutagen.id3.APIC(encoding=3, mime="image/png", type=3, desc="", data=COVER))
    id3.save(path)


def _vorbis_fields(target) -> None:
    target["title"], target["artist"], target["album"] = "Song Ä", "The Band", "Album"
    target["tracknumber"], target["tracktotal"], target["date"] = "3", "12", "1997"


def _cover_block() -> mutagen.flac.Picture:
    pic = mutagen.flac.Picture()
    pic.data, pic.mime, pic.type = COVER, "image/png", 3
    return pic


def _tag_flac(path: Path) -> None:
    sf.write(path, sweep(44100, 0.3).T, 44100)
    flac = mutagen.flac.FLAC(path)
    _vorbis_fields(flac)
    flac.add_picture(_cover_block())
    flac.save()


def _tag_ogg(path: Path) -> None:
    sf.write(path, sweep(44100, 0.3).T, 44100, format="OGG", subtype="VORBIS")
    ogg = mutagen.oggvorbis.OggVorbis(path)
    _vorbis_fields(ogg)
    ogg["metadata_block_picture"] = [base64.b64encode(_cover_block().write()).decode("ascii")]
    ogg.save()


def _tag_m4a(path: Path) -> None:
    write_pyav(path, sweep(44100, 0.3), 44100, "aac")
    mp4 = mutagen.mp4.MP4(path)
    mp4["\xa9nam"], mp4["\xa9ART"], mp4["\xa9alb"] = "Song Ä", "The Band", "Album"
    mp4["trkn"], mp4["\xa9day"] = [(3, 12)], "1997"
    mp4["covr"] = [mutagen.mp4.MP4Cover(COVER, imageformat=mutagen.mp4.MP4Cover.FORMAT_PNG)]
    mp4.save()


@pytest.mark.parametrize(
    ("ext", "make"), [("mp3", _tag_mp3), ("flac", _tag_flac), ("ogg", _tag_ogg), ("m4a", _tag_m4a)]
)
def test_read_tags_from_each_input_format(tmp_path: Path, ext: str, make) -> None:
    path = tmp_path / f"in.{ext}"
    make(path)
    tags = read_tags(path)
    assert (tags.title, tags.artist, tags.album, tags.track, tags.date) == (
        EXPECTED.title,
        EXPECTED.artist,
        EXPECTED.album,
        EXPECTED.track,
        EXPECTED.date,
    )
    assert tags.year == "1997"
    assert [(p.data, p.mime, p.kind) for p in tags.pictures] == [(COVER, "image/png", 3)]


def test_untagged_input_gives_empty_tags(tmp_path: Path) -> None:
    path = tmp_path / "plain.wav"
    sf.write(path, np.zeros((100, 1), np.float32), 44100)
    assert read_tags(path) == TrackTags()


def _write_stems(tmp_path: Path, fmt: str, tags: TrackTags, title_fallback: str = "") -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.{fmt}" for name in ("vocals", "drums")}
    audio = sweep(44100, 0.5)
    with TrackWriter(
        paths,
        WriteOptions(format=fmt),
        samplerate=44100,
        channels=2,
        tags=tags,
        title_fallback=title_fallback,
    ) as writer:
        writer.write_all(dict.fromkeys(paths, audio))
    return paths


def test_wav_stems_get_an_id3_chunk(tmp_path: Path) -> None:
    tags = read_tags(_make(tmp_path, "mp3", _tag_mp3))
    paths = _write_stems(tmp_path, "wav", tags)
    id3 = mutagen.wave.WAVE(paths["vocals"]).tags
    assert str(id3["TIT2"]) == "Song Ä (vocals)"
    assert str(id3["TPE1"]) == "The Band" and str(id3["TALB"]) == "Album"
    assert str(id3["TRCK"]) == "3/12" and str(id3["TDRC"]) == "1997"
    assert id3.getall("APIC")[0].data == COVER
    assert str(mutagen.wave.WAVE(paths["drums"]).tags["TIT2"]) == "Song Ä (drums)"
    assert sf.info(paths["vocals"]).frames == 22050  # the audio is intact after tagging


def test_flac_stems_get_vorbis_comments_and_a_picture(tmp_path: Path) -> None:
    tags = read_tags(_make(tmp_path, "m4a", _tag_m4a))
    paths = _write_stems(tmp_path, "flac", tags)
    flac = mutagen.flac.FLAC(paths["drums"])
    assert flac["title"] == ["Song Ä (drums)"]
    assert flac["artist"] == ["The Band"] and flac["album"] == ["Album"]
    assert flac["tracknumber"] == ["3"] and flac["tracktotal"] == ["12"] and flac["date"] == ["1997"]
    assert [(p.data, p.mime, p.type) for p in flac.pictures] == [(COVER, "image/png", 3)]
    assert sf.info(paths["drums"]).frames == 22050


def test_mp3_stems_get_id3_and_keep_their_length(tmp_path: Path) -> None:
    tags = read_tags(_make(tmp_path, "flac", _tag_flac))
    paths = _write_stems(tmp_path, "mp3", tags)
    id3 = mutagen.id3.ID3(paths["vocals"])
    assert str(id3["TIT2"]) == "Song Ä (vocals)"
    assert id3.getall("APIC")[0].data == COVER
    assert sf.info(paths["vocals"]).frames == 22050


def test_untitled_input_uses_the_fallback_title(tmp_path: Path) -> None:
    paths = _write_stems(tmp_path, "flac", TrackTags(artist="X"), title_fallback="my song")
    assert mutagen.flac.FLAC(paths["vocals"])["title"] == ["my song (vocals)"]


def test_no_tags_means_untagged_stems(tmp_path: Path) -> None:
    paths = _write_stems(tmp_path, "flac", tags=None)  # type: ignore[arg-type]
    assert not mutagen.flac.FLAC(paths["vocals"]).tags


def _make(tmp_path: Path, ext: str, make) -> Path:
    path = tmp_path / f"input.{ext}"
    make(path)
    return path
