"""A small ISO base media (MP4) box editor: edit ``moov`` and write the file again with valid offsets.

One job: take an MP4 file a muxer wrote, change boxes inside its ``moov`` (track flags, user data),
and write it to a new file with ``moov`` before or after the media data. Every chunk offset
(``stco``/``co64``) is moved to where its bytes now lie, and an ``stco`` table that would overflow
32 bits becomes a ``co64`` table. ``free``/``skip`` padding at the top level is dropped; every other
top-level box is copied byte for byte (its header rewritten in the canonical size form).

A box is ``size:u32 type:4cc payload``, with ``size == 1`` meaning a ``u64`` size after the type and
``size == 0`` (top level only) meaning "to the end of the file". Only the containers on the paths this
module edits are parsed (``moov``, ``trak``, ``mdia``, ``minf``, ``stbl``, ``udta``); every other box
is kept as opaque bytes, so boxes this module does not know survive unchanged.

Fragmented files (``moof``) are refused: their offsets live in track fragment headers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "udta"})
"""The container boxes parsed into children; every other box is a leaf of opaque bytes."""

PADDING = frozenset({"free", "skip"})
"""Top-level boxes dropped by :func:`rewrite` (padding a muxer left)."""

TRACK_ENABLED = 0x000001
"""The ``tkhd`` flag of a track that players play (ISO/IEC 14496-12 §8.3.2)."""

_U32_MAX = 0xFFFFFFFF
_COPY_CHUNK = 1 << 20


class BoxError(ValueError):
    """The file is not an MP4 this editor can rewrite (truncated, fragmented, no ``moov`` ...)."""


@dataclass(slots=True)
class Box:
    """One box: a leaf with opaque ``data``, or a container with ``children``.

    Attributes:
        type: the four-character type (latin-1).
        data: a leaf's payload (empty for a container).
        children: a container's boxes in order; ``None`` for a leaf.
    """

    type: str
    data: bytes = b""
    children: list[Box] | None = None

    def encode(self) -> bytes:
        """The box as bytes: a 32-bit size header, or a 64-bit one when it is needed."""
        payload = self.data if self.children is None else b"".join(c.encode() for c in self.children)
        return box_header(self.type, len(payload)) + payload

    def child(self, kind: str) -> Box | None:
        """The first child of type ``kind``, or ``None``."""
        return next((c for c in self.children or () if c.type == kind), None)

    def walk(self) -> Iterator[Box]:
        """This box and every box below it, depth first, in file order."""
        yield self
        for c in self.children or ():
            yield from c.walk()


def box_header(kind: str, payload_size: int) -> bytes:
    """The header of a box of type ``kind`` whose payload is ``payload_size`` bytes."""
    code = kind.encode("latin-1")
    if len(code) != 4:
        raise ValueError(f"a box type has four characters, not {kind!r}")
    if payload_size + 8 <= _U32_MAX:
        return struct.pack(">I4s", payload_size + 8, code)
    return struct.pack(">I4sQ", 1, code, payload_size + 16)


def parse_boxes(data: bytes) -> list[Box]:
    """Parse a run of boxes (a container's payload); containers in :data:`CONTAINERS` recursively.

    Raises:
        BoxError: a box runs past the end of ``data`` or has an impossible size.
    """
    boxes = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8:
            raise BoxError(f"{len(data) - pos} stray bytes where a box header should be")
        size, code = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if len(data) - pos < 16:
                raise BoxError("a 64-bit box header is cut short")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = len(data) - pos
        kind = code.decode("latin-1")
        if size < header or pos + size > len(data):
            raise BoxError(f"box {kind!r} at byte {pos} has size {size}, beyond its parent")
        payload = data[pos + header : pos + size]
        if kind in CONTAINERS:
            boxes.append(Box(kind, children=parse_boxes(payload)))
        else:
            boxes.append(Box(kind, data=payload))
        pos += size
    return boxes


@dataclass(frozen=True, slots=True)
class TopBox:
    """A top-level box located in a file (its payload is not read).

    Attributes:
        type: four-character type.
        offset: byte position of the box's first header byte.
        header: header length (8, or 16 for a 64-bit size).
        size: the whole box, header included (bytes).
    """

    type: str
    offset: int
    header: int
    size: int

    @property
    def payload_start(self) -> int:
        """Byte position of the first payload byte."""
        return self.offset + self.header

    @property
    def payload_size(self) -> int:
        """Payload length (bytes)."""
        return self.size - self.header


def scan(f: BinaryIO) -> list[TopBox]:
    """List the top-level boxes of the open file ``f`` (reads only their headers).

    Raises:
        BoxError: a header is cut short or a box runs past the end of the file.
    """
    end = f.seek(0, 2)
    boxes = []
    pos = 0
    while pos < end:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise BoxError(f"{end - pos} stray bytes at the end of the file")
        size, code = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if len(head) < 16:
                raise BoxError("a 64-bit box header is cut short")
            (size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        elif size == 0:
            size = end - pos
        kind = code.decode("latin-1")
        if size < header or pos + size > end:
            raise BoxError(f"top-level box {kind!r} at byte {pos} has size {size}; the file is truncated")
        boxes.append(TopBox(kind, pos, header, size))
        pos += size
    return boxes


# --- edits -------------------------------------------------------------------------------------


def tracks(moov: Box) -> list[Box]:
    """The ``trak`` boxes of a ``moov``, in file order."""
    return [c for c in moov.children or () if c.type == "trak"]


def track_flags(trak: Box) -> int:
    """The 24-bit ``tkhd`` flags of a track.

    Raises:
        BoxError: the track has no (complete) ``tkhd``.
    """
    return int.from_bytes(_tkhd(trak).data[1:4], "big")


def set_track_enabled(trak: Box, enabled: bool) -> None:
    """Set or clear the track's ``track_enabled`` flag, keeping its other flags."""
    tkhd = _tkhd(trak)
    flags = track_flags(trak)
    flags = flags | TRACK_ENABLED if enabled else flags & ~TRACK_ENABLED
    tkhd.data = tkhd.data[:1] + flags.to_bytes(3, "big") + tkhd.data[4:]


def set_user_data(moov: Box, kind: str, payload: bytes) -> None:
    """Put a ``moov/udta/<kind>`` box holding ``payload``, replacing any box of that type there."""
    assert moov.children is not None
    udta = moov.child("udta")
    if udta is None:
        udta = Box("udta", children=[])
        moov.children.append(udta)
    assert udta.children is not None
    udta.children[:] = [c for c in udta.children if c.type != kind]
    udta.children.append(Box(kind, data=payload))


def _tkhd(trak: Box) -> Box:
    tkhd = trak.child("tkhd")
    if tkhd is None or len(tkhd.data) < 4:
        raise BoxError("a track has no track header (tkhd)")
    return tkhd


# --- chunk offsets -----------------------------------------------------------------------------


def chunk_offsets(table: Box) -> npt.NDArray[np.uint64]:
    """The entries of an ``stco`` or ``co64`` box.

    Raises:
        BoxError: the table is shorter than its entry count says.
    """
    width = 4 if table.type == "stco" else 8
    if len(table.data) < 8:
        raise BoxError(f"{table.type} box cut short")
    (count,) = struct.unpack_from(">I", table.data, 4)
    if len(table.data) < 8 + count * width:
        raise BoxError(f"{table.type} box holds fewer than its {count} entries")
    values = np.frombuffer(table.data, dtype=">u4" if width == 4 else ">u8", count=count, offset=8)
    return values.astype(np.uint64)


def set_chunk_offsets(table: Box, offsets: npt.NDArray[np.uint64]) -> None:
    """Store ``offsets`` in the table, turning an ``stco`` into a ``co64`` when one exceeds 32 bits."""
    if table.type == "stco" and offsets.size and int(offsets.max()) > _U32_MAX:
        table.type = "co64"
    dtype = ">u4" if table.type == "stco" else ">u8"
    version_flags = table.data[:4]
    table.data = version_flags + struct.pack(">I", offsets.size) + offsets.astype(dtype).tobytes()


def _relocate(
    offsets: npt.NDArray[np.uint64], old: list[TopBox], new_start: list[int]
) -> npt.NDArray[np.uint64]:
    """Move each offset by the shift of the kept top-level box whose payload holds it."""
    starts = np.array([b.payload_start for b in old], dtype=np.uint64)
    ends = np.array([b.payload_start + b.payload_size for b in old], dtype=np.uint64)
    index = np.searchsorted(starts, offsets, side="right").astype(np.int64) - 1
    inside = (index >= 0) & (offsets < ends[np.maximum(index, 0)])
    if not inside.all():
        stray = int(offsets[~inside][0])
        raise BoxError(f"chunk offset {stray} lies outside every media data box")
    shift = np.array(new_start, dtype=np.int64) - starts.astype(np.int64)
    moved: npt.NDArray[np.uint64] = (offsets.astype(np.int64) + shift[index]).astype(np.uint64)
    return moved


# --- rewriting a file --------------------------------------------------------------------------


def _load_moov(f: BinaryIO, top: list[TopBox]) -> Box:
    moovs = [b for b in top if b.type == "moov"]
    if len(moovs) != 1:
        raise BoxError(f"expected one movie box (moov), found {len(moovs)}")
    if any(b.type == "moof" for b in top):
        raise BoxError("fragmented MP4 (moof) is not supported")
    f.seek(moovs[0].payload_start)
    payload = f.read(moovs[0].payload_size)
    if len(payload) != moovs[0].payload_size:
        raise BoxError("the movie box (moov) is cut short")
    return Box("moov", children=parse_boxes(payload))


def rewrite(
    source: Path | str, target: Path | str, edit: Callable[[Box], None], *, moov_first: bool = True
) -> None:
    """Write ``source`` to ``target`` with its ``moov`` changed by ``edit`` and chunk offsets fixed.

    The new file holds ``ftyp`` (if any), then ``moov`` when ``moov_first`` (what streaming players
    and MP4Box write), then every other top-level box in its original order except ``free``/``skip``;
    with ``moov_first=False`` the ``moov`` comes last. ``source`` is left untouched.

    Args:
        source: the MP4 to read.
        target: the file to create (overwritten).
        edit: changes the parsed ``moov`` in place (it must not touch ``stco``/``co64``).
        moov_first: place ``moov`` before the media data.

    Raises:
        BoxError: the source is not an MP4 this editor handles, or an offset points outside the data.
        OSError: reading or writing failed.
    """
    with open(source, "rb") as src:
        top = scan(src)
        moov = _load_moov(src, top)
        edit(moov)
        data = [b for b in top if b.type not in PADDING and b.type not in ("moov", "ftyp")]
        ftyp = [b for b in top if b.type == "ftyp"][:1]
        order: list[TopBox | None] = [*ftyp, None, *data] if moov_first else [*ftyp, *data, None]
        tables = [b for b in moov.walk() if b.type in ("stco", "co64")]
        original = [chunk_offsets(t) for t in tables]
        moov_size = len(moov.encode())
        while True:  # widening stco to co64 grows moov, which moves the data again: repeat until stable
            old, new = _moves(order, moov_size)
            for table, offsets in zip(tables, original, strict=True):
                set_chunk_offsets(table, _relocate(offsets, old, new))
            moov_bytes = moov.encode()
            if len(moov_bytes) == moov_size:
                break
            moov_size = len(moov_bytes)
        with open(target, "wb") as dst:
            for box in order:
                if box is None:
                    dst.write(moov_bytes)
                else:
                    _copy_box(src, dst, box)


def _moves(order: list[TopBox | None], moov_size: int) -> tuple[list[TopBox], list[int]]:
    """The kept boxes sorted by their old position, and where each one's payload starts in the new file.

    ``order`` is the new file's sequence of boxes, ``None`` standing for the ``moov`` of ``moov_size``.
    """
    moved = []
    pos = 0
    for box in order:
        if box is None:
            pos += moov_size
            continue
        header = len(box_header(box.type, box.payload_size))
        moved.append((box, pos + header))
        pos += header + box.payload_size
    moved.sort(key=lambda pair: pair[0].offset)
    return [b for b, _ in moved], [start for _, start in moved]


def _copy_box(src: BinaryIO, dst: BinaryIO, box: TopBox) -> None:
    dst.write(box_header(box.type, box.payload_size))
    src.seek(box.payload_start)
    remaining = box.payload_size
    while remaining:
        chunk = src.read(min(remaining, _COPY_CHUNK))
        if not chunk:
            raise BoxError(f"the file ends inside box {box.type!r}")
        dst.write(chunk)
        remaining -= len(chunk)
