"""The player's local web server: the page, the stems in parts, their overviews, and Download mix.

Security, since a server on a laptop is still a server:

* it listens on ``127.0.0.1`` unless told otherwise;
* every route answers 403 without the token: the URL carries it once (``/?token=…``), the answer sets it as
  a cookie (``HttpOnly``, ``SameSite=Strict``, named after the port so two players do not clash);
* a request whose ``Host`` header is not the server's own address or ``localhost`` (with its port)
  answers 403, so a web page cannot reach it through DNS rebinding;
* routes are a fixed table: the page's own files by exact name, the stems by index; no request path is
  ever joined to a folder, so no ``..`` in any encoding leads anywhere;
* the only writes are Download mix's files, in the server's own temporary folder, deleted once sent;
  the folder goes when the server closes.

Routes (GET): ``/`` the page; ``/static/NAME`` its scripts, style and the vendored Signalsmith Stretch;
``/api/track`` the stems (JSON); ``/api/overview`` their waveform overviews (JSON); ``/api/pcm?start=&frames=&rate=``
a part of every stem as little-endian float32, planar ``(stems, 2, n)``; ``/api/mix?…`` the current
balance rendered by :func:`stemsplit.audio.mix.write_mix` as a 16-bit WAV attachment.
"""

from __future__ import annotations

import hmac
import http.server
import json
import secrets
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stemsplit.audio.mix import MixSettings, parse_names, write_mix
from stemsplit.audio.stemset import StemSet
from stemsplit.audio.writer import WriteOptions
from stemsplit.errors import InvalidOptionError, StemsplitError, first_line
from stemsplit.player.source import MAX_PART_S, StemSource

STATIC_FILES: dict[str, tuple[str, str]] = {
    "player.js": ("player.js", "text/javascript; charset=utf-8"),
    "player.css": ("player.css", "text/css; charset=utf-8"),
    "SignalsmithStretch.mjs": (
        "vendor/signalsmith-stretch/SignalsmithStretch.mjs",
        "text/javascript; charset=utf-8",
    ),
}
"""What ``/static/NAME`` serves: NAME → (file under ``player/static``, content type)."""

_CSP = (
    "default-src 'none'; script-src 'self' blob: 'wasm-unsafe-eval'; worker-src 'self' blob:; "
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; media-src 'self' blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    file: Path | None = None  # streamed, then deleted


class PlayerServer:
    """Serve one track's stems to the mixer page until closed.

    Use it as a context manager, or call :meth:`close`: that stops it and removes its temporary folder.

    Args:
        stems: the track's stems.
        host: the address to listen on (``127.0.0.1``: this computer only).
        port: the port (0: a free one).
        token: the secret every request must carry (default: a fresh random one).

    Raises:
        OSError: the address or port cannot be bound.
        AudioDecodeError: a stem could not be prepared.
    """

    def __init__(
        self, stems: StemSet, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None
    ) -> None:
        self.stems = stems
        self.token = token or secrets.token_urlsafe(24)
        self.workdir = Path(tempfile.mkdtemp(prefix="stemsplit-play-"))
        self._mix_count = 0
        self._lock = threading.Lock()
        try:
            self.source = StemSource(stems, self.workdir)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server_class = type(
                "_Server",
                (http.server.ThreadingHTTPServer,),
                {"address_family": family, "handle_error": _handle_error},
            )
            self.httpd: http.server.ThreadingHTTPServer = server_class((host, port), _handler(self))
            self.httpd.daemon_threads = True
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.host = host
        self.port = int(self.httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.allowed_hosts = frozenset(
            {f"{shown}:{self.port}", f"localhost:{self.port}", f"127.0.0.1:{self.port}"}
        )
        self.cookie = f"stemsplit-{self.port}"

    @property
    def url(self) -> str:
        """The page's address with the token: ``http://HOST:PORT/?token=TOKEN``."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        """Answer requests until :meth:`shutdown` (from another thread) or an interrupt."""
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (call from another thread)."""
        self.httpd.shutdown()

    def close(self) -> None:
        """Close the socket and remove the temporary folder."""
        self.httpd.server_close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PlayerServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # --- requests -------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, list[str]], host: str | None, cookies: str | None) -> _Reply:
        """The reply to a GET of ``path`` (already split from its query)."""
        if host is None or host.lower() not in self.allowed_hosts:
            return _Reply(HTTPStatus.FORBIDDEN, b"forbidden: unknown Host\n")
        given = query.get("token", [None])[0]
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            if path == "/":  # the token leaves the address bar and the history
                return _Reply(HTTPStatus.SEE_OTHER, headers=(("Location", "/"), ("Set-Cookie", cookie)))
        elif not self._has_cookie(cookies):
            return _Reply(HTTPStatus.FORBIDDEN, b"forbidden: open the address stemsplit play printed\n")
        try:
            return self._route(path, query)
        except (InvalidOptionError, ValueError) as err:
            return _Reply(HTTPStatus.BAD_REQUEST, (str(err) + "\n").encode())
        except StemsplitError as err:
            return _Reply(HTTPStatus.INTERNAL_SERVER_ERROR, (str(err) + "\n").encode())

    def _has_cookie(self, header: str | None) -> bool:
        for part in (header or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and hmac.compare_digest(value.encode(), self.token.encode()):
                return True
        return False

    def _route(self, path: str, query: dict[str, list[str]]) -> _Reply:
        if path == "/":
            return _static("index.html", "text/html; charset=utf-8")
        if path.startswith("/static/") and path[len("/static/") :] in STATIC_FILES:
            return _static(*STATIC_FILES[path[len("/static/") :]])
        if path == "/api/track":
            return _json(self._track())
        if path == "/api/overview":
            return _json(self.source.overview())
        if path == "/api/pcm":
            start, frames, rate = (int(_one(query, name)) for name in ("start", "frames", "rate"))
            if not 8000 <= rate <= 384000 or frames < 0:
                raise ValueError("rate from 8000 to 384000 Hz, frames 0 or more")
            data = self.source.pcm(start, frames, rate)
            headers = (("X-Frames", str(data.shape[2])), ("Cache-Control", "no-store"))
            return _Reply(HTTPStatus.OK, data.astype("<f4").tobytes(), "application/octet-stream", headers)
        if path == "/api/mix":
            return self._mix(query)
        if path == "/favicon.ico":
            return _Reply(HTTPStatus.NO_CONTENT)
        return _Reply(HTTPStatus.NOT_FOUND, b"not found\n")

    def _track(self) -> dict[str, Any]:
        return {
            "title": self.stems.source.name.removesuffix(".stem.mp4"),
            "samplerate": self.stems.samplerate,
            "frames": self.stems.frames,
            "duration": self.stems.duration_s,
            "maxPartSeconds": MAX_PART_S,
            "stems": [{"name": s.name, "color": s.color, "pitched": s.pitched} for s in self.stems.stems],
        }

    def _mix(self, query: dict[str, list[str]]) -> _Reply:
        gains = {
            key.removeprefix("gain."): float(_one(query, key)) for key in query if key.startswith("gain.")
        }
        end = query.get("end", [""])[0]
        settings = MixSettings(
            gains=gains,
            mute=parse_names(query.get("mute", [])),
            solo=parse_names(query.get("solo", [])),
            tempo=float(query.get("tempo", ["1"])[0]),
            key=float(query.get("key", ["0"])[0]),
            start_s=float(query.get("start", ["0"])[0]),
            end_s=float(end) if end else None,
        )
        settings.check(self.stems)
        with self._lock:
            self._mix_count += 1
            path = self.workdir / f"mix{self._mix_count}.wav"
        write_mix(self.stems, settings, path, WriteOptions(format="wav", bit_depth="16"))
        name = f"{self._track()['title']} mix.wav".replace('"', "'")
        disposition = f'attachment; filename="{name.encode("ascii", "replace").decode()}"'
        return _Reply(
            HTTPStatus.OK,
            content_type="audio/wav",
            headers=(("Content-Disposition", disposition),),
            file=path,
        )


def _handle_error(self: socketserver.BaseServer, request: Any, client_address: Any) -> None:
    """A request that failed: a closed connection is nothing (the page went away); else one line on stderr."""
    error = sys.exc_info()[1]
    if not isinstance(error, ConnectionError):
        print(
            f"stemsplit play: a request failed: {first_line(error) if error else 'unknown error'}",
            file=sys.stderr,
        )


def _one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    if not values:
        raise ValueError(f"missing {name}")
    return values[0]


def _static(name: str, content_type: str) -> _Reply:
    body = resources.files("stemsplit.player").joinpath("static", *name.split("/")).read_bytes()
    return _Reply(HTTPStatus.OK, body, content_type, (("Cache-Control", "no-cache"),))


def _json(value: object) -> _Reply:
    return _Reply(HTTPStatus.OK, json.dumps(value).encode(), "application/json")


def _handler(server: PlayerServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "stemsplit"
        sys_version = ""

        def do_GET(self) -> None:
            self._reply(head=False)

        def do_HEAD(self) -> None:
            self._reply(head=True)

        def _refuse(self) -> None:
            self._send(_Reply(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n"), head=False)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

        def _reply(self, *, head: bool) -> None:
            parts = urlsplit(self.path)
            reply = server.answer(
                parts.path, parse_qs(parts.query), self.headers.get("Host"), self.headers.get("Cookie")
            )
            self._send(reply, head=head)

        def _send(self, reply: _Reply, *, head: bool) -> None:
            try:
                size = reply.file.stat().st_size if reply.file is not None else len(reply.body)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(size))
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Security-Policy", _CSP)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                if head:
                    return
                if reply.file is None:
                    self.wfile.write(reply.body)
                else:
                    with reply.file.open("rb") as handle:
                        shutil.copyfileobj(handle, self.wfile, 1 << 20)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                if reply.file is not None:
                    reply.file.unlink(missing_ok=True)

        def log_message(self, format: str, *args: Any) -> None:  # requests are not news
            pass

    return Handler
