"""Copy tags and cover art from an input file onto stems, with mutagen.

Read from anything mutagen reads: ID3 (mp3, wav, aiff), Vorbis comments (flac, ogg, opus, with FLAC
``PICTURE`` blocks or ``METADATA_BLOCK_PICTURE``), MP4 atoms (m4a). Written in each output's own tag
format: wav gets an ID3v2.4 ``id3`` chunk, flac Vorbis comments plus ``PICTURE`` blocks, mp3 an ID3v2.4
tag, a ``stem.mp4`` iTunes atoms in ``moov/udta/meta/ilst`` (MP4 covers are JPEG or PNG; other images
are left out). The stem's name is appended to the title: ``Song`` becomes ``Song (vocals)``; an input without a
title uses its file name (``song.mp3`` gives ``song (vocals)``).

Tags are a courtesy: a file whose tags cannot be read or written gives a
:class:`~stemsplit.errors.TagCopyWarning`, never an error.
"""

# mutagen is only partly annotated; its untyped calls are confined to this module.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import mutagen
import mutagen.flac
import mutagen.id3
import mutagen.mp4
import mutagen.wave

from stemsplit.errors import TagCopyWarning

TagFormat = Literal["wav", "flac", "mp3", "stem.mp4"]

FRONT_COVER = 3
"""The ID3/FLAC picture type of a front cover."""


@dataclass(frozen=True, slots=True)
class Picture:
    """An embedded image.

    Attributes:
        data: the encoded image bytes (JPEG, PNG, …).
        mime: its MIME type (``image/jpeg``).
        kind: ID3/FLAC picture type (3 = front cover).
        description: free text.
    """

    data: bytes
    mime: str
    kind: int = FRONT_COVER
    description: str = ""


@dataclass(frozen=True, slots=True)
class TrackTags:
    """The tags stemsplit copies. Every field is optional.

    Attributes:
        title, artist, album: as written in the source.
        track: the track number as ID3 writes it: ``"3"`` or ``"3/12"``.
        date: the release date or year as written in the source (``"1997"``, ``"1997-05-21"``).
        pictures: embedded images, cover art first.
    """

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    track: str | None = None
    date: str | None = None
    pictures: tuple[Picture, ...] = ()

    @property
    def year(self) -> str | None:
        """The first four characters of :attr:`date`, if they are digits."""
        return self.date[:4] if self.date and self.date[:4].isdigit() else None

    def for_stem(self, stem: str, fallback_title: str) -> TrackTags:
        """These tags with ``" (stem)"`` appended to the title (``fallback_title`` when there is none)."""
        return replace(self, title=f"{self.title or fallback_title} ({stem})")


def read_tags(path: Path | str) -> TrackTags:
    """Read the copyable tags of ``path``; an untagged or unreadable file gives empty tags.

    A file mutagen fails on gives a :class:`~stemsplit.errors.TagCopyWarning` and empty tags.
    """
    path = Path(path)
    try:
        handle = mutagen.File(str(path))
    except (mutagen.MutagenError, OSError, ValueError) as err:
        warnings.warn(f"{path}: tags not read ({err}); stems get no tags", TagCopyWarning, stacklevel=2)
        return TrackTags()
    if handle is None or handle.tags is None:
        return TrackTags()
    tags = handle.tags
    if isinstance(tags, mutagen.id3.ID3):
        return _from_id3(tags)
    if isinstance(tags, mutagen.mp4.MP4Tags):
        return _from_mp4(tags)
    pictures = tuple(_picture(p) for p in getattr(handle, "pictures", ()))  # FLAC PICTURE blocks
    return _from_vorbis(tags, pictures)


def write_tags(path: Path | str, fmt: TagFormat, tags: TrackTags) -> None:
    """Write ``tags`` onto the audio file ``path`` (encoded as ``fmt``), replacing any it has.

    Raises:
        mutagen.MutagenError, OSError: the file could not be tagged (callers turn this into a warning).
    """
    path = str(path)
    if fmt == "flac":
        flac = mutagen.flac.FLAC(path)
        flac.clear_pictures()
        if flac.tags is None:
            flac.add_tags()
        for key, value in _vorbis_fields(tags).items():
            flac[key] = value
        for pic in tags.pictures:
            block = mutagen.flac.Picture()
            block.data, block.mime, block.type, block.desc = pic.data, pic.mime, pic.kind, pic.description
            flac.add_picture(block)
        flac.save()
        return
    if fmt == "stem.mp4":
        mp4 = mutagen.mp4.MP4(path)
        if mp4.tags is None:
            mp4.add_tags()
        assert mp4.tags is not None
        mp4.tags.clear()
        mp4.tags.update(_mp4_atoms(tags))
        mp4.save()
        return
    id3 = mutagen.id3.ID3()
    _fill_id3(id3, tags)
    if fmt == "wav":
        wave = mutagen.wave.WAVE(path)
        if wave.tags is None:
            wave.add_tags()
        assert wave.tags is not None
        wave.tags.update(id3)
        wave.save()
    else:
        id3.save(path, v2_version=4)


# --- reading -----------------------------------------------------------------------------------


def _text(values: Any) -> str | None:
    """The first non-empty string of a tag value (a list, an ID3 frame, a string)."""
    if values is None:
        return None
    items = getattr(values, "text", values)
    if isinstance(items, str):
        items = [items]
    for item in items:
        text = str(item).strip()
        if text:
            return text
    return None


def _from_id3(id3: mutagen.id3.ID3) -> TrackTags:
    return TrackTags(
        title=_text(id3.get("TIT2")),
        artist=_text(id3.get("TPE1")),
        album=_text(id3.get("TALB")),
        track=_text(id3.get("TRCK")),
        date=_text(id3.get("TDRC")) or _text(id3.get("TYER")),
        pictures=tuple(
            Picture(data=f.data, mime=f.mime, kind=int(f.type), description=f.desc)
            for f in id3.getall("APIC")
        ),
    )


def _from_mp4(mp4: mutagen.mp4.MP4Tags) -> TrackTags:
    track: str | None = None
    trkn = mp4.get("trkn")
    if trkn:
        number, total = trkn[0]
        track = f"{number}/{total}" if total else str(number)
    pictures = []
    for cover in mp4.get("covr", []):
        mime = "image/png" if cover.imageformat == mutagen.mp4.MP4Cover.FORMAT_PNG else "image/jpeg"
        pictures.append(Picture(data=bytes(cover), mime=mime))
    return TrackTags(
        title=_text(mp4.get("\xa9nam")),
        artist=_text(mp4.get("\xa9ART")),
        album=_text(mp4.get("\xa9alb")),
        track=track,
        date=_text(mp4.get("\xa9day")),
        pictures=tuple(pictures),
    )


def _from_vorbis(comments: Any, pictures: tuple[Picture, ...]) -> TrackTags:
    track = _text(comments.get("tracknumber"))
    total = _text(comments.get("tracktotal")) or _text(comments.get("totaltracks"))
    if track and total and "/" not in track:
        track = f"{track}/{total}"
    extra = []
    for encoded in comments.get("metadata_block_picture", []):  # Ogg Vorbis / Opus cover art
        try:
            extra.append(_picture(mutagen.flac.Picture(base64.b64decode(encoded))))
        except (ValueError, mutagen.MutagenError):
            continue
    return TrackTags(
        title=_text(comments.get("title")),
        artist=_text(comments.get("artist")),
        album=_text(comments.get("album")),
        track=track,
        date=_text(comments.get("date")) or _text(comments.get("year")),
        pictures=pictures + tuple(extra),
    )


def _picture(block: mutagen.flac.Picture) -> Picture:
    return Picture(data=bytes(block.data), mime=str(block.mime), kind=int(block.type), description=block.desc)


# --- writing -----------------------------------------------------------------------------------


def _vorbis_fields(tags: TrackTags) -> dict[str, str]:
    fields = {"title": tags.title, "artist": tags.artist, "album": tags.album, "date": tags.date}
    if tags.track:
        number, _, total = tags.track.partition("/")
        fields["tracknumber"] = number
        fields["tracktotal"] = total or None
    return {key: value for key, value in fields.items() if value}


def _mp4_atoms(tags: TrackTags) -> dict[str, Any]:
    texts = {"\xa9nam": tags.title, "\xa9ART": tags.artist, "\xa9alb": tags.album, "\xa9day": tags.date}
    atoms: dict[str, Any] = {key: [value] for key, value in texts.items() if value}
    number, _, total = (tags.track or "").partition("/")
    if number.strip().isdigit():
        atoms["trkn"] = [(int(number), int(total) if total.strip().isdigit() else 0)]
    jpeg, png = mutagen.mp4.MP4Cover.FORMAT_JPEG, mutagen.mp4.MP4Cover.FORMAT_PNG
    formats = {"image/jpeg": jpeg, "image/jpg": jpeg, "image/png": png}
    covers = [
        mutagen.mp4.MP4Cover(p.data, imageformat=formats[p.mime]) for p in tags.pictures if p.mime in formats
    ]
    if covers:
        atoms["covr"] = covers
    return atoms


def _fill_id3(id3: mutagen.id3.ID3, tags: TrackTags) -> None:
    frames = {
        mutagen.id3.TIT2: tags.title,
        mutagen.id3.TPE1: tags.artist,
        mutagen.id3.TALB: tags.album,
        mutagen.id3.TRCK: tags.track,
        mutagen.id3.TDRC: tags.date,
    }
    for frame, value in frames.items():
        if value:
            id3.add(frame(encoding=mutagen.id3.Encoding.UTF8, text=[value]))
    for i, pic in enumerate(tags.pictures):
        id3.add(
            mutagen.id3.APIC(
                encoding=mutagen.id3.Encoding.UTF8,
                mime=pic.mime,
                type=pic.kind,
                desc=pic.description or ("" if i == 0 else f"image {i}"),  # APIC keys must be unique
                data=pic.data,
            )
        )
