"""A loopback HTTP(S) server for download tests: scripted replies per request, never the network.

Each served path has a payload and a script of :class:`Reply` objects, consumed one per request (the
last one repeats). A reply can send the whole body (honouring ``Range`` with 206 unless the route is
told to ignore it), answer a bare status, drop the connection after some bytes, or stall after some
bytes until the client's read timeout fires. Every request is recorded in :attr:`LoopbackServer.hits`.

Usage::

    with LoopbackServer() as server:
        server.serve("/hybrid_transformer/abc-12345678.th", payload, status(500), full())
        ... server.url ...  # "http://127.0.0.1:<port>/"
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Reply:
    """What the server does for one request.

    kind: ``full`` (the body, from the ``Range`` offset if honoured), ``status`` (a bare status with a
    tiny body), ``drop`` (send ``after`` body bytes, then close the socket), ``stall`` (send ``after``
    bytes, then wait ``stall_s`` seconds without sending anything).
    delay_s: wait before answering at all.
    """

    kind: str = "full"
    code: int = 200
    after: int = 0
    stall_s: float = 0.0
    delay_s: float = 0.0


def full(delay_s: float = 0.0) -> Reply:
    return Reply("full", delay_s=delay_s)


def status(code: int) -> Reply:
    return Reply("status", code=code)


def drop_after(n_bytes: int) -> Reply:
    return Reply("drop", after=n_bytes)


def stall_after(n_bytes: int, seconds: float) -> Reply:
    return Reply("stall", after=n_bytes, stall_s=seconds)


@dataclass
class Route:
    payload: bytes
    replies: list[Reply]
    honour_range: bool = True
    served: int = 0


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    path: str  # the request target as sent (absolute URI when it came through as a proxy request)
    range: str | None
    status: int
    host: str | None = None


@dataclass
class _State:
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        with state.lock:
            route = state.routes.get(path)
            reply = None
            if route is not None:
                reply = route.replies[min(route.served, len(route.replies) - 1)]
                route.served += 1
        if reply is not None and reply.delay_s:
            state.stop.wait(reply.delay_s)
        if route is None or reply is None:
            self._bare(404)
            return
        if reply.kind == "status":
            self._bare(reply.code)
            return
        self._body(route, reply)

    def _record(self, code: int) -> None:
        state = self.server.state
        with state.lock:
            state.hits.append(Hit(self.path, self.headers.get("Range"), code, self.headers.get("Host")))

    def _bare(self, code: int) -> None:
        self._record(code)
        body = f"status {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self, route: Route, reply: Reply) -> None:
        payload = route.payload
        start = 0
        requested = self.headers.get("Range")
        if requested and route.honour_range and requested.startswith("bytes="):
            start = int(requested[len("bytes=") :].split("-")[0])
            if start >= len(payload):
                self._bare(416)
                return
        body = payload[start:]
        code = 206 if start else 200
        self._record(code)
        self.send_response(code)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if reply.kind == "full":
            self.wfile.write(body)
            return
        self.wfile.write(body[: reply.after])
        self.wfile.flush()
        if reply.kind == "stall":
            self.server.state.stop.wait(reply.stall_s)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or reject our certificate close sockets under us; expected


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with a random free port (HTTPS when given a cert)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.state = _State()
        self._server = _Server(self.state)
        self._tls = tls is not None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/"

    @property
    def hits(self) -> list[Hit]:
        with self.state.lock:
            return list(self.state.hits)

    def hits_for(self, path: str) -> list[Hit]:
        return [h for h in self.hits if urlsplit(h.path).path == path]

    def serve(self, path: str, payload: bytes, *replies: Reply, honour_range: bool = True) -> None:
        """Serve ``payload`` at ``path`` following ``replies`` (default: always the full body)."""
        with self.state.lock:
            self.state.routes[path] = Route(payload, list(replies) or [full()], honour_range)

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
