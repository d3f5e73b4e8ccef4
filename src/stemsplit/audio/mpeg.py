"""Recognise MPEG audio (MP3) by its content: an ID3v2 tag, then two consecutive valid frame headers.

libsndfile recognises MPEG audio by a ``.mp3`` name or by its content and hands it to libmpg123, which
prints its complaints about damaged frames (``Note: Illegal Audio-MPEG-Header …``) straight to the
process's stderr. :func:`starts_like_mpeg_audio` lets the prober send MPEG audio, whatever its name, to
FFmpeg instead, which says what is wrong through exceptions.

Frame header layout (ISO/IEC 11172-3 §2.4.2.3, 13818-3): 11 sync bits, version (2), layer (2),
protection (1), bitrate index (4), sample-rate index (2), padding (1), then bits that do not change the
frame length. An ID3v2 tag (id3.org, ID3v2.4 §3.1) is 10 bytes of header, a "syncsafe" size (7 bits per
byte) and an optional 10-byte footer.
"""

from __future__ import annotations

from pathlib import Path

# kbit/s per bitrate index 1..14, for (MPEG-1?, layer).
_BITRATES: dict[tuple[bool, int], tuple[int, ...]] = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Hz per sample-rate index 0..2, for the version bits 0 (MPEG-2.5), 2 (MPEG-2), 3 (MPEG-1).
_RATES = {0: (11025, 12000, 8000), 2: (22050, 24000, 16000), 3: (44100, 48000, 32000)}

FREE_FORMAT = -1
"""What :func:`frame_length` returns for a valid header in free format (bitrate index 0): its length
is not in the header."""


def frame_length(header: bytes) -> int | None:
    """The length in bytes of the MPEG audio frame that starts with these 4 bytes, or None when they are
    not a valid frame header (:data:`FREE_FORMAT` for a valid free-format one)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index == 15 or rate_index == 3:
        return None  # reserved values
    if bitrate_index == 0:
        return FREE_FORMAT
    mpeg1, layer = version == 3, 4 - layer_bits
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per_frame = 144 if mpeg1 or layer == 2 else 72  # MPEG-2/2.5 layer III frames hold half the samples
    return per_frame * bitrate // rate + padding


def _id3_size(head: bytes) -> int:
    """The bytes an ID3v2 tag at the start of ``head`` takes (0 without one)."""
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return 0
    size = 0
    for byte in head[6:10]:  # syncsafe: 7 bits per byte
        size = size << 7 | byte
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def starts_like_mpeg_audio(path: Path) -> bool:
    """Whether ``path`` begins as MPEG audio does: after any ID3v2 tag, a valid frame header followed,
    where its length says, by another (the check decoders sync on). Reads a few kilobytes.

    Raises:
        OSError: the file cannot be read.
    """
    with path.open("rb") as fh:
        start = _id3_size(fh.read(10))
        fh.seek(start)
        head = fh.read(8192)
    length = frame_length(head[:4])
    if length is None:
        return False
    if length == FREE_FORMAT:
        return True  # rare, and not checkable without decoding: the decoder decides
    return frame_length(head[length : length + 4]) is not None
