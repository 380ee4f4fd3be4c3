"""A misbehaving-on-demand HTTP server on 127.0.0.1, for the weights download tests.

Each route is a `Route` saying what the server does for that path: serve the bytes, send
fewer bytes than it announces, answer an error status, stall, or serve slowly (so that
concurrent downloads overlap). `hits` counts requests per path. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bvmesh.weights import ModelEntry


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    send: int | None = None  # bytes actually sent (< len(body): a truncated transfer)
    stall: float = 0.0  # seconds to wait after the headers before sending anything
    chunk_delay: float = 0.0  # seconds between 16 KiB chunks
    length: int | None = None  # Content-Length to announce (default len(body))


class WeightsServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()  # ends stalls at shutdown
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.hits[self.path] += 1
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                length = len(route.body) if route.length is None else route.length
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.flush()
                if route.stall:
                    server.release.wait(route.stall)
                    return
                data = route.body[: route.send] if route.send is not None else route.body
                for i in range(0, len(data), 16384):
                    self.wfile.write(data[i:i + 16384])
                    if route.chunk_delay:
                        time.sleep(route.chunk_delay)
                self.close_connection = True

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body: bytes = b"", **kw) -> str:
        self.routes[path] = Route(body=body, **kw)
        return self.url(path)

    def __enter__(self) -> WeightsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes standing in for a checkpoint (opaque at this layer)."""
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, data: bytes, urls: tuple[str, ...], *, bundled: bool = False,
          pinned: bool = True) -> ModelEntry:
    """A registry entry for test bytes `data` served at `urls`."""
    return ModelEntry(name=name, version="0", file=f"{name}.pt", urls=urls,
                      sha256=sha(data) if pinned else None,
                      size=len(data) if pinned else None, classes=("lv_pool", "lv_myo", "rv_pool"),
                      training_data="synthetic test bytes", licence="MIT",
                      description=f"test model {name}", bundled=bundled)


def leftovers(folder: Path) -> list[Path]:
    """Partial or temporary files anywhere under `folder` (there must be none after any call)."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp")))


def closed_port_url(path: str = "/x.pt") -> str:
    """A 127.0.0.1 URL nothing listens on (connection refused at once)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}{path}"
