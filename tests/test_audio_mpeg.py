"""Recognising what libsndfile could take for MPEG audio (``audio/mpeg.py``), and the prober's use of it:
MPEG audio goes to FFmpeg, so that libmpg123 never prints on stderr (#12, #27)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from stemsplit.audio import probe
from stemsplit.audio.mpeg import may_be_mpeg_audio


def _mp3_bytes(rate: int, level: float, seconds: float = 0.5) -> bytes:
    noise = 0.1 * np.random.default_rng(rate).standard_normal((int(rate * seconds), 2))
    buffer = io.BytesIO()
    sf.write(
        buffer, noise.astype(np.float32), rate, format="MP3", compression_level=level, bitrate_mode="CONSTANT"
    )
    return buffer.getvalue()


def _id3(size: int) -> bytes:
    """An ID3v2.4 header for a tag of ``size`` bytes (syncsafe), and the tag's padding."""
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + syncsafe + b"\x00" * size


def test_what_may_be_mpeg_audio(tmp_path: Path) -> None:
    cases = {
        "plain.mp3": _mp3_bytes(44100, 0.5),
        "tagged.mp3": _id3(3000) + _mp3_bytes(44100, 0.5),  # cover art and tags come first
        "one-header.opus": _mp3_bytes(44100, 0.5)[:4] + bytes(200),  # libsndfile takes it for MPEG
        "sync.webm": b"\xff\xff\x45\xdf" + bytes(200),  # so too (a WebM whose first bytes became 0xFF)
        "text.mp3": b"this is not an mp3\n" * 20,
        "wave.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
        "empty": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    assert {name: may_be_mpeg_audio(tmp_path / name) for name in cases} == {
        "plain.mp3": True, "tagged.mp3": True, "one-header.opus": True, "sync.webm": True,
        "text.mp3": False, "wave.wav": False, "empty": False,
    }  # fmt: skip


def test_mpeg_audio_is_probed_by_ffmpeg_whatever_its_name(tmp_path: Path) -> None:
    """libsndfile would hand MPEG audio to libmpg123, which prints on stderr (#27): it goes to FFmpeg."""
    content = _id3(500) + _mp3_bytes(44100, 0.5)
    for name in ("real.mp3", "mislabelled.wav", "no-extension"):
        (tmp_path / name).write_bytes(content)
        info = probe(tmp_path / name)
        assert (info.backend, info.codec) == ("pyav", "mp3")
    tone = np.zeros((4410, 2), np.float32)
    sf.write(str(tmp_path / "wave.wav"), tone, 44100)
    (tmp_path / "wave.wav").rename(tmp_path / "misnamed.mp3")
    misnamed = probe(tmp_path / "misnamed.mp3")
    assert (misnamed.backend, misnamed.frames, misnamed.channels) == ("pyav", 4410, 2)
