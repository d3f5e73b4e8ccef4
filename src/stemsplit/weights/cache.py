"""The weights cache: where files live, getting them there, and ``stemsplit models list|import|verify|remove``.

One frozen :class:`ModelCache` carries what every operation shares: the registry, the cache root, the
server (official or a ``STEMSPLIT_MODEL_URL`` mirror) and the :class:`~stemsplit.weights.download.Transport`
(offline switch, timeouts, progress, HTTP session). ``ModelCache()`` means :data:`~stemsplit.weights.registry.MODELS`,
``STEMSPLIT_CACHE_DIR`` (or the platform cache) and ``STEMSPLIT_MODEL_URL`` (or the official server), read
when each method runs; tests and embedders pass their own.

Nothing here loads tensors: :meth:`ModelCache.resolve` returns file paths and bag weights, and
:meth:`ModelCache.load` runs a loader the caller passes
(:func:`stemsplit.weights.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from stemsplit import settings
from stemsplit.errors import CheckpointError, CorruptCacheError, DownloadError, UnknownModelFileError
from stemsplit.weights import download
from stemsplit.weights import registry as _registry
from stemsplit.weights.download import Transport
from stemsplit.weights.registry import (
    OFFICIAL_BASE_URL,
    ModelSpec,
    PublishedSDR,
    Registry,
    WeightFile,
    get_model_spec,
)

T = TypeVar("T")

FileState = Literal["ok", "corrupt", "missing"]


# --- results -----------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class FileStatus:
    """One weight file as seen in the cache.

    Attributes:
        filename, url, path, sha256: the file's name, its address, its cache path and expected hash.
        cached: whether the cache holds it (trusted by size, not re-hashed; see ``verify``).
        size_bytes: its size on disk when cached, else the registry's exact size (``None`` if unknown).
        approx_size_mib: its size in MiB for people: exact when known, else the registry's estimate.
    """

    filename: str
    url: str
    path: Path
    sha256: str
    cached: bool
    size_bytes: int | None
    approx_size_mib: float | None = None

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
    speed: float | None = None

    @property
    def cached(self) -> bool:
        """Whether every file is in the cache."""
        return all(f.cached for f in self.files)

    @property
    def size_bytes(self) -> int | None:
        """The total size, or ``None`` when a file's size is unknown."""
        sizes = [f.size_bytes for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def approx_size_mib(self) -> float | None:
        """The total size in MiB for people (see :attr:`FileStatus.approx_size_mib`), or ``None``."""
        sizes = [f.approx_size_mib for f in self.files]
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
            "approx_size_mib": self.approx_size_mib,
            "sdr": self.sdr.to_dict() if self.sdr is not None else None,
            "speed": self.speed,
            "files": [f.to_dict() for f in self.files],
        }


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


def fix_command(name: str) -> str:
    """The commands that replace a damaged cached model with a fresh verified copy."""
    return f"stemsplit models remove {name} && stemsplit models download {name}"


# --- the cache ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCache:
    """The registry, the cache folder and the server, with how to reach it.

    Attributes:
        registry: the models (None: :data:`~stemsplit.weights.registry.MODELS`, read at call time).
        root: the cache root (None: ``STEMSPLIT_CACHE_DIR`` or the platform cache, read at call time);
            files live in ``root/checkpoints``.
        base_url: the server (None: ``STEMSPLIT_MODEL_URL`` or the official one).
        transport: offline switch, timeouts and retries, progress, HTTP session.
    """

    registry: Registry | None = None
    root: Path | None = None
    base_url: str | None = None
    transport: Transport = field(default_factory=Transport)

    # -- where things are ----------------------------------------------------------------------

    def models(self) -> Registry:
        """The registry in use now."""
        return self.registry if self.registry is not None else _registry.MODELS

    def cache_root(self) -> Path:
        """The cache root in use now."""
        return self.root if self.root is not None else settings.cache_dir()

    def folder(self) -> Path:
        """The folder weight files are cached in (what ``stemsplit models path`` prints)."""
        return settings.checkpoints_dir(self.cache_root())

    def file_path(self, wf: WeightFile) -> Path:
        """Where ``wf`` is (or would be) cached."""
        return self.folder() / wf.filename

    def server(self) -> str:
        """The base URL downloads come from."""
        return self.base_url or settings.model_base_url() or OFFICIAL_BASE_URL

    def specs(self, names: Sequence[str] | None) -> list[ModelSpec]:
        """The specs for ``names`` (all of them for ``None``), all validated before any work starts.
        ``auto`` stands for the models ``--model auto`` picks from.

        Raises:
            UnknownModelError: a name is not in the registry.
        """
        if names is None:
            return list(self.models().values())
        expanded = [
            m for name in names for m in (_registry.auto_models() if name == _registry.AUTO else (name,))
        ]
        return [get_model_spec(name, self.models()) for name in dict.fromkeys(expanded)]

    # -- getting files -------------------------------------------------------------------------

    def resolve(self, name: str | ModelSpec, *, force: bool = False) -> ResolvedModel:
        """Make every file of model ``name`` available in the cache, downloading what is missing.

        Args:
            name: a registry name, or its entry when the caller looked it up already.
            force: download again even the files already cached (they are replaced only by verified
                bytes).

        Returns:
            The cached paths and bag weights; nothing is loaded.

        Raises:
            UnknownModelError: ``name`` is not in the registry.
            OfflineModeError: a file is missing and offline mode is on (no socket is opened).
            DownloadError: the download failed.
            ChecksumError: the server sent bytes that do not match the registry.
        """
        spec = name if isinstance(name, ModelSpec) else get_model_spec(name, self.models())
        root, base = self.cache_root(), self.server()
        offline = settings.offline(self.transport.offline)
        transport = replace(self.transport, offline=offline)
        paths = []
        for wf in spec.files:
            dest = settings.checkpoints_dir(root) / wf.filename
            url = wf.url(base)
            label = f"model {spec.name!r} (file {wf.filename})"
            if not offline and (force or not download.is_cached(dest, wf.size_bytes)):
                _prepare_cache(root, url, dest, label)
                if force:
                    download.download_file(
                        url, dest, wf.sha256, size_bytes=wf.size_bytes, label=label, transport=transport
                    )
            paths.append(
                download.ensure_file(
                    url, dest, wf.sha256, size_bytes=wf.size_bytes, label=label, transport=transport
                )
            )
        return ResolvedModel(spec=spec, paths=tuple(paths), weights=spec.bag_weights())

    def download(self, names: Sequence[str] | None = None, *, force: bool = False) -> list[ResolvedModel]:
        """Prefetch models into the cache (``models download NAME...``; ``None`` = ``--all``).

        Every name is checked before anything is downloaded. Errors as :meth:`resolve`.
        """
        return [self.resolve(spec.name, force=force) for spec in self.specs(names)]

    def load(self, resolved: ResolvedModel, loader: Callable[[Path], T]) -> list[T]:
        """Load every file of a resolved model with ``loader`` (``load_checkpoint``).

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

    # -- `stemsplit models list|import|verify|remove` ------------------------------------------

    def status(self) -> list[ModelStatus]:
        """Every registry entry with its cache state; nothing is hashed, downloaded or created."""
        base = self.server()
        rows = []
        for spec in self.models().values():
            files = []
            for wf in spec.files:
                path = self.file_path(wf)
                cached = download.is_cached(path, wf.size_bytes)
                size = path.stat().st_size if cached else wf.size_bytes
                approx = size / 2**20 if size is not None else wf.approx_size_mib
                files.append(FileStatus(wf.filename, wf.url(base), path, wf.sha256, cached, size, approx))
            rows.append(
                ModelStatus(
                    name=spec.name,
                    description=spec.description,
                    sources=spec.sources,
                    default=spec.name == _registry.DEFAULT_MODEL,
                    files=tuple(files),
                    sdr=spec.sdr,
                    speed=spec.speed,
                )
            )
        return rows

    def import_file(self, path: Path) -> ImportResult:
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
        reg = self.models()
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
        settings.ensure_cache_dir(self.cache_root())
        dest = download.install_file(path, self.file_path(wf), wf.sha256)
        users = tuple(spec.name for spec in reg.values() if wf in spec.files)
        return ImportResult(source=path, dest=dest, models=users)

    def verify(self, names: Sequence[str] | None = None) -> list[VerifyResult]:
        """Fully re-hash the cached files of ``names`` (every model for ``None``); nothing is changed.

        A ``corrupt`` file stays in place; :func:`fix_command` gives the command that replaces it.

        Raises:
            UnknownModelError: a name is not in the registry (checked before any hashing).
        """
        results = []
        for spec in self.specs(names):
            for wf in spec.files:
                path = self.file_path(wf)
                try:
                    actual = download.sha256_file(path)
                except FileNotFoundError:
                    results.append(VerifyResult(spec.name, wf.filename, path, "missing", wf.sha256, None))
                    continue
                state: FileState = "ok" if download.digest_matches(actual, wf.sha256) else "corrupt"
                results.append(VerifyResult(spec.name, wf.filename, path, state, wf.sha256, actual))
        return results

    def remove(self, names: Sequence[str]) -> list[Path]:
        """Delete the cached files of ``names``, with any temp files a killed download left behind.

        Returns:
            The weight files that were deleted (files that were not cached are skipped).

        Raises:
            UnknownModelError: a name is not in the registry (checked before anything is deleted).
        """
        removed = []
        for spec in self.specs(names):
            for wf in spec.files:
                path = self.file_path(wf)
                for leftover in download.temp_files_for(path):
                    leftover.unlink(missing_ok=True)
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
        return removed


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


def _files_named(filename: str, specs: Iterable[ModelSpec]) -> WeightFile | None:
    for spec in specs:
        for wf in spec.files:
            if wf.filename == filename:
                return wf
    return None
