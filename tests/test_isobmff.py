"""The MP4 box editor (issue #18): moov moved either way, chunk offsets fixed, flags and user data set."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from audio_fixtures import sweep
from mp4_boxes import Mp4
from stemsplit.audio import isobmff

RATE = 44100


def mux(
    path: Path, *, tracks: int = 3, codec: str = "aac", seconds: float = 1.0, faststart: bool = False
) -> None:
    """A multi-track MP4 from PyAV; ``faststart`` has FFmpeg put moov before mdat itself."""
    options = {"movflags": "+faststart"} if faststart else {}
    n = round(RATE * seconds)
    with av.open(str(path), "w", format="mp4", container_options=options) as container:
        fmt = "fltp" if codec == "aac" else "s16p"
        streams = [container.add_stream(codec, rate=RATE, layout="stereo", format=fmt) for _ in range(tracks)]
        for start in range(0, n, 4096):
            for k, stream in enumerate(streams):
                block = (sweep(RATE, seconds, f0=100.0 * (k + 1))[:, start : start + 4096] * 0.5).astype(
                    np.float32
                )
                data = block if fmt == "fltp" else np.round(block * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
                frame.sample_rate, frame.pts = RATE, start
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in streams:
            for packet in stream.encode(None):
                container.mux(packet)


def packets(path: Path) -> list[list[bytes]]:
    """Every stream's packet payloads, in order: what must survive a rewrite byte for byte."""
    with av.open(str(path)) as container:
        out: list[list[bytes]] = [[] for _ in container.streams]
        for packet in container.demux():
            if packet.size:
                out[packet.stream.index].append(bytes(packet))
    return out


def nothing(moov: isobmff.Box) -> None:
    pass


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-last-input", "moov-first-input"])
@pytest.mark.parametrize("moov_first", [True, False], ids=["moov-first-output", "moov-last-output"])
def test_rewrite_moves_moov_and_keeps_every_packet(tmp_path: Path, faststart: bool, moov_first: bool) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    mux(src, faststart=faststart)
    assert Mp4.read(src).order.index("moov") < Mp4.read(src).order.index("mdat") if faststart else True

    def grow(moov: isobmff.Box) -> None:  # makes moov 100 kB larger, so the data must move
        isobmff.set_user_data(moov, "test", bytes(100_000))

    isobmff.rewrite(src, dst, grow, moov_first=moov_first)
    out = Mp4.read(dst)
    assert out.order == (["ftyp", "moov", "mdat"] if moov_first else ["ftyp", "mdat", "moov"])
    assert out.offsets_inside_mdat()
    assert out.chunk_offsets() != Mp4.read(src).chunk_offsets() or not moov_first
    assert packets(dst) == packets(src)


def test_rewrite_leaves_the_source_alone_and_drops_only_padding(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    mux(src)
    extra = struct.pack(">I4s", 8 + 20, b"uuid") + bytes(range(20))
    src.write_bytes(src.read_bytes() + struct.pack(">I4s", 16, b"free") + bytes(8) + extra)
    before = src.read_bytes()
    isobmff.rewrite(src, dst, nothing)
    assert src.read_bytes() == before
    out = Mp4.read(dst)
    assert out.order == ["ftyp", "moov", "mdat", "uuid"]  # both free boxes dropped, the unknown box kept
    assert dst.read_bytes().endswith(extra)
    assert packets(dst) == packets(src)


def test_track_flags_and_user_data(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    mux(src)
    assert [f & 1 for f in Mp4.read(src).tkhd_flags()] == [1, 0, 0]  # FFmpeg enables the first track

    def edit(moov: isobmff.Box) -> None:
        for k, trak in enumerate(isobmff.tracks(moov)):
            isobmff.set_track_enabled(trak, k != 0)  # the opposite of what FFmpeg chose
        isobmff.set_user_data(moov, "stem", b'{"first": 1}')
        isobmff.set_user_data(moov, "stem", b'{"version": 1}')  # replaces, never duplicates

    isobmff.rewrite(src, dst, edit)
    out = Mp4.read(dst)
    before = Mp4.read(src).tkhd_flags()
    after = out.tkhd_flags()
    assert [f & 1 for f in after] == [0, 1, 1]
    assert [f & ~1 for f in after] == [f & ~1 for f in before]  # the other flags are kept
    assert out.stem_manifest() == {"version": 1}
    assert len(out.moov.get("udta", "meta")) == 1  # FFmpeg's tags are still there


def test_a_moov_without_user_data_gets_one(tmp_path: Path) -> None:
    moov = isobmff.Box("moov", children=[isobmff.Box("mvhd", data=bytes(100))])
    isobmff.set_user_data(moov, "stem", b"{}")
    assert [c.type for c in moov.children or ()] == ["mvhd", "udta"]
    assert isobmff.parse_boxes(moov.encode())[0].child("udta") == isobmff.Box(
        "udta", children=[isobmff.Box("stem", data=b"{}")]
    )


def test_offsets_beyond_32_bits_widen_stco_to_co64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lowering the 32-bit limit stands in for a > 4 GB file: tables widen, and box sizes go 64-bit."""
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    mux(src, codec="alac")
    limit = 1_000  # below the size of moov: widening stco grows it and moves the data again
    monkeypatch.setattr(isobmff, "_U32_MAX", limit)
    isobmff.rewrite(src, dst, nothing)
    out = Mp4.read(dst)
    tables = [c.type for stbl in out.moov.get("trak", "mdia", "minf", "stbl") for c in stbl.children]
    assert "co64" in tables and "stco" not in tables
    assert out.data[out.moov.start : out.moov.start + 4] == b"\x00\x00\x00\x01"  # 64-bit size header
    assert out.offsets_inside_mdat()
    assert min(min(t) for t in out.chunk_offsets()) > limit
    assert packets(dst) == packets(src)


def test_set_chunk_offsets_keeps_stco_when_it_fits() -> None:
    table = isobmff.Box("stco", data=bytes(4) + struct.pack(">II", 1, 10))
    isobmff.set_chunk_offsets(table, np.array([20, 30], dtype=np.uint64))
    assert table.type == "stco" and table.data == bytes(4) + struct.pack(">III", 2, 20, 30)
    isobmff.set_chunk_offsets(table, np.array([2**32 + 5], dtype=np.uint64))
    assert table.type == "co64" and table.data == bytes(4) + struct.pack(">IQ", 1, 2**32 + 5)
    np.testing.assert_array_equal(isobmff.chunk_offsets(table), [2**32 + 5])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) - 100], "truncated"),
        (lambda data: data + struct.pack(">I4s", 8, b"moof"), "fragmented"),
        (lambda data: data.replace(b"moov", b"mooX", 1), "moov"),
        (lambda data: data + b"\x00\x00\x00", "stray bytes"),
    ],
)
def test_files_it_cannot_rewrite_are_refused(tmp_path: Path, damage, message: str) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    mux(src, tracks=1)
    src.write_bytes(damage(src.read_bytes()))
    with pytest.raises(isobmff.BoxError, match=message):
        isobmff.rewrite(src, dst, nothing)


def test_a_chunk_offset_outside_the_media_data_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    mux(src, tracks=1)

    def corrupt(moov: isobmff.Box) -> None:
        (table,) = [b for b in moov.walk() if b.type == "stco"]
        isobmff.set_chunk_offsets(table, np.array([3], dtype=np.uint64))  # inside ftyp's header

    with pytest.raises(isobmff.BoxError, match="outside every media data box"):
        isobmff.rewrite(src, dst, corrupt)


def test_a_box_that_overruns_its_parent_is_refused() -> None:
    with pytest.raises(isobmff.BoxError, match="beyond its parent"):
        isobmff.parse_boxes(struct.pack(">I4s", 100, b"trak") + bytes(10))
