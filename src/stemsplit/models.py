"""The registry of pretrained models and the operations behind ``stemsplit models ...``.

The registry maps a release name (``htdemucs`` …) to its weight files: official file names, URLs and
the SHA-256 prefix each name carries, plus bag weights, stems and published quality. The facts come
from ``htdemucs-spec.md`` §3.3 (demucs' ``remote/files.txt`` and bag yamls) and §6 (paper, Table 1).

Every function takes the registry, the cache root and the base URL as optional keyword arguments, so
tests (and embedders) inject their own; ``None`` means :data:`MODELS`, ``STEMSPLIT_CACHE_DIR`` (or the
platform cache) and ``STEMSPLIT_MODEL_URL`` (or the official server), read at call time.

Nothing here loads tensors: :func:`resolve_model` returns file paths and bag weights, and
:func:`load_resolved` runs a loader the caller passes (``stemsplit.checkpoint.load_checkpoint``).

Hash strength: upstream publishes only the first 8 hex digits of each file's SHA-256 (in its name).
That guards against truncated and damaged files, not against a deliberately forged one. Record the
full digest in ``WeightFile.sha256`` once it has been computed from a trusted download; every check
accepts either.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import requests

from stemsplit import download, settings
from stemsplit.download import DownloadOptions, DownloadReporter
from stemsplit.errors import (
    CheckpointError,
    CorruptCacheError,
    DownloadError,
    UnknownModelError,
    UnknownModelFileError,
)

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/demucs/"
DEFAULT_MODEL = "htdemucs"

FOUR_STEMS = ("drums", "bass", "other", "vocals")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")

_HEX = re.compile(r"[0-9a-f]+")
_MIN_HASH_HEX = 8

T = TypeVar("T")


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
            when it is non-empty, see :func:`stemsplit.download.is_cached`).
    """

    signature: str
    filename: str
    folder: str
    sha256: str
    size_bytes: int | None = None

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
        segment: the models' training window in seconds (the longest ``--segment`` they accept), so an
            over-long ``--segment`` is refused before anything is downloaded; None when unknown (then
            only the loaded weights are checked).
    """

    name: str
    description: str
    sources: tuple[str, ...]
    files: tuple[WeightFile, ...]
    weights: tuple[tuple[float, ...], ...] | None = None
    sdr: PublishedSDR | None = None
    origin: str = ""
    segment: Fraction | None = None

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


def _official(filename: str, folder: str = _HT) -> WeightFile:
    """A file named ``<signature>-<sha256[:8]>.th``; the hash prefix is taken from the name.

    Sizes are left unknown: the spec records none except an observed "80.2M" for 955717e8, which is
    not exact. The full SHA-256 can replace the prefix once computed from a trusted download.
    """
    stem = filename.rsplit(".", 1)[0]
    signature, prefix = stem.split("-")
    return WeightFile(signature=signature, filename=filename, folder=folder, sha256=prefix)


def _identity(n: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))


MODELS: Registry = make_registry(
    ModelSpec(
        name="htdemucs",
        description="Hybrid Transformer Demucs v4, 4 stems: the default, good and fast.",
        sources=FOUR_STEMS,
        files=(_official("955717e8-8726e21a.th"),),
        sdr=PublishedSDR(8.80, (("drums", 10.05), ("bass", 9.78), ("other", 6.42), ("vocals", 8.93))),
        origin=_ORIGIN.format(name="htdemucs"),
        segment=_HT_SEGMENT,
    ),
    ModelSpec(
        name="htdemucs_ft",
        description="Fine-tuned bag of 4 specialists, one per stem: best quality, about 4x slower.",
        sources=FOUR_STEMS,
        # Bag order = stem order: f7e0c4bc is the drums specialist, … 04573f0d the vocals one.
        files=(
            _official("f7e0c4bc-ba3fe64a.th"),
            _official("d12395a8-e57c48e6.th"),
            _official("92cfc3b6-ef3bcb9c.th"),
            _official("04573f0d-f3cf25b2.th"),
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
        files=(_official("5c90dfd2-34c22ccb.th"),),
        sdr=None,  # no official figure (spec §6)
        origin=_ORIGIN.format(name="htdemucs_6s"),
        segment=_HT_SEGMENT,
    ),
)


# --- lookup ------------------------------------------------------------------------------------


def model_names(registry: Registry | None = None) -> tuple[str, ...]:
    """The registry's names, in table order."""
    return tuple(_reg(registry))


def get_model_spec(name: str, registry: Registry | None = None) -> ModelSpec:
    """The entry for ``name``.

    Raises:
        UnknownModelError: ``name`` is not in the registry; the message lists the valid names and
            the closest one (also in ``known`` and ``suggestion``).
    """
    reg = _reg(registry)
    spec = reg.get(name)
    if spec is not None:
        return spec
    known = tuple(reg)
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    suggestion = close[0] if close else None
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(known)}. "
        "(A path to a checkpoint file also works.)",
        name=name,
        known=known,
        suggestion=suggestion,
    )


def cache_folder(cache_dir: Path | None = None) -> Path:
    """The folder weight files are cached in (what ``stemsplit models path`` prints).

    Args:
        cache_dir: a cache root to use instead of ``STEMSPLIT_CACHE_DIR`` / the platform cache.
    """
    return settings.checkpoints_dir(_root(cache_dir))


def file_path(wf: WeightFile, cache_dir: Path | None = None) -> Path:
    """Where ``wf`` is (or would be) cached."""
    return cache_folder(cache_dir) / wf.filename


def _reg(registry: Registry | None) -> Registry:
    return MODELS if registry is None else registry


def _root(cache_dir: Path | None) -> Path:
    return cache_dir if cache_dir is not None else settings.cache_dir()


def _base(base_url: str | None) -> str:
    return base_url or settings.model_base_url() or OFFICIAL_BASE_URL


def _specs(names: Sequence[str] | None, registry: Registry) -> list[ModelSpec]:
    """The specs for ``names`` (all of them for ``None``), all validated before any work starts."""
    if names is None:
        return list(registry.values())
    return [get_model_spec(name, registry) for name in dict.fromkeys(names)]


# --- resolving and loading ---------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    """A model whose files are all in the cache.

    Attributes:
        spec: the registry entry.
        paths: the cached files, one per ``spec.files`` in bag order.
        weights: bag weights (models × sources), explicit even for a single model.
    """

    spec: ModelSpec
    paths: tuple[Path, ...]
    weights: tuple[tuple[float, ...], ...]


def resolve_model(
    name: str,
    *,
    registry: Registry | None = None,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    offline: bool | None = None,
    options: DownloadOptions | None = None,
    reporter: DownloadReporter | None = None,
    session: requests.Session | None = None,
    force: bool = False,
) -> ResolvedModel:
    """Make every file of model ``name`` available in the cache, downloading what is missing.

    Args:
        name: a registry name.
        registry: the registry (default :data:`MODELS`).
        cache_dir: the cache root (default ``STEMSPLIT_CACHE_DIR`` or the platform cache).
        base_url: the server (default ``STEMSPLIT_MODEL_URL`` or :data:`OFFICIAL_BASE_URL`).
        offline: ``True`` forbids the network; ``None`` reads ``STEMSPLIT_OFFLINE``.
        options: timeouts and retries; reporter: progress; session: a ``requests.Session``.
        force: download again even the files already cached (they are replaced only by verified bytes).

    Returns:
        The cached paths and bag weights; nothing is loaded.

    Raises:
        UnknownModelError: ``name`` is not in the registry.
        OfflineModeError: a file is missing and offline mode is on (no socket is opened).
        DownloadError: the download failed.
        ChecksumError: the server sent bytes that do not match the registry.
    """
    spec = get_model_spec(name, registry)
    root = _root(cache_dir)
    base = _base(base_url)
    is_offline = settings.offline(offline)
    paths = []
    for wf in spec.files:
        dest = file_path(wf, root)
        url = wf.url(base)
        label = f"model {spec.name!r} (file {wf.filename})"
        if not is_offline and (force or not download.is_cached(dest, wf.size_bytes)):
            _prepare_cache(root, url, dest, label)
            if force:
                download.download_file(
                    url,
                    dest,
                    wf.sha256,
                    size_bytes=wf.size_bytes,
                    label=label,
                    options=options,
                    reporter=reporter,
                    session=session,
                )
        paths.append(
            download.ensure_file(
                url,
                dest,
                wf.sha256,
                size_bytes=wf.size_bytes,
                label=label,
                offline=is_offline,
                options=options,
                reporter=reporter,
                session=session,
            )
        )
    return ResolvedModel(spec=spec, paths=tuple(paths), weights=spec.bag_weights())


def _prepare_cache(root: Path, url: str, dest: Path, label: str) -> None:
    """Create the cache folders (with ``CACHEDIR.TAG``) before a download, as a typed error if impossible."""
    try:
        settings.ensure_cache_dir(root)
    except OSError as err:
        raise DownloadError(
            download.unavailable_message(
                f"cannot create the model cache in {root} for {label}: {err}",
                url=url,
                dest=dest,
                ways_out=download.CACHE_WAYS_OUT,
            ),
            url=url,
            path=root,
        ) from err


def fix_command(name: str) -> str:
    """The commands that replace a damaged cached model with a fresh verified copy."""
    return f"stemsplit models remove {name} && stemsplit models download {name}"


def cached_file_error(name: str, wf: WeightFile, path: Path, err: CheckpointError) -> Exception:
    """The error to raise when a cached registry file failed to load as a checkpoint.

    The file is re-hashed. If it no longer matches the registry it was damaged in the cache, and a
    :class:`CorruptCacheError` names the command that fixes it. If it does match, re-downloading
    cannot help, so the loader's own ``err`` is returned unchanged.
    """
    try:
        actual = download.sha256_file(path)
    except OSError as os_err:
        actual = f"unreadable ({os_err})"
    if download.digest_matches(actual, wf.sha256):
        return err
    return CorruptCacheError(
        f"the cached file {path} of model {name!r} is damaged: it does not load ({err}) and its "
        f"SHA-256 is {actual}, not one starting with {wf.sha256}. Fix it with `{fix_command(name)}` "
        "(`stemsplit models verify` checks every cached model).",
        model=name,
        fix=fix_command(name),
        path=path,
    )


def load_resolved(resolved: ResolvedModel, loader: Callable[[Path], T]) -> list[T]:
    """Load every file of a resolved model with ``loader`` (``stemsplit.checkpoint.load_checkpoint``).

    Returns:
        One loaded object per file, in bag order.

    Raises:
        CorruptCacheError: a cached file fails to load and no longer matches its hash (the message
            says how to fix it).
        CheckpointError: a file that matches its hash fails to load (the loader's error, unchanged).
    """
    loaded = []
    for wf, path in zip(resolved.spec.files, resolved.paths, strict=True):
        try:
            loaded.append(loader(path))
        except CheckpointError as err:
            corrupt = cached_file_error(resolved.spec.name, wf, path, err)
            if corrupt is err:
                raise
            raise corrupt from err
    return loaded


# --- `stemsplit models list` -------------------------------------------------------------------


@dataclass(frozen=True)
class FileStatus:
    """One weight file as seen in the cache.

    Attributes:
        filename, url, path, sha256: the file's name, its address, its cache path and expected hash.
        cached: whether the cache holds it (trusted by size, not re-hashed; see ``verify``).
        size_bytes: its size on disk when cached, else the registry's size (``None`` if unknown).
    """

    filename: str
    url: str
    path: Path
    sha256: str
    cached: bool
    size_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping of the fields (``path`` as a string)."""
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class ModelStatus:
    """A registry entry with the cache state of its files (one row of ``models list``)."""

    name: str
    description: str
    sources: tuple[str, ...]
    default: bool
    files: tuple[FileStatus, ...]
    sdr: PublishedSDR | None = field(default=None)

    @property
    def cached(self) -> bool:
        """Whether every file is in the cache."""
        return all(f.cached for f in self.files)

    @property
    def size_bytes(self) -> int | None:
        """The total size, or ``None`` when a file's size is unknown."""
        sizes = [f.size_bytes for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping for ``models list --json``."""
        return {
            "name": self.name,
            "description": self.description,
            "default": self.default,
            "stems": list(self.sources),
            "cached": self.cached,
            "size_bytes": self.size_bytes,
            "sdr": self.sdr.to_dict() if self.sdr is not None else None,
            "files": [f.to_dict() for f in self.files],
        }


def list_models(
    *, registry: Registry | None = None, cache_dir: Path | None = None, base_url: str | None = None
) -> list[ModelStatus]:
    """Every registry entry with its cache state; nothing is hashed, downloaded or created."""
    base = _base(base_url)
    rows = []
    for spec in _reg(registry).values():
        files = []
        for wf in spec.files:
            path = file_path(wf, cache_dir)
            cached = download.is_cached(path, wf.size_bytes)
            size = path.stat().st_size if cached else wf.size_bytes
            files.append(FileStatus(wf.filename, wf.url(base), path, wf.sha256, cached, size))
        rows.append(
            ModelStatus(
                name=spec.name,
                description=spec.description,
                sources=spec.sources,
                default=spec.name == DEFAULT_MODEL,
                files=tuple(files),
                sdr=spec.sdr,
            )
        )
    return rows


# --- `stemsplit models download` ---------------------------------------------------------------


def download_models(
    names: Sequence[str] | None = None,
    *,
    registry: Registry | None = None,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    offline: bool | None = None,
    options: DownloadOptions | None = None,
    reporter: DownloadReporter | None = None,
    session: requests.Session | None = None,
    force: bool = False,
) -> list[ResolvedModel]:
    """Prefetch models into the cache (``models download NAME...``; ``None`` = ``--all``).

    Every name is checked before anything is downloaded. Arguments and errors as
    :func:`resolve_model`.
    """
    reg = _reg(registry)
    return [
        resolve_model(
            spec.name,
            registry=reg,
            cache_dir=cache_dir,
            base_url=base_url,
            offline=offline,
            options=options,
            reporter=reporter,
            session=session,
            force=force,
        )
        for spec in _specs(names, reg)
    ]


# --- `stemsplit models import` -----------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    """A file installed into the cache.

    Attributes:
        source: the file the user gave.
        dest: its cache path (under its official name, whatever ``source`` was called).
        models: the registry names that use it.
    """

    source: Path
    dest: Path
    models: tuple[str, ...]


def import_file(
    path: Path, *, registry: Registry | None = None, cache_dir: Path | None = None
) -> ImportResult:
    """Install a weight file obtained by hand (browser, another machine) into the cache.

    A file carrying an official name must match that name's hash. Any other name (``… (1).th``
    after a browser renamed it) is recognised by its hash. The cache copy is verified and written
    atomically; ``path`` is left untouched.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ChecksumError: ``path`` has an official name but other bytes; ``expected`` and ``actual``
            (and the message) give both hashes; nothing is installed.
        UnknownModelFileError: neither the name nor the hash matches a registry file.
        OSError: the cache cannot be written.
    """
    reg = _reg(registry)
    by_name = _files_named(path.name, reg.values())
    if by_name is not None:
        wf = by_name
    else:
        actual = download.sha256_file(path)
        matches = [
            f for spec in reg.values() for f in spec.files if download.digest_matches(actual, f.sha256)
        ]
        if not matches:
            known = ", ".join(sorted({f.filename for spec in reg.values() for f in spec.files}))
            raise UnknownModelFileError(
                f"{path} is not a known model file: its SHA-256 is {actual}, which matches none of {known}.",
                path=path,
                actual=actual,
            )
        wf = matches[0]
    root = _root(cache_dir)
    settings.ensure_cache_dir(root)
    dest = download.install_file(path, file_path(wf, root), wf.sha256)
    users = tuple(spec.name for spec in reg.values() if wf in spec.files)
    return ImportResult(source=path, dest=dest, models=users)


def _files_named(filename: str, specs: Iterable[ModelSpec]) -> WeightFile | None:
    for spec in specs:
        for wf in spec.files:
            if wf.filename == filename:
                return wf
    return None


# --- `stemsplit models verify` -----------------------------------------------------------------

FileState = Literal["ok", "corrupt", "missing"]


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-hashing one cached file.

    Attributes:
        model: the registry name the file was checked for.
        filename, path: the file and its cache path.
        state: ``ok``, ``corrupt`` (hash mismatch) or ``missing`` (not cached; not an error).
        expected: the registry hash (or prefix); actual: the full digest (``None`` when missing).
    """

    model: str
    filename: str
    path: Path
    state: FileState
    expected: str
    actual: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping of the fields (``path`` as a string)."""
        return {**asdict(self), "path": str(self.path)}


def verify_models(
    names: Sequence[str] | None = None,
    *,
    registry: Registry | None = None,
    cache_dir: Path | None = None,
) -> list[VerifyResult]:
    """Fully re-hash the cached files of ``names`` (every model for ``None``); nothing is changed.

    A ``corrupt`` file stays in place; :func:`fix_command` gives the command that replaces it.

    Raises:
        UnknownModelError: a name is not in the registry (checked before any hashing).
    """
    results = []
    for spec in _specs(names, _reg(registry)):
        for wf in spec.files:
            path = file_path(wf, cache_dir)
            try:
                actual = download.sha256_file(path)
            except FileNotFoundError:
                results.append(VerifyResult(spec.name, wf.filename, path, "missing", wf.sha256, None))
                continue
            state: FileState = "ok" if download.digest_matches(actual, wf.sha256) else "corrupt"
            results.append(VerifyResult(spec.name, wf.filename, path, state, wf.sha256, actual))
    return results


# --- `stemsplit models remove` -----------------------------------------------------------------


def remove_models(
    names: Sequence[str], *, registry: Registry | None = None, cache_dir: Path | None = None
) -> list[Path]:
    """Delete the cached files of ``names``, with any temp files a killed download left behind.

    Returns:
        The weight files that were deleted (files that were not cached are skipped).

    Raises:
        UnknownModelError: a name is not in the registry (checked before anything is deleted).
    """
    removed = []
    for spec in _specs(names, _reg(registry)):
        for wf in spec.files:
            path = file_path(wf, cache_dir)
            for leftover in download.temp_files_for(path):
                leftover.unlink(missing_ok=True)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
