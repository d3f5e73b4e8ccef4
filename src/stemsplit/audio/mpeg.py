"""Recognise, by its first bytes, a file that libsndfile could take for MPEG audio (MP3).

libsndfile takes a file for MPEG audio by a ``.mp3`` name or by its content, and hands it to libmpg123,
which prints its complaints about damaged frames (``Note: Illegal Audio-MPEG-Header …``) straight to the
process's stderr, even while only probing. :func:`may_be_mpeg_audio` lets the prober send such a file,
whatever its name, to FFmpeg instead, which says what is wrong through exceptions. It errs on the side of
MPEG: libsndfile was measured to take a file for MPEG on a frame sync alone (a valid frame header followed
by zeros; a WebM whose first two bytes became ``0xFFFF``), and FFmpeg reads what libsndfile would.

An MPEG audio frame header (ISO/IEC 11172-3 §2.4.2.3, 13818-3) starts with 11 set sync bits; an ID3v2 tag
(id3.org, ID3v2.4 §3.1) starts with ``ID3``.
"""

from __future__ import annotations

from pathlib import Path


def may_be_mpeg_audio(path: Path) -> bool:
    """Whether ``path`` starts with an ID3v2 tag or an MPEG frame sync (reads 3 bytes).

    Raises:
        OSError: the file cannot be read.
    """
    with path.open("rb") as fh:
        head = fh.read(3)
    return head == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
