"""The registry of pretrained models: pure data, no I/O.

It maps a release name (``htdemucs`` …) to its weight files: official file names, folders and the SHA-256
prefix each name carries, plus bag weights, stems, window length, published quality and measured speed. The
facts come from ``htdemucs-spec.md`` §3.3 (demucs' ``remote/files.txt`` and bag yamls) and §6 (paper, Table
1). What is in the cache, and getting files there, is :mod:`stemsplit.weights.cache`. It also holds the rule of
``--model auto`` (:func:`pick_auto`), which names registry models.

Hash strength: upstream publishes only the first 8 hex digits of each file's SHA-256 (in its name).
That guards against truncated and damaged files, not against a deliberately forged one. Record the
full digest in ``WeightFile.sha256`` once it has been computed from a trusted download; every check
accepts either.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from stemsplit.errors import UnknownModelError

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/demucs/"
DEFAULT_MODEL = "htdemucs"

WEIGHTS_LICENCE = (
    "The pretrained weights are Meta's, not covered by stemsplit's MIT licence: their author says they are "
    "for research use (facebookresearch/demucs issues #327 and #508)."
)
"""One line that ``stemsplit models list`` shows (on stderr), as the README's Models section says."""

AUTO = "auto"
"""``--model auto``: each track gets the model :func:`pick_auto` names for its duration."""
LONG_TRACK_MODEL = "hdemucs_mmi"
LONG_TRACK_S = 7 * 60
"""From this duration on (seconds), ``auto`` picks :data:`LONG_TRACK_MODEL`: DJ sets and live recordings,
where its speed matters more than the 0.46 dB of SDR it gives up against ``htdemucs``."""

FOUR_STEMS = ("drums", "bass", "other", "vocals")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")

_HEX = re.compile(r"[0-9a-f]+")
_MIN_HASH_HEX = 8


# --- registry types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFile:
    """One published weight file.

    Attributes:
        signature: the training run's signature, the part of the name before ``-`` (``955717e8``).
        filename: the official file name, also its name in the cache (``955717e8-8726e21a.th``).
        folder: its folder below the base URL, ending in ``/`` (``hybrid_transformer/``).
        sha256: the expected SHA-256 as lowercase hex: the full 64 digits, or a prefix of at least 8
            (official names carry the first 8).
        size_bytes: the exact size, when known; ``None`` means unknown (a cached file is then trusted
            when it is non-empty, see :func:`stemsplit.weights.download.is_cached`).
        approx_size_mib: about how big the file is, in MiB, for people (``models list``, what a download
            costs); never used to judge a file. ``None`` when not even that is known.
    """

    signature: str
    filename: str
    folder: str
    sha256: str
    size_bytes: int | None = None
    approx_size_mib: float | None = None

    def __post_init__(self) -> None:
        if not (_MIN_HASH_HEX <= len(self.sha256) <= 64 and _HEX.fullmatch(self.sha256)):
            raise ValueError(
                f"{self.filename}: sha256 must be 8 to 64 lowercase hex digits, got {self.sha256!r}"
            )
        if "/" in self.filename or "\\" in self.filename or self.filename in ("", ".", ".."):
            raise ValueError(f"invalid weight file name {self.filename!r}")
        if self.folder and not self.folder.endswith("/"):
            raise ValueError(f"{self.filename}: folder must end with '/', got {self.folder!r}")
        if self.size_bytes is not None and self.size_bytes <= 0:
            raise ValueError(f"{self.filename}: size_bytes must be positive, got {self.size_bytes}")

    @property
    def full_hash(self) -> bool:
        """Whether :attr:`sha256` is the full digest (not just the published prefix)."""
        return len(self.sha256) == 64

    def url(self, base_url: str | None = None) -> str:
        """Its download address below ``base_url`` (default :data:`OFFICIAL_BASE_URL`)."""
        base = base_url or OFFICIAL_BASE_URL
        return (base if base.endswith("/") else base + "/") + self.folder + self.filename


@dataclass(frozen=True)
class PublishedSDR:
    """Quality as published: SDR in dB on the MUSDB18-HQ test set (SiSEC18 median of medians).

    Attributes:
        overall: the "All" column (mean over the stems).
        per_stem: ``(stem, SDR)`` pairs.
        reference: where the numbers come from.
    """

    overall: float
    per_stem: tuple[tuple[str, float], ...]
    reference: str = "HT Demucs paper (arXiv 2211.08553), Table 1, MUSDB18-HQ test"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping: ``{"overall": 8.8, "stems": {"drums": 10.05, ...}, "reference": ...}``."""
        return {"overall": self.overall, "stems": dict(self.per_stem), "reference": self.reference}


@dataclass(frozen=True)
class ModelSpec:
    """A named release: one model or a bag of models.

    Attributes:
        name: the registry name (``htdemucs``).
        description: one line for ``stemsplit models list``.
        sources: the stems, in the models' output order.
        files: the weight files, one per model of the bag, in bag order.
        weights: bag weights, one row per file and one column per source (stem k of the bag is
            ``Σ_m w[m][k]·out_m[k] / Σ_m w[m][k]``); ``None`` means all ones.
        sdr: published quality, when there is any.
        origin: where these facts come from.
        segment: the window in seconds, which is the longest ``--segment`` accepted: HT models' training
            window, or the bag's segment of a Hybrid Demucs model (it takes any length). Known here so that an
            over-long ``--segment`` is refused before anything is downloaded; None when unknown (then only the
            loaded weights are checked).
        speed: separation throughput relative to ``htdemucs`` (2.0: twice as fast), as measured by
            ``benchmarks/bench_engine.py`` (CPU, float32; benchmarks/RESULTS.md); None when not measured.
    """

    name: str
    description: str
    sources: tuple[str, ...]
    files: tuple[WeightFile, ...]
    weights: tuple[tuple[float, ...], ...] | None = None
    sdr: PublishedSDR | None = None
    origin: str = ""
    segment: Fraction | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError(f"model {self.name!r} has no files")
        if self.segment is not None and self.segment <= 0:
            raise ValueError(f"model {self.name!r}: segment must be positive, got {self.segment}")
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"model {self.name!r}: sources must be non-empty and unique")
        if self.weights is not None:
            shape_ok = len(self.weights) == len(self.files) and all(
                len(row) == len(self.sources) for row in self.weights
            )
            if not shape_ok:
                raise ValueError(
                    f"model {self.name!r}: weights must have {len(self.files)} rows of {len(self.sources)}"
                )
            for k, source in enumerate(self.sources):
                if sum(row[k] for row in self.weights) <= 0:
                    raise ValueError(f"model {self.name!r}: no model contributes to {source!r}")

    @property
    def is_bag(self) -> bool:
        """Whether several models are combined."""
        return len(self.files) > 1

    def bag_weights(self) -> tuple[tuple[float, ...], ...]:
        """The weights as an explicit (models × sources) table (all ones when :attr:`weights` is None)."""
        if self.weights is not None:
            return self.weights
        return tuple(tuple(1.0 for _ in self.sources) for _ in self.files)


Registry = Mapping[str, ModelSpec]


def make_registry(*specs: ModelSpec) -> Registry:
    """A read-only registry of ``specs``, keyed by name.

    Raises:
        ValueError: two specs share a name, or one file name is given two different hashes.
    """
    table: dict[str, ModelSpec] = {}
    hashes: dict[str, str] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"duplicate model name {spec.name!r}")
        table[spec.name] = spec
        for wf in spec.files:
            if hashes.setdefault(wf.filename, wf.sha256) != wf.sha256:
                raise ValueError(f"file {wf.filename} has two different hashes in the registry")
    return MappingProxyType(table)


# --- the released models -----------------------------------------------------------------------

_HT = "hybrid_transformer/"
# The HT training window: 343,980 samples at 44.1 kHz (spec §1.1). For the ft and 6s files it is the
# spec's best evidence; a shorter window in the files themselves is still caught when they are loaded.
_HT_SEGMENT = Fraction(39, 5)
_ORIGIN = "facebookresearch/demucs remote/files.txt and remote/{name}.yaml; paper arXiv 2211.08553"


def _official(filename: str, approx_size_mib: float, folder: str = _HT) -> WeightFile:
    """A file named ``<signature>-<sha256[:8]>.th``; the hash prefix is taken from the name.

    Exact sizes are left unknown (the spec records none), so a cached file is trusted by being there and
    verified by its hash; ``approx_size_mib`` is for display only. The full SHA-256 can replace the prefix
    once computed from a trusted download.
    """
    stem = filename.rsplit(".", 1)[0]
    signature, prefix = stem.split("-")
    return WeightFile(
        signature=signature, filename=filename, folder=folder, sha256=prefix, approx_size_mib=approx_size_mib
    )


# Approximate file sizes (MiB), from the spec: 955717e8 was observed to download as "80.2M" (§3.3, demucs
# issue #482), and its 41,984,456 float16 parameters are 80.08 MiB of tensors (§2). The htdemucs_ft files
# are the same network (§1.2), so about as big (not observed). htdemucs_6s has 27,414,996 float16
# parameters (§2): 52.3 MiB of tensors, in line with the 53-55 MB file sizes the spec cites (§1.2).
_HT_MIB = 80.2
_FT_MIB = 80.1
_6S_MIB = 52.3


# hdemucs_mmi: 83,637,832 float16 parameters (spec §1.1) are 159.5 MiB of tensors; a third-party manifest
# gives the file as 167,407,275 bytes (159.65 MiB). That size is not ours (no download of ours has checked
# it), so it is for display only, like the others: an exact size that was wrong would make a cached file
# look incomplete and every run download it again. Record the exact size and full SHA-256 from a real download.
_HDEMUCS_MIB = 159.65


def _identity(n: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))


MODELS: Registry = make_registry(
    ModelSpec(
        name="htdemucs",
        description="Hybrid Transformer Demucs v4, 4 stems: the default, good and fast.",
        sources=FOUR_STEMS,
        files=(_official("955717e8-8726e21a.th", _HT_MIB),),
        sdr=PublishedSDR(8.80, (("drums", 10.05), ("bass", 9.78), ("other", 6.42), ("vocals", 8.93))),
        origin=_ORIGIN.format(name="htdemucs"),
        segment=_HT_SEGMENT,
        speed=1.0,  # the reference of the speed column
    ),
    ModelSpec(
        name="htdemucs_ft",
        description="Fine-tuned bag of 4 specialists, one per stem: best quality, about 4x slower.",
        sources=FOUR_STEMS,
        # Bag order = stem order: f7e0c4bc is the drums specialist, … 04573f0d the vocals one.
        files=(
            _official("f7e0c4bc-ba3fe64a.th", _FT_MIB),
            _official("d12395a8-e57c48e6.th", _FT_MIB),
            _official("92cfc3b6-ef3bcb9c.th", _FT_MIB),
            _official("04573f0d-f3cf25b2.th", _FT_MIB),
        ),
        weights=_identity(4),
        sdr=PublishedSDR(9.00, (("drums", 10.08), ("bass", 10.39), ("other", 6.32), ("vocals", 9.20))),
        origin=_ORIGIN.format(name="htdemucs_ft"),
        segment=_HT_SEGMENT,
    ),
    ModelSpec(
        name="htdemucs_6s",
        description="6 stems (adds guitar and piano); piano is experimental, with bleeding.",
        sources=SIX_STEMS,
        files=(_official("5c90dfd2-34c22ccb.th", _6S_MIB),),
        sdr=None,  # no official figure (spec §6)
        origin=_ORIGIN.format(name="htdemucs_6s"),
        segment=_HT_SEGMENT,
    ),
    ModelSpec(
        name="hdemucs_mmi",
        description="Hybrid Demucs v3 (no transformer): faster, slightly lower quality; for long DJ sets.",
        sources=FOUR_STEMS,
        files=(
            WeightFile(
                signature="75fc33f5",
                filename="75fc33f5-1941ce65.th",
                folder=_HT,
                sha256="1941ce65",
                approx_size_mib=_HDEMUCS_MIB,
            ),
        ),
        sdr=PublishedSDR(
            8.34, (("drums", 9.31), ("bass", 9.13), ("other", 6.18), ("vocals", 8.75))
        ),  # "Hybrid Demucs retrained"
        origin=_ORIGIN.format(name="hdemucs_mmi"),
        segment=Fraction(44),  # the bag yaml's segment; demucs 4.1.0 applies it to Hybrid Demucs (spec §3.4)
        speed=1.28,  # bench_engine.py --model hdemucs_mmi, 60-s track, float32, 2-core Xeon (RESULTS.md)
    ),
)


# --- lookup ------------------------------------------------------------------------------------


def auto_models() -> tuple[str, ...]:
    """The models ``--model auto`` chooses from, short tracks' first."""
    return (DEFAULT_MODEL, LONG_TRACK_MODEL)


def pick_auto(duration_s: float | None) -> str:
    """The model ``--model auto`` gives a track of ``duration_s`` seconds: :data:`LONG_TRACK_MODEL` from
    :data:`LONG_TRACK_S` on, else :data:`DEFAULT_MODEL` (also when the duration is unknown)."""
    return LONG_TRACK_MODEL if duration_s is not None and duration_s >= LONG_TRACK_S else DEFAULT_MODEL


def model_names(registry: Registry | None = None) -> tuple[str, ...]:
    """The registry's names, in table order (default :data:`MODELS`)."""
    return tuple(MODELS if registry is None else registry)


def get_model_spec(name: str, registry: Registry | None = None) -> ModelSpec:
    """The entry for ``name``.

    Raises:
        UnknownModelError: ``name`` is not in the registry; the message lists the valid names and
            the closest one (also in ``known`` and ``suggestion``).
    """
    reg = MODELS if registry is None else registry
    spec = reg.get(name)
    if spec is not None:
        return spec
    known = tuple(reg)
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    suggestion = close[0] if close else None
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(known)}.",
        name=name,
        known=known,
        suggestion=suggestion,
    )
