"""player/ and ``stemsplit play`` without a browser: the security rules, the parts, Download mix, the command."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stemsplit.audio.stemset import find_stems
from stemsplit.player import PlayerServer

SR = 44100
ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{20,})$")


def write_track(folder: Path, seconds: float = 2.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Four stems of noise and tones, float32 wav; returns each as float64 ``(n, 2)``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = round(seconds * SR)
    t = np.arange(n) / SR
    stems = {}
    for k, name in enumerate(("drums", "bass", "other", "vocals")):
        x = 0.05 * rng.standard_normal((n, 2)) + 0.05 * np.sin(2 * np.pi * 110 * (k + 1) * t)[:, None]
        sf.write(folder / f"{name}.wav", x.astype(np.float32), SR, subtype="FLOAT")
        stems[name] = x.astype(np.float32).astype(np.float64)
    assert np.abs(sum(stems.values())).max() < 1  # the mix needs no clip protection: it is the plain sum
    return stems


@pytest.fixture
def track(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "Some Song"
    return folder, write_track(folder)


@contextmanager
def serving(folder: Path) -> Iterator[PlayerServer]:
    """A player of the stems in ``folder``, serving on a thread until the block ends."""
    with PlayerServer(find_stems(folder)) as player:
        thread = threading.Thread(target=player.serve_forever, daemon=True)
        thread.start()
        yield player
        player.shutdown()
        thread.join(5)


@pytest.fixture
def server(track: tuple[Path, dict[str, np.ndarray]]) -> Iterator[PlayerServer]:
    with serving(track[0]) as player:
        yield player


def get(
    player: PlayerServer, path: str, *, host: str | None = None, cookie: bool = True, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", player.port, timeout=30)
    headers = {"Host": host if host is not None else f"127.0.0.1:{player.port}"}
    if cookie:
        headers["Cookie"] = f"{player.cookie}={player.token}"
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    return reply.status, {k.lower(): v for k, v in reply.getheaders()}, body


def test_the_token_comes_once_in_the_url_then_as_a_cookie(server: PlayerServer) -> None:
    assert URL.match(server.url)
    status, headers, _ = get(server, f"/?token={server.token}", cookie=False)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert (
        cookie.startswith(f"{server.cookie}={server.token};")
        and "HttpOnly" in cookie
        and "SameSite=Strict" in cookie
    )
    status, _, body = get(server, "/")
    assert status == 200 and b"<title>" in body


@pytest.mark.parametrize(
    "path", ["/", "/api/track", "/api/pcm?start=0&frames=10&rate=44100", "/static/player.js", "/nothing"]
)
def test_every_route_answers_403_without_the_token(server: PlayerServer, path: str) -> None:
    assert get(server, path, cookie=False)[0] == 403
    assert get(server, path + ("&" if "?" in path else "?") + "token=wrong", cookie=False)[0] == 403


@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}", "", "127.0.0.1"]
)
def test_a_foreign_host_header_answers_403(server: PlayerServer, host: str) -> None:
    assert get(server, "/api/track", host=host.format(port=server.port))[0] == 403
    assert get(server, "/api/track", host=f"localhost:{server.port}")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/%2E%2E%2Fserver.py",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/static/%252e%252e/server.py",
        "/static/..\\server.py",
        "/static/vendor/../../server.py",
        "//etc/passwd",
        "/static//etc/passwd",
        "/static/%c0%ae%c0%ae/server.py",
        "/static/player.js/../../source.py",
    ],
)
def test_no_path_leaves_the_page_files(server: PlayerServer, path: str) -> None:
    status, _, body = get(server, path)
    assert status == 404, (status, body[:80])


def test_only_get_is_answered(server: PlayerServer) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert get(server, "/api/track", method=method)[0] == 405


def test_the_track_and_its_overview(server: PlayerServer) -> None:
    import json

    status, _, body = get(server, "/api/track")
    track = json.loads(body)
    assert status == 200
    assert [s["name"] for s in track["stems"]] == ["drums", "bass", "other", "vocals"]
    assert [s["pitched"] for s in track["stems"]] == [False, True, True, True]
    assert (track["samplerate"], track["frames"], track["title"]) == (SR, 2 * SR, "Some Song")
    overview = json.loads(get(server, "/api/overview")[2])
    assert set(overview) == {"drums", "bass", "other", "vocals"}
    assert all(lo <= hi for lo, hi in overview["bass"])


def _pcm(server: PlayerServer, start: int, frames: int, rate: int) -> np.ndarray:
    status, headers, body = get(server, f"/api/pcm?start={start}&frames={frames}&rate={rate}")
    assert status == 200, body
    n = int(headers["x-frames"])
    return np.frombuffer(body, dtype="<f4").reshape(4, 2, n)


def test_parts_at_the_track_rate_are_the_stems(
    server: PlayerServer, track: tuple[Path, dict[str, np.ndarray]]
) -> None:
    stems = track[1]
    part = _pcm(server, 1000, 5000, SR)
    for k, name in enumerate(("drums", "bass", "other", "vocals")):
        np.testing.assert_array_equal(part[k], stems[name][1000:6000].T)
    assert _pcm(server, 2 * SR - 100, 5000, SR).shape == (4, 2, 100)  # cut at the end


def test_parts_at_48k_join_as_the_whole_track_resampled(
    server: PlayerServer, track: tuple[Path, dict[str, np.ndarray]]
) -> None:
    whole = soxr.resample(track[1]["vocals"].astype(np.float32), SR, 48000)
    step = 160 * 60  # parts start on the 44100/48000 grid (160 frames at 48 kHz)
    parts = np.concatenate([_pcm(server, s, step, 48000)[3] for s in range(0, 96000, step)], axis=1)
    assert parts.shape[1] == 96000
    inner = slice(2000, whole.shape[0] - 2000)  # the joins, not the track's two ends (padded differently)
    assert np.abs(parts[:, inner] - whole.T[:, inner]).max() < 1e-5
    assert get(server, "/api/pcm?start=7&frames=10&rate=48000")[0] == 400  # off the grid


def test_download_mix_renders_the_balance_and_deletes_its_file(
    server: PlayerServer, track: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    stems = track[1]
    status, headers, body = get(server, "/api/mix?mute=bass&gain.vocals=0.5&start=0.5&end=1.5")
    assert status == 200 and headers["content-type"] == "audio/wav"
    assert headers["content-disposition"] == 'attachment; filename="Some Song mix.wav"'
    (tmp_path / "got.wav").write_bytes(body)
    got, rate = sf.read(tmp_path / "got.wav")
    ref = (stems["drums"] + stems["other"] + 0.5 * stems["vocals"])[SR // 2 : SR + SR // 2]
    assert rate == SR and np.abs(got - ref).max() <= 2e-4
    assert list(server.workdir.iterdir()) == []
    assert get(server, "/api/mix?mute=guitar")[0] == 400
    assert get(server, "/api/mix?tempo=3")[0] == 400


def test_closing_removes_the_temporary_folder(track: tuple[Path, dict[str, np.ndarray]]) -> None:
    player = PlayerServer(find_stems(track[0]))
    assert player.workdir.is_dir()
    player.close()
    assert not player.workdir.exists()


def test_a_stem_mp4_is_served_from_its_tracks(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from stemsplit.audio import StemMp4Writer, WriteOptions

    rng = np.random.default_rng(1)
    blocks = {
        s: (0.05 * rng.standard_normal((2, SR))).astype(np.float32)
        for s in ("drums", "bass", "other", "vocals")
    }
    path = tmp_path / "t.stem.mp4"
    options = WriteOptions(format="stem.mp4", stem_codec="alac", bit_depth="24")
    with StemMp4Writer(path, options, sources=tuple(blocks), samplerate=SR, frames=SR) as writer:
        writer.write_master(sum(blocks.values()))
        writer.write_all(blocks)
    with PlayerServer(find_stems(path)) as player:
        part = player.source.pcm(0, SR, SR)
        for k, name in enumerate(blocks):
            assert np.abs(part[k] - blocks[name]).max() < 1e-5
    assert not player.workdir.exists()


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path)}


def test_play_prints_one_line_and_ctrl_c_stops_it_and_cleans_up(
    track: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stemsplit", "play", str(track[0]), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(scratch),
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = URL.match(line.strip())
        assert match, line
        assert [p.name[:15] for p in scratch.iterdir()] == ["stemsplit-play-"]
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        conn.request("GET", f"/api/track?token={match.group(2)}")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        stop = time.monotonic()
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - stop < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert out == ""  # the URL was the only line
    assert list(scratch.iterdir()) == []


def test_play_on_a_stem_folder_does_not_import_torch(
    track: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from stemsplit.player import server\n"
        "def serve(self):\n"
        "    print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
        "    raise KeyboardInterrupt\n"
        "server.PlayerServer.serve_forever = serve\n"
        "from stemsplit.cli import main\n"
        f"main(['play', {str(track[0])!r}, '--no-browser'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no torch" in done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--port", "70000"], "--port 70000 is not valid"), (["nowhere"], "no such file or folder")],
)
def test_play_refuses_bad_input_with_exit_2(
    track: tuple[Path, dict[str, np.ndarray]], args: list[str], words: str
) -> None:
    from typer.testing import CliRunner

    from stemsplit.cli.app import app

    argv = ["play", *(args if args == ["nowhere"] else [str(track[0]), *args]), "--no-browser"]
    result = CliRunner().invoke(app, argv, catch_exceptions=False)
    assert result.exit_code == 2 and words in result.stderr and result.stdout == ""


def test_the_wheel_carries_the_page_and_the_vendored_files(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = "stemsplit/player/static/"
    for name in (
        "index.html",
        "player.js",
        "player.css",
        "vendor/signalsmith-stretch/SignalsmithStretch.mjs",
        "vendor/signalsmith-stretch/LICENSE.txt",
    ):
        assert static + name in names
