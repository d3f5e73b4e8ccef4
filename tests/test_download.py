"""Downloads against a loopback server: retries, resume, timeouts, hashes, offline, TLS, proxies, locks."""

from __future__ import annotations

import hashlib
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from httpserver import LoopbackServer, drop_after, full, stall_after, status
from stemsplit.errors import (
    ChecksumError,
    DownloadError,
    InvalidOptionError,
    ModelUnavailableError,
    OfflineModeError,
)
from stemsplit.weights import download
from stemsplit.weights.download import DownloadOptions, Transport, ensure_file

PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)
FAST = DownloadOptions(
    connect_timeout_s=2.0,
    read_timeout_s=2.0,
    max_attempts=3,
    backoff_s=0.001,
    max_backoff_s=0.01,
    chunk_bytes=4096,
    lock_timeout_s=10.0,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("STEMSPLIT_OFFLINE", "STEMSPLIT_MODEL_URL", "STEMSPLIT_CACHE_DIR", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


def payload(n_bytes: int = 60_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n_bytes)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def official_name(data: bytes, signature: str = "0badc0de") -> str:
    return f"{signature}-{sha256(data)[:8]}.th"


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(download.TEMP_SUFFIX))


def range_start(header: str | None) -> int:
    assert header is not None and header.startswith("bytes=") and header.endswith("-"), header
    return int(header[len("bytes=") : -1])


class Recorder:
    """A DownloadReporter that records every event."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def download_started(self, url: str, dest: Path, total_bytes: int | None) -> None:
        self.events.append(("started", url, dest, total_bytes))

    def download_advanced(self, done_bytes: int, total_bytes: int | None) -> None:
        self.events.append(("advanced", done_bytes, total_bytes))

    def download_retrying(self, attempt: int, max_attempts: int, reason: str, delay_s: float) -> None:
        self.events.append(("retrying", attempt, max_attempts, reason, delay_s))

    def download_finished(self, dest: Path, ok: bool) -> None:
        self.events.append(("finished", dest, ok))

    def of(self, kind: str) -> list[tuple[object, ...]]:
        return [e for e in self.events if e[0] == kind]


def serve_file(server: LoopbackServer, data: bytes, *replies, honour_range: bool = True) -> tuple[str, str]:
    name = official_name(data)
    path = f"/hybrid_transformer/{name}"
    server.serve(path, data, *replies, honour_range=honour_range)
    return server.url.rstrip("/") + path, name


# --- the happy path and the cache --------------------------------------------------------------


def test_happy_path_downloads_verifies_and_reports(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload()
    url, name = serve_file(server, data)
    dest = tmp_path / "checkpoints" / name
    rec = Recorder()

    assert ensure_file(url, dest, sha256(data)[:8], transport=Transport(options=FAST, reporter=rec)) == dest

    assert dest.read_bytes() == data
    assert leftovers(dest.parent) == []
    assert [h.status for h in server.hits] == [200]
    assert rec.of("started") == [("started", url, dest, None)]
    assert rec.of("advanced")[-1] == ("advanced", len(data), len(data))
    assert rec.of("finished") == [("finished", dest, True)]


def test_full_digest_is_accepted_as_well_as_prefix(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(5000, seed=1)
    url, name = serve_file(server, data)
    ensure_file(url, tmp_path / name, sha256(data).upper(), transport=Transport(options=FAST))
    assert (tmp_path / name).read_bytes() == data


def test_cached_file_is_trusted_without_any_request(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(1000, seed=2)
    url, name = serve_file(server, data)
    dest = tmp_path / name
    dest.write_bytes(b"not even the right bytes")  # trusted by existence and size, not re-hashed

    assert ensure_file(url, dest, sha256(data)[:8], transport=Transport(options=FAST)) == dest
    assert server.hits == []


def test_cached_file_of_the_wrong_known_size_is_downloaded_again(
    server: LoopbackServer, tmp_path: Path
) -> None:
    data = payload(1000, seed=3)
    url, name = serve_file(server, data)
    dest = tmp_path / name
    dest.write_bytes(b"short")

    ensure_file(url, dest, sha256(data)[:8], size_bytes=len(data), transport=Transport(options=FAST))

    assert dest.read_bytes() == data
    assert len(server.hits) == 1


def test_empty_cached_file_is_not_trusted(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(1000, seed=4)
    url, name = serve_file(server, data)
    dest = tmp_path / name
    dest.write_bytes(b"")

    ensure_file(url, dest, sha256(data)[:8], transport=Transport(options=FAST))

    assert dest.read_bytes() == data


# --- failures and recovery ---------------------------------------------------------------------


def test_http_500_then_success_is_retried(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=5)
    url, name = serve_file(server, data, status(500), full())
    rec = Recorder()

    ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST, reporter=rec))

    assert (tmp_path / name).read_bytes() == data
    assert [h.status for h in server.hits] == [500, 200]
    assert len(rec.of("retrying")) == 1
    assert "500" in str(rec.of("retrying")[0][3])


def test_persistent_http_500_gives_up_after_max_attempts(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=6)
    url, name = serve_file(server, data, status(503))

    with pytest.raises(DownloadError, match="3 attempts") as info:
        ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST))

    assert isinstance(info.value, ModelUnavailableError)
    assert len(server.hits) == FAST.max_attempts
    assert not (tmp_path / name).exists()
    assert leftovers(tmp_path) == []


def test_http_404_is_final_and_not_retried(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.url + "hybrid_transformer/missing-12345678.th"

    with pytest.raises(DownloadError, match="404") as info:
        ensure_file(url, tmp_path / "missing-12345678.th", "12345678", transport=Transport(options=FAST))

    assert info.value.url == url
    assert len(server.hits) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / download.LOCKS_SUBDIR]


def test_dropped_connection_resumes_with_range(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=7)
    cut = 20_000
    url, name = serve_file(server, data, drop_after(cut), full())

    ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST))

    assert (tmp_path / name).read_bytes() == data
    first, second = server.hits
    assert (first.range, first.status) == (None, 200)
    assert second.status == 206
    assert 0 < range_start(second.range) <= cut  # resumed from the bytes already on disk
    assert leftovers(tmp_path) == []


def test_server_ignoring_range_restarts_the_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=8)
    cut = 25_000
    url, name = serve_file(server, data, drop_after(cut), full(), honour_range=False)
    rec = Recorder()

    ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST, reporter=rec))

    assert (tmp_path / name).read_bytes() == data  # not the first 25 kB twice
    first, second = server.hits
    assert (first.range, first.status) == (None, 200)
    assert 0 < range_start(second.range) <= cut and second.status == 200
    done = [e[1] for e in rec.of("advanced")]
    assert 0 in done[1:]  # progress went back to zero when the body restarted


def test_read_timeout_is_retried_and_resumed(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=9)
    url, name = serve_file(server, data, stall_after(10_000, 10.0), full())
    options = DownloadOptions(read_timeout_s=0.3, max_attempts=3, backoff_s=0.001, chunk_bytes=4096)

    ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=options))

    assert (tmp_path / name).read_bytes() == data
    first, second = server.hits
    assert first.range is None
    assert 0 < range_start(second.range) <= 10_000


def test_read_timeout_that_persists_is_a_download_error(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=10)
    url, name = serve_file(server, data, stall_after(0, 10.0))
    options = DownloadOptions(read_timeout_s=0.2, max_attempts=2, backoff_s=0.001)

    started = time.monotonic()
    with pytest.raises(DownloadError, match="2 attempts"):
        ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=options))

    assert time.monotonic() - started < 5.0  # the timeout fired; we did not wait out the 10 s stall
    assert len(server.hits) == 2
    assert not (tmp_path / name).exists()
    assert leftovers(tmp_path) == []


def test_wrong_hash_leaves_nothing_in_the_cache(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=11)
    published = payload(seed=12)  # the registry describes other bytes than the server sends
    url, _ = serve_file(server, data)
    dest = tmp_path / "checkpoints" / official_name(published)

    with pytest.raises(ChecksumError) as info:
        ensure_file(url, dest, sha256(published)[:8], transport=Transport(options=FAST))

    err = info.value
    assert isinstance(err, ModelUnavailableError)
    assert err.expected == sha256(published)[:8]
    assert err.actual == sha256(data)
    assert err.expected in str(err) and err.actual in str(err)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_wrong_hash_does_not_replace_an_existing_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=13)
    url, name = serve_file(server, data)
    dest = tmp_path / name
    dest.write_bytes(b"previous content")

    with pytest.raises(ChecksumError):
        download.download_file(url, dest, "deadbeef", transport=Transport(options=FAST))

    assert dest.read_bytes() == b"previous content"


def test_keyboard_interrupt_mid_body_removes_the_temp_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=14)
    url, name = serve_file(server, data)

    class Interrupting(Recorder):
        def download_advanced(self, done_bytes: int, total_bytes: int | None) -> None:
            super().download_advanced(done_bytes, total_bytes)
            if done_bytes > 0:
                assert leftovers(tmp_path), "the body should be streaming into a temp file"
                raise KeyboardInterrupt

    rec = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST, reporter=rec))

    assert not (tmp_path / name).exists()
    assert leftovers(tmp_path) == []
    assert rec.of("finished") == [("finished", tmp_path / name, False)]


def test_leftover_temp_file_of_a_killed_process_is_not_reused(server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=15)
    url, name = serve_file(server, data)
    stale = tmp_path / f"{name}.deadbeef{download.TEMP_SUFFIX}"
    stale.write_bytes(data[:1000] + b"garbage")

    ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST))

    assert (tmp_path / name).read_bytes() == data
    assert server.hits[0].range is None  # no cross-process resume
    assert download.temp_files_for(tmp_path / name) == [stale]


def test_unwritable_cache_is_a_download_error(server: LoopbackServer, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DownloadError, match="STEMSPLIT_CACHE_DIR"):
        ensure_file(
            server.url + "x.th", blocker / "sub" / "x.th", "12345678", transport=Transport(options=FAST)
        )


# --- what a failed download says ----------------------------------------------------------------


def assert_names_file_url_cache_and_ways_out(
    err: ModelUnavailableError, label: str, url: str, dest: Path
) -> str:
    """The design's rule for a missing model: model, URL, cache path, both ways out; returns line 1."""
    message = str(err)
    first, *rest = message.splitlines()
    assert label in first  # the summary line names the file and says why ...
    assert url not in first and "stemsplit models import" not in first  # ... and nothing else
    assert f"  url:   {url}" in rest and f"  cache: {dest}" in rest
    ways_out = [line for line in rest if line.startswith(("  fix:", "  or:"))]
    assert len(ways_out) == 2, message
    assert "stemsplit models import FILE" in ways_out[0] and "STEMSPLIT_MODEL_URL" in ways_out[1]
    assert (err.url, err.path) == (url, dest)
    return first


def test_http_404_error_names_the_file_url_cache_path_and_both_ways_out(
    server: LoopbackServer, tmp_path: Path
) -> None:
    url = server.url + "hybrid_transformer/missing-12345678.th"
    dest = tmp_path / "checkpoints" / "missing-12345678.th"

    with pytest.raises(DownloadError) as info:
        ensure_file(
            url,
            dest,
            "12345678",
            label="model 'tiny' (file missing-12345678.th)",
            transport=Transport(options=FAST),
        )

    first = assert_names_file_url_cache_and_ways_out(info.value, "model 'tiny'", url, dest)
    assert "HTTP 404" in first
    assert "STEMSPLIT_MODEL_URL is set" not in str(info.value)  # no mirror set: no hint about one


def test_http_404_from_a_mirror_says_to_check_the_mirror(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMSPLIT_MODEL_URL", server.url + "mirror/")
    url = server.url + "mirror/hybrid_transformer/missing-12345678.th"

    with pytest.raises(DownloadError) as info:
        ensure_file(url, tmp_path / "missing-12345678.th", "12345678", transport=Transport(options=FAST))

    assert "  hint:  STEMSPLIT_MODEL_URL is set: check that the mirror has this file" in str(info.value)


def test_a_password_in_a_mirror_url_is_not_printed(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.url.replace("://", "://me:s3cret@") + "mirror/missing-12345678.th"

    with pytest.raises(DownloadError) as info:
        ensure_file(url, tmp_path / "missing-12345678.th", "12345678", transport=Transport(options=FAST))

    assert "s3cret" not in str(info.value) and "me:***@" in str(info.value)


def test_exhausted_retries_error_names_the_file_url_cache_path_and_both_ways_out(
    server: LoopbackServer, tmp_path: Path
) -> None:
    data = payload(seed=30)
    url, name = serve_file(server, data, status(500))
    dest = tmp_path / name

    with pytest.raises(DownloadError) as info:
        ensure_file(
            url,
            dest,
            sha256(data)[:8],
            label=f"model 'tiny' (file {name})",
            transport=Transport(options=FAST),
        )

    first = assert_names_file_url_cache_and_ways_out(info.value, f"model 'tiny' (file {name})", url, dest)
    assert "HTTP 500" in first and f"{FAST.max_attempts} attempts" in first
    assert "HTTPS_PROXY" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)  # chained to the last failure


def test_wrong_hash_error_names_the_file_url_cache_path_and_both_ways_out(
    server: LoopbackServer, tmp_path: Path
) -> None:
    data, published = payload(seed=31), payload(seed=32)
    url, _ = serve_file(server, data)
    dest = tmp_path / official_name(published)

    with pytest.raises(ChecksumError) as info:
        download.download_file(
            url, dest, sha256(published)[:8], label="model 'tiny'", transport=Transport(options=FAST)
        )

    first = assert_names_file_url_cache_and_ways_out(info.value, "model 'tiny'", url, dest)
    assert sha256(published)[:8] in first and sha256(data) in first


def test_without_a_label_errors_name_the_file(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.url + "hybrid_transformer/missing-12345678.th"
    with pytest.raises(DownloadError) as info:
        ensure_file(url, tmp_path / "missing-12345678.th", "12345678", transport=Transport(options=FAST))
    assert "missing-12345678.th" in str(info.value).splitlines()[0]


# --- offline -----------------------------------------------------------------------------------


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way of opening a socket fail, and record each attempt."""
    attempts: list[str] = []

    def refuse(name: str):
        def fake(*args: object, **kwargs: object) -> object:
            attempts.append(name)
            raise OSError(f"test: {name} is forbidden")

        return fake

    monkeypatch.setattr(socket, "socket", refuse("socket.socket"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    return attempts


def test_socket_patch_really_blocks_downloads(no_sockets: list[str], tmp_path: Path) -> None:
    """Control for the offline tests: with the patch, an online download cannot succeed."""
    with pytest.raises(DownloadError):
        ensure_file(
            "http://127.0.0.1:9/x.th",
            tmp_path / "x.th",
            "12345678",
            transport=Transport(offline=False, options=FAST),
        )
    assert no_sockets


def test_offline_env_never_opens_a_socket(
    no_sockets: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "1")
    url = "http://127.0.0.1:9/hybrid_transformer/x-12345678.th"
    dest = tmp_path / "checkpoints" / "x-12345678.th"

    with pytest.raises(OfflineModeError) as info:
        ensure_file(url, dest, "12345678", label="model 'tiny'", transport=Transport(options=FAST))

    assert no_sockets == []
    message = str(info.value)
    assert "model 'tiny'" in message and url in message and str(dest) in message
    assert "stemsplit models import" in message
    assert info.value.url == url and info.value.path == dest


def test_offline_argument_overrides_env(
    no_sockets: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "0")
    with pytest.raises(OfflineModeError):
        ensure_file(
            "http://127.0.0.1:9/x.th", tmp_path / "x.th", "12345678", transport=Transport(offline=True)
        )
    assert no_sockets == []


def test_offline_with_a_cached_file_just_returns_it(no_sockets: list[str], tmp_path: Path) -> None:
    dest = tmp_path / "x-12345678.th"
    dest.write_bytes(b"cached")
    assert ensure_file("http://127.0.0.1:9/x.th", dest, "12345678", transport=Transport(offline=True)) == dest
    assert no_sockets == []


# --- concurrency -------------------------------------------------------------------------------


def _race(url: str, dest: Path, digest: str, n: int = 2) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ensure_file(url, dest, digest, transport=Transport(options=FAST))
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


@pytest.mark.parametrize(
    ("locked", "seed", "hits"),
    [
        (True, 16, 1),  # the lock made the second one wait for the first
        (False, 17, 2),  # both really downloaded, each into its own temp file
    ],
    ids=["with-the-lock", "without-the-lock"],
)
def test_concurrent_downloaders_share_or_each_do_one_correct_download(
    locked: bool,
    seed: int,
    hits: int,
    server: LoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two downloaders of one file both get it whole. The lock is only an optimisation (it may silently fail
    on network filesystems): with it the second waits for the first's download, without it each downloads."""
    if not locked:
        monkeypatch.setattr(download, "_open_lock_file", lambda dest: None)
    data = payload(seed=seed)
    url, name = serve_file(server, data, full(delay_s=0.3))
    dest = tmp_path / name

    results = _race(url, dest, sha256(data)[:8])

    assert results == [dest, dest]
    assert dest.read_bytes() == data
    assert leftovers(tmp_path) == []
    assert len(server.hits) == hits


_DOWNLOAD_IN_A_PROCESS = """
import sys
from pathlib import Path
from stemsplit.weights.download import DownloadOptions, Transport, ensure_file
url, dest, digest = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
print(ensure_file(url, dest, digest, transport=Transport(offline=False, options=DownloadOptions(backoff_s=0.01, lock_timeout_s=60))))
"""


def test_two_processes_asking_at_once_both_succeed_with_one_verified_file(
    server: LoopbackServer, tmp_path: Path
) -> None:
    import subprocess
    import sys

    data = payload(n_bytes=400_000, seed=19)
    url, name = serve_file(server, data, full(delay_s=0.5))
    dest = tmp_path / "cache" / name
    args = [sys.executable, "-c", _DOWNLOAD_IN_A_PROCESS, url, str(dest), sha256(data)[:8]]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outcomes]
    assert [out.strip() for out, _ in outcomes] == [str(dest), str(dest)]
    assert dest.read_bytes() == data
    assert leftovers(dest.parent) == []
    assert 1 <= len(server.hits) <= 2  # normally 1 (the lock); never a corrupt or half file


# --- environment: proxies and TLS --------------------------------------------------------------


def test_proxy_from_the_environment_is_used(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(seed=18)
    server.serve("/demucs/hybrid_transformer/p-12345678.th", data)
    monkeypatch.setenv("HTTP_PROXY", server.url)  # the loopback server plays the proxy
    url = "http://models.example.invalid/demucs/hybrid_transformer/p-12345678.th"

    ensure_file(url, tmp_path / "p.th", sha256(data)[:8], transport=Transport(options=FAST))

    assert (tmp_path / "p.th").read_bytes() == data
    assert [h.path for h in server.hits] == [url]  # absolute-form request target: it went via the proxy


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(var, raising=False)
    with LoopbackServer(tls=self_signed) as srv:
        yield srv


def test_tls_verification_failure_says_how_to_fix_it(tls_server: LoopbackServer, tmp_path: Path) -> None:
    data = payload(seed=19)
    url, name = serve_file(tls_server, data)

    with pytest.raises(DownloadError) as info:
        ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST))

    message = str(info.value)
    assert "TLS" in message and "REQUESTS_CA_BUNDLE" in message and "SSL_CERT_FILE" in message
    assert "stemsplit models import" in message
    assert isinstance(info.value.__cause__, requests.exceptions.SSLError)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_ca_bundle_from_the_environment_is_trusted(
    variable: str,
    tls_server: LoopbackServer,
    self_signed: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, str(self_signed[0]))
    data = payload(seed=20)
    url, name = serve_file(tls_server, data)

    ensure_file(url, tmp_path / name, sha256(data)[:8], transport=Transport(options=FAST))

    assert (tmp_path / name).read_bytes() == data


# --- small pieces ------------------------------------------------------------------------------


def test_install_file_copies_verified_bytes_and_refuses_others(tmp_path: Path) -> None:
    data = payload(3000, seed=21)
    src = tmp_path / "in.th"
    src.write_bytes(data)
    dest = tmp_path / "cache" / official_name(data)

    download.install_file(src, dest, sha256(data)[:8])
    assert dest.read_bytes() == data and src.read_bytes() == data

    other = tmp_path / "other.th"
    other.write_bytes(b"x" * 100)
    dest2 = tmp_path / "cache" / "y.th"
    with pytest.raises(ChecksumError) as info:
        download.install_file(other, dest2, sha256(data)[:8])
    assert info.value.actual == sha256(b"x" * 100)
    assert not dest2.exists() and leftovers(dest2.parent) == []


def test_verify_file_detects_a_changed_byte(tmp_path: Path) -> None:
    data = bytearray(payload(3000, seed=22))
    path = tmp_path / "f.th"
    path.write_bytes(bytes(data))
    assert download.verify_file(path, sha256(bytes(data))[:8]) == sha256(bytes(data))
    data[1234] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        download.verify_file(path, sha256(bytes(payload(3000, seed=22)))[:8])


@pytest.mark.parametrize(
    ("actual", "expected", "matches"),
    [
        ("abcdef12" + "0" * 56, "abcdef12", True),
        ("abcdef12" + "0" * 56, "ABCDEF12", True),
        ("abcdef12" + "0" * 56, "abcdef13", False),
        ("abcdef12" + "0" * 56, "", False),
    ],
)
def test_digest_matches(actual: str, expected: str, matches: bool) -> None:
    assert download.digest_matches(actual, expected) is matches


def test_retry_delay_doubles_and_is_capped() -> None:
    options = DownloadOptions(backoff_s=0.5, max_backoff_s=3.0)
    assert [options.retry_delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"read_timeout_s": -1.0}, {"chunk_bytes": 0}])
def test_invalid_options_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidOptionError):
        DownloadOptions(**kwargs)  # type: ignore[arg-type]


def test_a_host_name_that_does_not_resolve_fails_at_once_with_a_short_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No DNS answer is not worth five attempts with back-off; the message must stay readable: a short
    summary line (not requests' several hundred characters), then short hint lines."""
    import socket

    lookups: list[str] = []

    def no_dns(host: str, *args: object, **kwargs: object) -> object:
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    reporter = Recorder()
    with pytest.raises(DownloadError, match=r"cannot resolve the host name models\.example\.invalid") as info:
        download.ensure_file(
            "https://models.example.invalid/x-12345678.th",
            tmp_path / "x-12345678.th",
            "12345678",
            transport=Transport(offline=False, options=FAST, reporter=reporter),
        )
    assert lookups == ["models.example.invalid"]
    first, *rest = str(info.value).splitlines()
    assert "cannot resolve the host name" in first and len(first) < 200
    assert rest and all(line.startswith("  ") and len(line) < 200 for line in rest)
    assert not list(tmp_path.iterdir()) or all(not p.name.endswith(".incomplete") for p in tmp_path.iterdir())


def test_refused_connection_is_retried_with_a_short_reason(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reporter = Recorder()
    with pytest.raises(DownloadError, match=r"could not connect to 127\.0\.0\.1") as info:
        download.ensure_file(
            f"http://127.0.0.1:{port}/x-12345678.th",
            tmp_path / "x-12345678.th",
            "12345678",
            transport=Transport(offline=False, options=FAST, reporter=reporter),
        )
    assert f"after {FAST.max_attempts} attempts" in str(info.value)
