"""A track's stems as one set: found in a folder or a ``.stem.mp4``, read in step as float32 stereo blocks.

A stem folder is stemsplit's output for one track, or any folder of audio files of one length: each file
is a stem named by its file name (``drums.wav`` → ``drums``). A ``.stem.mp4`` holds a master and four stems
(tracks 2 to 5); its stems are named by :data:`~stemsplit.audio.ni_stems.NI_STEMS`. Every stem is read at
the set's rate (the first stem's) as two channels, so the stems add up sample for sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from stemsplit.audio._common import DEFAULT_BLOCK_FRAMES, MODEL_CHANNELS, FloatArray
from stemsplit.audio.convert import Reblocker, StreamResampler, remix_frames
from stemsplit.audio.info import open_container, probe
from stemsplit.audio.ni_stems import DEFAULT_COLORS, NI_STEMS
from stemsplit.audio.reader import AudioReader
from stemsplit.errors import AudioDecodeError, InvalidOptionError

STEM_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aif", ".aiff", ".w64"})
"""File extensions a stem folder's stems may have (any letter case)."""

LENGTH_TOLERANCE_S = 0.1
"""Stems of one folder may differ in length by this much (lossy encoders pad); the set is the shortest (s)."""

UNPITCHED_STEMS = frozenset({"drums", "percussion"})
"""Stems a key change leaves alone: they have no key."""

_OTHER_COLORS = ("#E69F00", "#F0E442", "#0072B2", "#999999", "#882255", "#44AA99")


@dataclass(frozen=True, slots=True)
class Stem:
    """One stem of a set.

    Attributes:
        name: the stem's name (a file name without its extension, or an NI stem name).
        path: the file that holds it.
        track: for a ``.stem.mp4``, the index of its audio stream (1 to 4); ``None`` for a plain file.
        color: a ``#RRGGBB`` colour for displays.
    """

    name: str
    path: Path
    track: int | None = None
    color: str = "#999999"

    @property
    def pitched(self) -> bool:
        """Whether a key change applies to this stem (drums have no key)."""
        return self.name.lower() not in UNPITCHED_STEMS


@dataclass(frozen=True, slots=True)
class StemSet:
    """The stems of one track.

    Attributes:
        source: the folder or ``.stem.mp4`` they came from.
        stems: the stems, in display order (drums, bass, other, vocals first, then by name).
        samplerate: the rate every stem is read at (Hz).
        frames: the set's length in frames at ``samplerate``.
    """

    source: Path
    stems: tuple[Stem, ...]
    samplerate: int
    frames: int

    @property
    def names(self) -> tuple[str, ...]:
        """The stem names, in order."""
        return tuple(stem.name for stem in self.stems)

    @property
    def duration_s(self) -> float:
        """The length in seconds."""
        return self.frames / self.samplerate

    def blocks(
        self, start: int = 0, end: int | None = None, block_frames: int = DEFAULT_BLOCK_FRAMES
    ) -> Iterator[tuple[FloatArray, ...]]:
        """Read frames ``[start, end)`` of every stem in step.

        Yields:
            One float32 ``(2, n)`` array per stem (in :attr:`stems` order), the same ``n`` for all:
            ``block_frames`` but for the last block.

        Raises:
            AudioDecodeError: a stem could not be decoded.
        """
        stop = self.frames if end is None else min(end, self.frames)
        readers = [read_stem(stem, self.samplerate, block_frames) for stem in self.stems]
        position = 0
        for parts in itertools.zip_longest(*readers):
            if any(part is None for part in parts):
                raise AudioDecodeError(
                    f"{self.source}: a stem ended early; its files differ in length", path=self.source
                )
            n = min(part.shape[1] for part in parts)
            lo, hi = max(start - position, 0), min(stop - position, n)
            if hi > lo:
                yield tuple(np.ascontiguousarray(part[:, lo:hi]) for part in parts)
            position += n
            if position >= stop:
                return


def find_stems(path: Path | str) -> StemSet:
    """The stem set at ``path``: a folder of audio files of one length, or a ``.stem.mp4``.

    Raises:
        InvalidOptionError: ``path`` is neither, holds no stems, or its stems differ in rate or length
            (one line naming the path and what to do).
        AudioFileNotFoundError, AudioDecodeError, UnsupportedAudioError: a stem cannot be probed.
    """
    path = Path(path)
    if path.is_dir():
        return _folder_stems(path)
    if path.name.lower().endswith(".stem.mp4") and path.is_file():
        return _stem_mp4_stems(path)
    raise InvalidOptionError(
        f"{path}: not a stem folder or a .stem.mp4; give a track's stem folder, a .stem.mp4 or an audio file"
    )


def _order(name: str) -> tuple[int, str]:
    lower = name.lower()
    return (NI_STEMS.index(lower) if lower in NI_STEMS else len(NI_STEMS), lower)


def _color(name: str, index: int) -> str:
    lower = name.lower()
    if lower in NI_STEMS:
        return DEFAULT_COLORS[NI_STEMS.index(lower)]
    return _OTHER_COLORS[index % len(_OTHER_COLORS)]


def _folder_stems(folder: Path) -> StemSet:
    files = sorted(
        (
            f
            for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in STEM_SUFFIXES
        ),
        key=lambda f: _order(f.stem),
    )
    if not files:
        raise InvalidOptionError(
            f"{folder}: no stems found (no .wav, .flac, .mp3 … files); give a track's stem folder"
        )
    infos = [probe(f) for f in files]
    rate = infos[0].samplerate
    lengths = []
    for info in infos:
        if info.frames is None:
            raise InvalidOptionError(f"{info.path}: its length is unknown; convert the stems to wav or flac")
        lengths.append(round(info.frames * rate / info.samplerate))
    if max(lengths) - min(lengths) > LENGTH_TOLERANCE_S * rate:
        longest, shortest = infos[lengths.index(max(lengths))], infos[lengths.index(min(lengths))]
        raise InvalidOptionError(
            f"{folder}: the stems differ in length ({shortest.path.name} {min(lengths) / rate:.2f} s, "
            f"{longest.path.name} {max(lengths) / rate:.2f} s); a stem folder holds the stems of one track"
        )
    stems = tuple(Stem(f.stem, f, None, _color(f.stem, i)) for i, f in enumerate(files))
    return StemSet(folder, stems, rate, min(lengths))


def _stem_mp4_stems(path: Path) -> StemSet:
    info = probe(path)
    try:
        with open_container(path) as container:
            tracks = len(container.streams.audio)
    except av.error.FFmpegError as err:
        raise AudioDecodeError(
            f"{path}: cannot be opened ({err}); re-export the stem file", path=path
        ) from err
    if tracks != len(NI_STEMS) + 1 or info.frames is None:
        raise InvalidOptionError(
            f"{path}: not a stem file (it has {tracks} audio tracks, a .stem.mp4 has 5); give a stem folder"
        )
    stems = tuple(Stem(name, path, k + 1, DEFAULT_COLORS[k]) for k, name in enumerate(NI_STEMS))
    return StemSet(path, stems, info.samplerate, info.frames)


def read_stem(stem: Stem, samplerate: int, block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[FloatArray]:
    """One stem, from its start, as float32 ``(2, n)`` blocks at ``samplerate``.

    Raises:
        AudioDecodeError: the stem could not be decoded.
    """
    if stem.track is None:
        yield from AudioReader(
            stem.path, samplerate=samplerate, channels=MODEL_CHANNELS, block_frames=block_frames
        )
        return
    yield from _stem_track_frames(stem, samplerate, block_frames)


def _stem_track_frames(stem: Stem, samplerate: int, block_frames: int) -> Iterator[FloatArray]:
    """A ``.stem.mp4`` track as float32 ``(2, n)`` blocks at ``samplerate`` (PyAV)."""
    reblock = Reblocker(MODEL_CHANNELS, block_frames)
    resampler: StreamResampler | None = None
    try:
        with open_container(stem.path) as container:
            stream = container.streams.audio[stem.track]
            resample = av.AudioResampler(format="fltp", layout="stereo")
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if resampler is None and frame.sample_rate != samplerate:
                        resampler = StreamResampler(frame.sample_rate, samplerate, MODEL_CHANNELS)
                    for out in resample.resample(frame):
                        chunk = np.ascontiguousarray(out.to_ndarray().T, dtype=np.float32)
                        chunk = remix_frames(chunk, MODEL_CHANNELS)
                        if resampler is not None:
                            chunk = resampler.process(chunk)
                        yield from reblock.push(chunk)
    except av.error.FFmpegError as err:
        raise AudioDecodeError(
            f"{stem.path}: decoding failed ({err}); re-export the stem file", path=stem.path
        ) from err
    if resampler is not None:
        yield from reblock.push(resampler.flush())
    rest = reblock.remainder()
    if rest.shape[1]:
        yield rest
