"""An independent MP4 box reader for the tests: it shares no code with ``stemsplit.audio.isobmff``.

Written from ISO/IEC 14496-12: a box is ``size:u32 type:4cc``, ``size == 1`` puts a ``u64`` size after
the type, ``size == 0`` runs to the end of the enclosing space.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

_DESCEND = {"moov", "trak", "mdia", "minf", "stbl", "udta", "edts", "dinf"}


@dataclass
class Node:
    type: str
    start: int  # absolute byte position of the box
    body: int  # absolute byte position of the payload
    end: int  # absolute byte position after the box
    children: list[Node] = field(default_factory=list)

    def get(self, *path: str) -> list[Node]:
        """Every descendant reached by following ``path`` (one type per level)."""
        found = [self]
        for kind in path:
            found = [c for n in found for c in n.children if c.type == kind]
        return found


def _walk(data: bytes, start: int, end: int) -> list[Node]:
    nodes = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = pos + 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            body = pos + 16
        elif size == 0:
            size = end - pos
        assert size >= body - pos and pos + size <= end, f"bad box at {pos}"
        node = Node(kind.decode("latin-1"), pos, body, pos + size)
        if node.type in _DESCEND:
            node.children = _walk(data, body, pos + size)
        elif node.type == "meta":  # a full box: version and flags come first
            node.children = _walk(data, body + 4, pos + size)
        nodes.append(node)
        pos += size
    assert pos == end, "trailing bytes"
    return nodes


@dataclass
class Mp4:
    data: bytes
    top: list[Node]

    @classmethod
    def read(cls, path: Path) -> Mp4:
        data = path.read_bytes()
        return cls(data, _walk(data, 0, len(data)))

    @property
    def order(self) -> list[str]:
        return [n.type for n in self.top]

    @property
    def moov(self) -> Node:
        (moov,) = [n for n in self.top if n.type == "moov"]
        return moov

    def payload(self, node: Node) -> bytes:
        return self.data[node.body : node.end]

    def tkhd_flags(self) -> list[int]:
        return [int.from_bytes(self.payload(t)[1:4], "big") for t in self.moov.get("trak", "tkhd")]

    def chunk_offsets(self) -> list[list[int]]:
        """Per track, the chunk offsets from its stco or co64 table."""
        tables = []
        for stbl in self.moov.get("trak", "mdia", "minf", "stbl"):
            (table,) = [c for c in stbl.children if c.type in ("stco", "co64")]
            raw = self.payload(table)
            count = struct.unpack(">I", raw[4:8])[0]
            width = 4 if table.type == "stco" else 8
            fmt = ">" + ("I" if width == 4 else "Q") * count
            tables.append(list(struct.unpack(fmt, raw[8 : 8 + width * count])))
        return tables

    def mdat_ranges(self) -> list[tuple[int, int]]:
        return [(n.body, n.end) for n in self.top if n.type == "mdat"]

    def offsets_inside_mdat(self) -> bool:
        ranges = self.mdat_ranges()
        return all(any(a <= o < b for a, b in ranges) for table in self.chunk_offsets() for o in table)

    def stem_manifest(self) -> dict:
        (stem,) = self.moov.get("udta", "stem")
        return json.loads(self.payload(stem).decode("utf-8"))
