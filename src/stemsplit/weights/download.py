"""Verified, atomic downloads of weight files into the cache.

This module moves bytes and checks SHA-256 digests; it knows nothing about models, bags or torch.
:func:`ensure_file` is the entry point used on every model load:

* a file already at the destination is trusted by size (see :func:`is_cached`); ``verify`` re-hashes;
* offline mode (``STEMSPLIT_OFFLINE`` / ``offline=True``) raises before any socket is opened;
* a best-effort lock (``flock`` on ``<folder>/.locks/<name>.lock``) keeps concurrent processes from
  downloading the same file twice; correctness never depends on it (network filesystems may fake it);
* the body streams into a process-unique ``<name>.<uuid8>.incomplete`` beside the destination while
  it is hashed; connect and read timeouts apply; failures are retried with exponential backoff, and a
  dropped connection resumes with ``Range`` inside the same call (a server that ignores ``Range`` and
  answers 200 makes us start the file again); there is no resume across calls or processes;
* ``os.replace`` moves the temp file into place only after the digest matches; the temp file is
  removed on every exit path, ``KeyboardInterrupt`` included.

Proxies (``HTTPS_PROXY`` …) and CA bundles (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE`` …) come from the
environment: sessions keep ``trust_env`` on, and :func:`stemsplit.settings.ca_bundle` adds the
OpenSSL variables that requests does not read itself.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests

from stemsplit import settings
from stemsplit._version import __version__
from stemsplit.errors import (
    ChecksumError,
    DownloadError,
    InvalidOptionError,
    ModelUnavailableError,
    OfflineModeError,
)

TEMP_SUFFIX = ".incomplete"
LOCKS_SUBDIR = ".locks"
_HASH_BLOCK_BYTES = 1 << 20
_LOCK_POLL_S = 0.05
# Statuses worth another try: the request may succeed later. Everything else (404, 403 …) is final.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


# --- progress ----------------------------------------------------------------------------------


class DownloadReporter(Protocol):
    """Receives download progress; the CLI's ``ui`` module draws it, the library default ignores it."""

    def download_started(self, url: str, dest: Path, total_bytes: int | None) -> None:
        """A download of ``url`` into ``dest`` begins (``total_bytes`` from the registry, if known)."""

    def download_advanced(self, done_bytes: int, total_bytes: int | None) -> None:
        """``done_bytes`` of the file are on disk (absolute; it goes back to 0 when a server ignores ``Range``)."""

    def download_retrying(self, attempt: int, max_attempts: int, reason: str, delay_s: float) -> None:
        """Attempt ``attempt`` failed for ``reason``; the next starts after ``delay_s`` seconds."""

    def download_finished(self, dest: Path, ok: bool) -> None:
        """The download ended: ``ok`` is True when ``dest`` now holds the verified file."""


class NullReporter:
    """A :class:`DownloadReporter` that ignores everything (the default)."""

    def download_started(self, url: str, dest: Path, total_bytes: int | None) -> None:
        """Ignore the event."""

    def download_advanced(self, done_bytes: int, total_bytes: int | None) -> None:
        """Ignore the event."""

    def download_retrying(self, attempt: int, max_attempts: int, reason: str, delay_s: float) -> None:
        """Ignore the event."""

    def download_finished(self, dest: Path, ok: bool) -> None:
        """Ignore the event."""


# --- options -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadOptions:
    """Network policy of one download.

    Attributes:
        connect_timeout_s: seconds to wait for the TCP/TLS connection.
        read_timeout_s: seconds without a single byte before the attempt is abandoned.
        max_attempts: attempts without progress before giving up (an attempt that received new
            bytes resets the count, so a flaky but working link still finishes).
        backoff_s: delay before the first retry; doubles each time, capped at ``max_backoff_s``.
        max_backoff_s: the cap on the retry delay.
        chunk_bytes: size of the reads from the socket.
        lock_timeout_s: how long to wait for another process downloading the same file before
            downloading anyway.
    """

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    chunk_bytes: int = 256 * 1024
    lock_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidOptionError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.chunk_bytes < 1:
            raise InvalidOptionError(f"chunk_bytes must be at least 1, got {self.chunk_bytes}")
        for name in ("connect_timeout_s", "read_timeout_s", "backoff_s", "max_backoff_s", "lock_timeout_s"):
            value: float = getattr(self, name)
            if value < 0:
                raise InvalidOptionError(f"{name} must not be negative, got {value}")

    def retry_delay_s(self, failures: int) -> float:
        """The pause after the ``failures``-th consecutive failure (1-based)."""
        return float(min(self.backoff_s * 2.0 ** (failures - 1), self.max_backoff_s))


@dataclass(frozen=True)
class Transport:
    """How files are fetched: what every download of a run shares.

    Attributes:
        offline: ``True`` forbids the network; ``None`` reads ``STEMSPLIT_OFFLINE`` at call time.
        options: timeouts, retries and lock wait.
        reporter: progress receiver (None: none).
        session: a ``requests.Session`` to use (None: a new one per download, honouring the environment).
    """

    offline: bool | None = None
    options: DownloadOptions = field(default_factory=DownloadOptions)
    reporter: DownloadReporter | None = None
    session: requests.Session | None = None


# --- hashes and cache files --------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The full SHA-256 hex digest of a file, read in 1 MiB blocks.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it is missing).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def digest_matches(actual: str, expected: str) -> bool:
    """Whether a full hex digest agrees with an expected digest or digest prefix (case-insensitive)."""
    return bool(expected) and actual.lower().startswith(expected.lower())


def temp_path_for(dest: Path) -> Path:
    """A fresh, process-unique temp name beside ``dest`` (``<name>.<uuid8>.incomplete``)."""
    return dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def temp_files_for(dest: Path) -> list[Path]:
    """Leftover temp files of ``dest`` (only a killed process leaves any)."""
    pattern = os.path.join(glob.escape(str(dest.parent)), glob.escape(dest.name) + ".*" + TEMP_SUFFIX)
    return sorted(Path(p) for p in glob.glob(pattern))


def is_cached(dest: Path, size_bytes: int | None = None) -> bool:
    """Whether ``dest`` is trusted as complete without hashing it.

    Only verified bytes are ever moved to a cache path, so the check is cheap: the file must exist and
    have the expected size, or, when the registry does not know the size, be non-empty. A file that was
    damaged in place is found by a full re-hash (``verify``), not here.
    """
    try:
        stat = dest.stat()
    except OSError:
        return False
    if not dest.is_file():
        return False
    return stat.st_size == size_bytes if size_bytes is not None else stat.st_size > 0


def verify_file(path: Path, sha256: str) -> str:
    """Re-hash a file and compare it with the expected digest (or prefix).

    Returns:
        The file's full SHA-256 hex digest.

    Raises:
        FileNotFoundError: the file does not exist.
        ChecksumError: the digest does not match (``expected``/``actual`` carry both).
    """
    actual = sha256_file(path)
    if not digest_matches(actual, sha256):
        raise ChecksumError(
            f"{path} is corrupt: its SHA-256 is {actual}, expected one starting with {sha256}",
            expected=sha256,
            actual=actual,
            path=path,
        )
    return actual


def install_file(src: Path, dest: Path, sha256: str) -> Path:
    """Copy a file the user obtained by hand into the cache, verified and atomically.

    The bytes are hashed while they are copied to a temp file beside ``dest``; ``dest`` is replaced
    only when the digest matches. ``src`` is never modified.

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ChecksumError: ``src`` does not match ``sha256``; nothing is installed.
        OSError: the cache cannot be written.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    try:
        digest = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            while block := fin.read(_HASH_BLOCK_BYTES):
                digest.update(block)
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
        actual = digest.hexdigest()
        if not digest_matches(actual, sha256):
            raise ChecksumError(
                f"{src} is not {dest.name}: expected a SHA-256 starting with {sha256}, "
                f"got {actual}; nothing was installed",
                expected=sha256,
                actual=actual,
                path=src,
            )
        os.replace(tmp, dest)
    finally:
        _remove_quietly(tmp)
    return dest


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# --- the download ------------------------------------------------------------------------------


def ensure_file(
    url: str,
    dest: Path,
    sha256: str,
    *,
    size_bytes: int | None = None,
    label: str | None = None,
    transport: Transport | None = None,
) -> Path:
    """Return ``dest``, downloading and verifying it first if it is not cached.

    Args:
        url: where the file is published.
        dest: its cache path; the folder is created if needed.
        sha256: the expected SHA-256, full or a prefix (at least 8 hex digits in the registry).
        size_bytes: the expected size, if known (see :func:`is_cached`).
        label: what to call the file in error messages (default: its name).
        transport: offline switch, timeouts and retries, progress and session (default
            :class:`Transport`: ``STEMSPLIT_OFFLINE``, default options, no progress, a new session).

    Returns:
        ``dest``, which now holds a verified file.

    Raises:
        OfflineModeError: the file is missing and offline mode is on; no socket was opened.
        DownloadError: the network, TLS or server failed (after retries where they make sense).
        ChecksumError: the bytes received do not match ``sha256``; nothing was installed.
    """
    if is_cached(dest, size_bytes):
        return dest
    transport = transport or Transport()
    target = _Target(url, dest, label or dest.name)
    if settings.offline(transport.offline):
        raise OfflineModeError(
            target.message(
                f"{target.label} is not in the cache and offline mode is on (STEMSPLIT_OFFLINE or --offline)",
                ways_out=(
                    "go online (unset STEMSPLIT_OFFLINE, drop --offline) and run the command again",
                    "fetch the url by other means and run `stemsplit models import FILE` "
                    "(or copy the file to the cache path)",
                ),
            ),
            url=url,
            path=dest,
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise target.unwritable(f"cannot create the cache folder {dest.parent}: {err}") from err
    with _best_effort_lock(dest, transport.options.lock_timeout_s, lambda: is_cached(dest, size_bytes)):
        if is_cached(dest, size_bytes):  # another process finished it while we waited
            return dest
        return download_file(url, dest, sha256, size_bytes=size_bytes, label=label, transport=transport)


def download_file(
    url: str,
    dest: Path,
    sha256: str,
    *,
    size_bytes: int | None = None,
    label: str | None = None,
    transport: Transport | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unconditionally (verified, atomic); an existing ``dest`` is replaced
    only by verified bytes. Arguments and errors as :func:`ensure_file`, without the offline check
    and the lock."""
    transport = transport or Transport()
    target = _Target(url, dest, label or dest.name)
    opts = transport.options
    report = transport.reporter or NullReporter()
    own_session = transport.session is None
    http = transport.session or _new_session()
    tmp = temp_path_for(dest)
    ok = False
    report.download_started(url, dest, size_bytes)
    try:
        with open(tmp, "xb") as fh:
            transfer = _Transfer(fh)
            _fetch_with_retries(http, target, transfer, opts, report)
            fh.flush()
            os.fsync(fh.fileno())
        actual = transfer.digest.hexdigest()
        if not digest_matches(actual, sha256):
            raise ChecksumError(
                target.message(
                    f"the file downloaded for {target.label} is not the published one: expected a SHA-256 "
                    f"starting with {sha256}, got {actual}; it was discarded",
                    "the server (or a proxy) serves a wrong or damaged file; try again later",
                ),
                expected=sha256,
                actual=actual,
                url=url,
                path=dest,
            )
        os.replace(tmp, dest)
        ok = True
    except ModelUnavailableError:
        raise
    except OSError as err:  # the cache folder is not writable, the disk is full …
        raise target.unwritable(f"could not write {dest.name} into {dest.parent}: {err}") from err
    finally:
        _remove_quietly(tmp)  # after os.replace there is nothing left to remove
        if own_session:
            http.close()
        report.download_finished(dest, ok)
    return dest


def _new_session() -> requests.Session:
    session = requests.Session()
    # trust_env stays True (the default): proxies, NO_PROXY, .netrc and REQUESTS_CA_BUNDLE apply.
    session.headers["User-Agent"] = f"stemsplit/{__version__}"
    return session


WAYS_OUT = (
    "download the url by hand (browser, another machine) and run `stemsplit models import FILE`",
    "point STEMSPLIT_MODEL_URL at a mirror that serves the same files",
)
"""What a user can do when a weight file cannot be downloaded (the last lines of every such error)."""
CACHE_WAYS_OUT = ("free some space, or point STEMSPLIT_CACHE_DIR at a writable folder",)
"""What a user can do when the cache cannot be written (importing or a mirror would not help either)."""


def mask_url(value: str) -> str:
    """``value`` with any password in it replaced by ``***`` (proxy URLs often carry credentials)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "***"
    if parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def unavailable_message(
    summary: str, *, url: str, dest: Path, hints: Sequence[str] = (), ways_out: Sequence[str] = WAYS_OUT
) -> str:
    """The text of every error about a weight file that could not be obtained, built in one place.

    One summary line with the reason, then indented lines: the url, the cache path, hints about this
    failure, and the ways out (``fix:`` then ``or:``)::

        could not download model 'htdemucs' (file 955717e8-8726e21a.th): HTTP 404 Not Found
          url:   https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th
          cache: /home/me/.cache/stemsplit/checkpoints/955717e8-8726e21a.th
          hint:  ...
          fix:   download the url by hand (browser, another machine) and run `stemsplit models import FILE`
          or:    point STEMSPLIT_MODEL_URL at a mirror that serves the same files
    """
    shown = mask_url(url)  # a mirror URL may carry a password
    lines = [summary.replace(url, shown), f"  url:   {shown}", f"  cache: {dest}"]
    lines += [f"  hint:  {hint}" for hint in hints]
    lines += [f"  {'fix:' if i == 0 else 'or:':6} {way}" for i, way in enumerate(ways_out)]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Target:
    """One file being obtained: where from, where to, and what to call it in errors."""

    url: str
    dest: Path
    label: str

    def message(self, summary: str, *hints: str, ways_out: Sequence[str] = WAYS_OUT) -> str:
        """See :func:`unavailable_message`."""
        return unavailable_message(summary, url=self.url, dest=self.dest, hints=hints, ways_out=ways_out)

    def failed(self, reason: str, *hints: str) -> DownloadError:
        """The error for a download that failed for ``reason`` (network, TLS, HTTP status …)."""
        return DownloadError(
            self.message(f"could not download {self.label}: {reason}", *hints), url=self.url, path=self.dest
        )

    def unwritable(self, summary: str) -> DownloadError:
        """The error for a cache that cannot be written (importing or a mirror would not help either)."""
        return DownloadError(
            self.message(summary, ways_out=CACHE_WAYS_OUT),
            url=self.url,
            path=self.dest,
        )


class _Transfer:
    """The bytes received so far: an open temp file, its running hash and counters."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.done = 0
        self.total: int | None = None

    def write(self, block: bytes) -> None:
        self.fh.write(block)
        self.digest.update(block)
        self.done += len(block)

    def restart(self) -> None:
        """Throw away what was received (the next response starts at byte 0)."""
        self.fh.seek(0)
        self.fh.truncate()
        self.digest = hashlib.sha256()
        self.done = 0


class _RetryableError(Exception):
    """An attempt failed in a way another attempt may fix (status 5xx, truncated body …)."""


_CHECK_CONNECTION = "check the connection (and HTTPS_PROXY if you use a proxy) and try again"


def _fetch_with_retries(
    http: requests.Session,
    target: _Target,
    transfer: _Transfer,
    opts: DownloadOptions,
    report: DownloadReporter,
) -> None:
    failures = 0
    high_water = 0
    while True:
        try:
            _fetch_once(http, target, transfer, opts, report)
            return
        except requests.exceptions.SSLError as err:  # before ConnectionError: it is one, but final
            raise _tls_error(target, err) from err
        except (
            _RetryableError,
            requests.ConnectionError,  # refused, reset, read timeout inside the body, proxy
            requests.Timeout,  # connect or read timeout before the body
            requests.exceptions.ChunkedEncodingError,  # body cut short (urllib3 ProtocolError)
        ) as err:
            reason = _describe(err)
            if _is_name_resolution(err):  # no DNS answer: retrying in seconds will not change that
                raise target.failed(f"{reason} (no network, or DNS blocked)", _CHECK_CONNECTION) from err
            if transfer.done > high_water:
                high_water, failures = transfer.done, 0  # progress: a fresh budget of attempts
            failures += 1
            if failures >= opts.max_attempts:
                raise target.failed(
                    f"{reason} (gave up after {failures} attempts)", _CHECK_CONNECTION
                ) from err
            delay = opts.retry_delay_s(failures)
            report.download_retrying(failures, opts.max_attempts, reason, delay)
            time.sleep(delay)
        except requests.RequestException as err:  # invalid URL, schema, too many redirects …
            raise target.failed(_describe(err), *_mirror_hint()) from err


def _fetch_once(
    http: requests.Session,
    target: _Target,
    transfer: _Transfer,
    opts: DownloadOptions,
    report: DownloadReporter,
) -> None:
    """One HTTP request, resuming at ``transfer.done`` with ``Range`` when bytes are already in."""
    start = transfer.done
    # identity: a Range on a gzip-encoded body would be meaningless, and we hash the file's bytes.
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    timeout = (opts.connect_timeout_s, opts.read_timeout_s)
    verify: bool | str = settings.ca_bundle() or True
    with http.get(target.url, headers=headers, stream=True, timeout=timeout, verify=verify) as resp:
        status = resp.status_code
        if status == 206:
            first, total = _parse_content_range(resp.headers.get("Content-Range"))
            if first != start:  # a range we did not ask for: start again from scratch
                transfer.restart()
                report.download_advanced(0, transfer.total)
                raise _RetryableError(f"the server resumed at byte {first}, not {start}")
            transfer.total = total
        elif status == 200:
            if start:  # the server ignored Range and sends the whole file again
                transfer.restart()
                report.download_advanced(0, transfer.total)
            transfer.total = _int_or_none(resp.headers.get("Content-Length"))
        elif status == 416 and start:
            transfer.restart()
            raise _RetryableError("the server refused to resume (HTTP 416)")
        elif status in _RETRY_STATUSES:
            raise _RetryableError(f"HTTP {status} {resp.reason or ''}".rstrip())
        else:
            raise target.failed(
                f"the server answered HTTP {status} {resp.reason or ''}".rstrip(),
                *(_mirror_hint() if status == 404 else ()),
            )
        for block in resp.iter_content(chunk_size=opts.chunk_bytes):
            transfer.write(block)
            report.download_advanced(transfer.done, transfer.total)
        if transfer.total is not None and transfer.done < transfer.total:
            raise _RetryableError(f"the connection closed after {transfer.done} of {transfer.total} bytes")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` → (100, 200); unknown parts are ``None``."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[len("bytes ") :].partition("/")
    first = _int_or_none(span.partition("-")[0])
    return first, _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _root_cause(err: BaseException) -> BaseException:
    """The urllib3 error under a requests one (``ConnectionError(MaxRetryError(reason=…))``)."""
    inner: BaseException = err
    for _ in range(3):
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        nested = getattr(nested, "reason", None) or nested
        if not isinstance(nested, BaseException) or nested is inner:
            break
        inner = nested
    return inner


def _is_name_resolution(err: BaseException) -> bool:
    name = type(_root_cause(err)).__name__
    return (
        name == "NameResolutionError"
        or "Failed to resolve" in str(err)
        or "Name or service not known" in str(err)
    )


def _describe(err: BaseException) -> str:
    """A short reason for a failed attempt (requests' own messages run to several hundred characters)."""
    cause = _root_cause(err)
    host = getattr(getattr(cause, "conn", None), "host", None) or ""
    if _is_name_resolution(err):
        return f"cannot resolve the host name {host}".rstrip()
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(err, requests.exceptions.ReadTimeout):
        return "the server stopped sending (read timeout)"
    if type(cause).__name__ == "NewConnectionError":
        return f"could not connect to {host or 'the server'}: connection refused or unreachable"
    text = str(err) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _tls_error(target: _Target, err: requests.exceptions.SSLError) -> DownloadError:
    return target.failed(
        f"TLS verification failed ({_describe(err)})",
        "if a proxy or firewall inspects TLS, point stemsplit at your organisation's CA bundle with "
        "REQUESTS_CA_BUNDLE=/path/to/ca.pem (or SSL_CERT_FILE)",
    )


def _mirror_hint() -> tuple[str, ...]:
    """A hint about ``STEMSPLIT_MODEL_URL`` when it is set (a mirror that lacks a file answers 404)."""
    if settings.model_base_url() is None:
        return ()
    return ("STEMSPLIT_MODEL_URL is set: check that the mirror has this file, or unset it",)


# --- the lock ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _best_effort_lock(dest: Path, timeout_s: float, done: Callable[[], bool]) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``dest``'s lock file while the body runs, if possible.

    Yields whether the lock is held. It is not held when the platform has no ``flock`` (Windows),
    the lock folder cannot be written, ``flock`` fails, ``done()`` became true while waiting, or
    ``timeout_s`` passed. Callers must be correct without it: the temp files are process-unique and
    ``os.replace`` is atomic, so the lock only saves bandwidth.
    """
    fd = _open_lock_file(dest)
    if fd is None:
        yield False
        return
    held = False
    try:
        held = _wait_for_lock(fd, timeout_s, done)
        yield held
    finally:
        if held:
            _unlock(fd)
        os.close(fd)


def _open_lock_file(dest: Path) -> int | None:
    if sys.platform == "win32":
        return None
    lock_dir = dest.parent / LOCKS_SUBDIR
    try:
        lock_dir.mkdir(exist_ok=True)
        return os.open(lock_dir / f"{dest.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None


def _wait_for_lock(fd: int, timeout_s: float, done: Callable[[], bool]) -> bool:
    if sys.platform == "win32":
        return False
    import fcntl

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError:
            return False  # flock unsupported here (some network filesystems)
        if done() or time.monotonic() >= deadline:
            return False
        time.sleep(_LOCK_POLL_S)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
