"""Generated test signals and files for the audio tests (no files are shipped; nothing is downloaded)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import numpy as np


def sweep(samplerate: int, seconds: float, channels: int = 2, *, f0: float = 50.0, f1: float = 15000.0):
    """A logarithmic sine sweep at −6 dBFS, each channel phase-shifted: float32 (channels, frames)."""
    n = round(samplerate * seconds)
    t = np.arange(n) / samplerate
    k = np.log(f1 / f0) / max(seconds, 1e-9)
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    rows = [0.5 * np.sin(phase + 0.7 * c) for c in range(channels)]
    return np.asarray(rows, dtype=np.float32)


def bandlimited_noise(
    samplerate: int,
    seconds: float,
    channels: int = 2,
    *,
    cutoff_hz: float = 16000.0,
    seed: int = 0,
    fade_s: float = 0.0,
):
    """White noise low-passed with an ideal FFT brick wall at ``cutoff_hz``, peak 0.5: (channels, frames).

    ``fade_s`` adds raised-cosine fades at both ends, so that the start and end of the file are not
    steps from silence (a step is not band-limited: any resampler rings on it).
    """
    n = round(samplerate * seconds)
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal((channels, n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1.0 / samplerate)
    spec[:, freqs > cutoff_hz] = 0
    x = np.fft.irfft(spec, n=n, axis=1)
    x = 0.5 * x / np.abs(x).max()
    fade = round(fade_s * samplerate)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        x[:, :fade] *= ramp
        x[:, n - fade :] *= ramp[::-1]
    return x.astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10·log10(‖reference‖² / ‖reference − estimate‖²)."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = reference - np.asarray(estimate, dtype=np.float64)
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum(noise**2), 1e-30)))


def write_pyav(path: Path, audio: np.ndarray, samplerate: int, codec: str, *, bit_rate: int | None = None):
    """Encode float32 (channels, frames) with an FFmpeg encoder through PyAV (for m4a/webm inputs)."""
    channels = audio.shape[0]
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=samplerate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        fmt = stream.codec_context.codec.audio_formats[0]
        frame_size = 1024
        for start in range(0, audio.shape[1], frame_size):
            block = audio[:, start : start + frame_size]
            if fmt.name.startswith("s16"):
                data = np.round(block * 32767).astype(np.int16)
            elif fmt.name.startswith("s32"):
                data = np.round(block.astype(np.float64) * 32767).astype(np.int32) << 16
            else:
                data = block.astype(np.float32)
            if not fmt.is_planar:
                data = data.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.name, layout=layout)
            frame.sample_rate = samplerate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_video_only(path: Path) -> None:
    """A tiny mp4 with one video stream and no audio."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            image = np.full((32, 32, 3), 40 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: int = 4) -> bytes:
    """A valid, tiny RGB PNG image."""
    raw = b"".join(b"\x00" + bytes(color) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
