"""Recognising MPEG audio by content (``audio/mpeg.py``), checked against files LAME (through libsndfile)
wrote, and the prober's use of it (#12: no libmpg123 noise for a ``.mp3`` that is not MPEG audio)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemsplit.audio import probe
from stemsplit.audio.mpeg import frame_length, starts_like_mpeg_audio


def _mp3_bytes(rate: int, level: float, seconds: float = 0.5) -> bytes:
    noise = 0.1 * np.random.default_rng(rate).standard_normal((int(rate * seconds), 2))
    buffer = io.BytesIO()
    sf.write(
        buffer, noise.astype(np.float32), rate, format="MP3", compression_level=level, bitrate_mode="CONSTANT"
    )
    return buffer.getvalue()


# MPEG-1 (48/44.1/32 kHz), MPEG-2 (24/22.05/16 kHz) and MPEG-2.5 (11.025/8 kHz), high to low bitrates.
@pytest.mark.parametrize("rate", [48000, 44100, 32000, 22050, 16000, 11025, 8000])
@pytest.mark.parametrize("level", [0.0, 0.5, 0.9])
def test_frame_lengths_walk_an_encoded_file_frame_by_frame_to_its_end(rate: int, level: float) -> None:
    data = _mp3_bytes(rate, level)
    offset = frames = 0
    while offset < len(data):
        length = frame_length(data[offset : offset + 4])
        assert length is not None and length > 0, (offset, data[offset : offset + 4])
        offset += length
        frames += 1
    assert offset == len(data) and frames > 1


def _id3(size: int) -> bytes:
    """An ID3v2.4 header for a tag of ``size`` bytes (syncsafe), and the tag's padding."""
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + syncsafe + b"\x00" * size


def test_what_starts_like_mpeg_audio(tmp_path: Path) -> None:
    cases = {
        "plain.mp3": _mp3_bytes(44100, 0.5),
        "tagged.mp3": _id3(3000) + _mp3_bytes(44100, 0.5),  # cover art and tags come first
        "text.mp3": b"this is not an mp3\n" * 20,
        "tag-only.mp3": _id3(40) + b"no audio after the tag",
        "one-header.mp3": _mp3_bytes(44100, 0.5)[:4] + b"garbage" * 200,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    assert {name: starts_like_mpeg_audio(tmp_path / name) for name in cases} == {
        "plain.mp3": True, "tagged.mp3": True, "text.mp3": False, "tag-only.mp3": False,
        "one-header.mp3": False,
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
