"""A loopback HTTP server for download tests and benchmarks: serves a dict of files and
misbehaves on demand (no Range support, cut connections, one-time redirects, errors), can pace
what it sends like a slower link, and counts the body bytes it sent."""

from __future__ import annotations

import contextlib
import http.server
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 128 * 1024  # what a paced response sends at a time
_BURST = 1024 * 1024  # what a paced connection may send at once after being idle


class _Bucket:
    """A token bucket: `take(n)` sleeps until n bytes fit `rate`. Tokens may go negative
    (a debt the next refill pays), so oversleeping is made up and the mean rate holds."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = float(_BURST)
        self.last = time.monotonic()

    def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(float(_BURST), self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        if self.tokens < 0:
            time.sleep(-self.tokens / self.rate)


@dataclass
class Behaviour:
    """What the server does; tests may change it between requests."""

    ranges: bool = True  # honour Range (206), or always send the whole file (200)
    cut_after: int | None = None  # close the connection after this many body bytes...
    cuts: int = 0  # ...for this many responses that are longer
    redirect: bool = False  # /NAME answers 302 to a URL that works for one request only
    status: dict[str, int] = field(default_factory=dict)  # NAME -> status for every request
    fail: int = 0  # this many requests answer 503 first
    etag: bool = True
    rate: float | None = None  # bytes/s each connection sends at most (None: no limit)


@dataclass
class Stats:
    body_bytes: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (path, Range, status)


class RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes | Path], behaviour: Behaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.behaviour = behaviour
        self.stats = Stats()
        self.tokens: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RangeServer
    protocol_version = "HTTP/1.1"
    bucket: _Bucket | None = None  # one per connection (a handler serves one connection)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged: test output stays readable."""

    def do_GET(self) -> None:
        s, b = self.server, self.server.behaviour
        path = self.path.lstrip("/")
        if path.startswith("once/"):
            _, token, path = path.split("/", 2)
            with s.lock:
                fresh = token in s.tokens
                s.tokens.discard(token)
            if not fresh:
                return self._status(path, 403)  # an expired signed URL
        elif b.redirect:
            token = secrets.token_hex(8)
            with s.lock:
                s.tokens.add(token)
            self._log(path, 302)
            self.send_response(302)
            self.send_header("Location", f"/once/{token}/{path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with s.lock:
            failing = b.fail > 0
            b.fail -= failing
        if failing:
            return self._status(path, 503)
        if path in b.status:
            return self._status(path, b.status[path])
        if path not in s.files:
            return self._status(path, 404)
        self._send_file(path, s.files[path])
        return None

    def _send_file(self, path: str, source: bytes | Path) -> None:
        s, b = self.server, self.server.behaviour
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        start, end = 0, size - 1
        m = _RANGE.match(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        etag = f'"{size:x}"'
        partial = bool(m) and b.ranges and (if_range is None or if_range == etag)
        if partial and m:
            start = int(m.group(1))
            end = min(int(m.group(2)), end) if m.group(2) else end
            if start >= size:
                return self._status(path, 416)
        status = 206 if partial else 200
        self._log(path, status)
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        if b.etag:
            self.send_header("ETag", etag)
        if b.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        count = end - start + 1
        with s.lock:
            cut = b.cuts > 0 and b.cut_after is not None and count > b.cut_after
            b.cuts -= cut
        if cut and b.cut_after is not None:
            count = min(count, b.cut_after)
        try:
            if b.rate:
                self._send_paced(source, start, count, b.rate)
            elif isinstance(source, bytes):
                self.wfile.write(source[start : start + count])
            else:
                with source.open("rb") as f:
                    self.wfile.flush()
                    self.connection.sendfile(f, start, count)
        except (BrokenPipeError, ConnectionResetError):
            cut = True
        with s.lock:
            s.stats.body_bytes += count
        if cut:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _send_paced(self, source: bytes | Path, start: int, count: int, rate: float) -> None:
        if self.bucket is None or self.bucket.rate != rate:
            self.bucket = _Bucket(rate)
        bucket, chunks = self.bucket, range(start, start + count, _CHUNK)
        self.wfile.flush()
        if isinstance(source, bytes):
            for at in chunks:
                n = min(_CHUNK, start + count - at)
                bucket.take(n)
                self.connection.sendall(source[at : at + n])
            return
        with source.open("rb") as f:
            for at in chunks:
                n = min(_CHUNK, start + count - at)
                bucket.take(n)
                self.connection.sendfile(f, at, n)

    def _status(self, path: str, code: int) -> None:
        self._log(path, code)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _log(self, path: str, status: int) -> None:
        with self.server.lock:
            self.server.stats.requests.append((path, self.headers.get("Range", ""), status))


@contextlib.contextmanager
def serve(
    files: dict[str, bytes | Path], behaviour: Behaviour | None = None
) -> Iterator[RangeServer]:
    """A running server on 127.0.0.1; its `url` ends with "/"."""
    server = RangeServer(files, behaviour or Behaviour())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
