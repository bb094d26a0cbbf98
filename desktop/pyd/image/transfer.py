"""One file from the network into a staging file, surviving the network: HTTP Range
resume, bounded retries with backoff, mirrors, a size cap and a final sha256 check.

Resume keeps the running sha256 in memory between attempts of one call (the bytes already
written were hashed as they arrived), and re-hashes the kept prefix when a call starts on a
partial file left by an earlier run. Re-hashing costs ~0.2 s per 100 MB and trusts nothing
but the bytes on disk; a persisted hash state would need its own integrity check and
hashlib cannot serialise one anyway. A prefix is only ever "verified" once the whole file
matches the manifest's sha256, so a mismatch after a resume starts over once from byte 0
before the file is refused: the stale prefix, not the server, may be what is wrong.

A Sink (packing.Unpacker) may be given each byte of the file once, in order, as it
arrives: the kept prefix first when a call starts on a partial file, and `restart` whenever
the file starts over from byte 0 (no Range support, If-Range mismatch, a mismatch after a
resume). A sink refusing what it was fed counts as a mismatch of this copy.

A redirect is followed anew on every attempt (urllib resolves it per request and the
redirected URL is never kept): signed object-store URLs expire within minutes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from pyd.errors import ImageError, ImageMismatchError

CHUNK = 1 << 20
# What one read from the socket fills: small enough that the bytes are still in the CPU's
# cache when sha256 and the write read them again. bench/image_fetch.py on loopback (median
# of 10, pyd/curl): 64 KiB 0.75, 128 KiB 0.70, 256 KiB 0.59-0.87, 1 MiB 0.51-0.62.
RECV = 1 << 16
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class SinkRefused(Exception):
    """What a Sink was fed cannot be the file (str(e) says why)."""


class Sink(Protocol):
    def feed(self, data: bytes | memoryview) -> None:
        """The next bytes (a copy must be made to keep them). Raises SinkRefused."""

    def restart(self) -> None:
        """The file starts over from byte 0: drop everything fed so far."""


class TransferError(ImageError):
    """A download failed for good: every mirror was dead or every retry was spent."""


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate: float  # bytes per second, over the last few seconds
    eta: float | None  # seconds left, None while the rate is unknown


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # responses tried in all, over every mirror
    first_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0
    timeout: float = 30.0  # seconds a connect or a read may stall

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1, 2, ...)."""
        return float(min(self.max_delay, self.first_delay * self.factor ** (failures - 1)))


DEFAULT_POLICY = RetryPolicy()


def rate_of(samples: Sequence[tuple[float, int]]) -> float:
    """Bytes per second between the first and last (time, bytes done) sample."""
    if len(samples) < 2:
        return 0.0
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def eta(done: int, total: int, rate: float) -> float | None:
    if done >= total:
        return 0.0
    return (total - done) / rate if rate > 0 else None


def describe(p: Progress) -> str:
    """'12.0/57.6 MB, 45.1 MB/s, 1 s left' for a progress line."""
    left = "" if p.eta is None else f", {_duration(p.eta)} left"
    return f"{p.done / 1e6:.1f}/{p.total / 1e6:.1f} MB, {p.rate / 1e6:.1f} MB/s{left}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


@dataclass
class _Meter:
    """A sliding window of samples, so the rate follows the network, not the average."""

    total: int
    clock: Callable[[], float]
    window: float = 5.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def reset(self, done: int) -> None:
        """A new response starts: the rate is measured from here."""
        self.samples.clear()
        self.samples.append((self.clock(), done))

    def sample(self, done: int) -> Progress:
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        rate = max(0.0, rate_of(self.samples))
        return Progress(done, self.total, rate, eta(done, self.total, rate))


class _Retry(Exception):
    """This attempt failed in a way another attempt may not (a cut, a 5xx, a timeout)."""


class _Dead(Exception):
    """This mirror cannot serve the file (404, 403, a refused name): skip it for good."""


class _Mismatch(Exception):
    """This mirror's copy is not the file the manifest describes."""


@dataclass
class _Partial:
    """The staging file and the sha256 of what it holds."""

    path: Path
    size: int
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    done: int = 0
    from_disk: bool = False  # the prefix came from an earlier run
    resumed: bool = False  # more than one response wrote into it
    validator: str = ""  # ETag or Last-Modified of the response that started it
    sink: Sink | None = None

    @classmethod
    def open(cls, path: Path, size: int, sink: Sink | None) -> _Partial:
        p = cls(path, size, sink=sink)
        try:
            kept = path.stat().st_size
        except FileNotFoundError:
            return p
        if kept > size:
            p.restart()
            return p
        try:
            with path.open("rb") as f:
                # RECV-sized, as from the socket: what a sink queues stays bounded.
                while chunk := f.read(RECV if sink else CHUNK):
                    p.hasher.update(chunk)
                    if sink:
                        sink.feed(chunk)
        except SinkRefused:
            p.restart()  # the kept prefix is not this file: from byte 0
            return p
        p.done, p.from_disk = kept, kept > 0
        return p

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.hasher, self.done = hashlib.sha256(), 0
        self.from_disk = self.resumed = False
        self.validator = ""
        if self.sink:
            self.sink.restart()


Opener = Callable[[urllib.request.Request, float], IO[bytes]]


def _urlopen(request: urllib.request.Request, timeout: float) -> IO[bytes]:
    response: IO[bytes] = urllib.request.urlopen(request, timeout=timeout)
    return response


def download(
    urls: Sequence[str],
    part: Path,
    size: int,
    sha256: str,
    *,
    name: str = "",
    progress: ProgressFn | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    opener: Opener = _urlopen,
    sink: Sink | None = None,
) -> None:
    """Fills `part` with the file that `urls` (mirrors, tried in order) serve, `size` bytes
    with `sha256`. What `part` already holds is resumed from. Returns when `part` is
    complete and verified (`sink`, if any, was fed exactly its bytes; its own verdict is
    the caller's to ask); errors call it `name` (default: part's name). A copy that does
    not match is deleted and refused (ImageMismatchError); when the network fails for good
    (TransferError) `part` keeps what arrived so the next call resumes from it."""
    name = name or part.name
    if not urls:
        raise TransferError(f"no URL to download {name} from")
    p = _Partial.open(part, size, sink)
    meter = _Meter(size, clock)
    live = list(urls)
    causes: dict[str, str] = {}
    refused: set[str] = set()  # mirrors whose copy did not match
    fruitless = 0  # attempts in a row that brought no byte: bounded, and they back off
    attempts = 0
    at = 0  # index in `live` of the mirror the next attempt goes to
    while live and fruitless < policy.attempts and attempts < policy.attempts * 5:
        url = live[at % len(live)]
        attempts += 1
        before = p.done
        try:
            _attempt(url, p, policy.timeout, opener, meter, progress)
            if p.done == size and p.hasher.hexdigest() == sha256:
                return
            raise _Mismatch(_mismatch_cause(p, sha256))
        except _Mismatch as e:
            if p.resumed or p.from_disk:
                p.restart()  # the kept prefix may be the culprit: once more from byte 0
                continue
            p.restart()
            causes[url] = str(e)
            refused.add(url)
            live.remove(url)
        except _Dead as e:
            causes[url] = str(e)
            live.remove(url)
        except _Retry as e:
            causes[url] = str(e)
            # A cut after some bytes is retried at once: the server was alive a moment ago.
            fruitless = 0 if p.done > before else fruitless + 1
            at += 1  # the next mirror, if any, gets the next attempt
            if fruitless and live and at % len(live) == 0 and fruitless < policy.attempts:
                sleep(policy.delay(fruitless))  # a whole round failed: back off
    if refused and refused == set(causes):
        part.unlink(missing_ok=True)
        said = "; ".join(causes[u] for u in urls if u in causes)
        raise ImageMismatchError(
            f"{name} from {' and '.join(u for u in urls if u in refused)} does not match its "
            f"manifest ({said}); it was refused",
            hint="the server's copy is damaged or was tampered with; nothing was kept",
        )
    if p.done == 0:
        part.unlink(missing_ok=True)
    said = "; ".join(f"{u}: {causes[u]}" for u in urls if u in causes)
    kept = f"; {p.done} bytes are kept to resume from" if p.done else ""
    raise TransferError(
        f"cannot download {name} after {attempts} attempt{'s' * (attempts > 1)} ({said}){kept}",
        hint="check the URL and the network, then run the command again"
        if len(urls) == 1
        else "every mirror failed; check the URLs and the network, then run the command again",
    )


def _mismatch_cause(p: _Partial, sha256: str) -> str:
    if p.done != p.size:
        return f"{p.done} bytes, the manifest says {p.size}"
    return f"sha256 {p.hasher.hexdigest()[:16]}…, the manifest says {sha256[:16]}…"


def _attempt(
    url: str,
    p: _Partial,
    timeout: float,
    opener: Opener,
    meter: _Meter,
    progress: ProgressFn | None,
) -> None:
    """One request, appending to `p` (or restarting it when the server sends it whole)."""
    if p.done == p.size:
        return  # complete already: only the digest is left to check
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    if p.done:
        request.add_header("Range", f"bytes={p.done}-")
        if p.validator:  # a changed file comes whole (200) rather than spliced
            request.add_header("If-Range", p.validator)
    try:
        response = opener(request, timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:  # our offset is past the server's file: not this file
            raise _Mismatch(f"the server's copy is shorter than {p.done} bytes") from None
        cause = f"the server answered {e.code} {e.reason}"
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Retry(cause) from None
        raise _Dead(cause) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError) or not isinstance(reason, OSError):
            raise _Dead(f"cannot connect: {reason}") from None  # a bad certificate or scheme
        raise _Retry(f"cannot connect: {reason}") from None  # refused, no route, DNS down
    except (OSError, http.client.HTTPException) as e:
        raise _Retry(f"cannot connect: {e!r}") from None
    with response:
        start, length = _body_range(response, p)
        if start == 0 and p.done:
            p.restart()  # no Range support (200): the whole file comes again
        else:
            p.resumed = p.resumed or p.done > 0
        if p.done == 0:
            p.validator = _validator(response)
        meter.reset(p.done)
        if length is not None and p.done + length > p.size:
            raise _Mismatch(f"the server sends {p.done + length} bytes, the manifest says {p.size}")
        _stream(response, p, length, meter, progress)


def _body_range(response: IO[bytes], p: _Partial) -> tuple[int, int | None]:
    """(offset the body starts at, its length or None)."""
    status = getattr(response, "status", None)
    headers = getattr(response, "headers", None)
    length_text = headers.get("Content-Length") if headers else None
    length = int(length_text) if length_text and length_text.isdigit() else None
    if status != 206 or headers is None:
        return 0, length
    m = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
    if not m or int(m.group(1)) != p.done:
        raise _Retry(f"the server answered a range it was not asked for: {m and m.group(0)}")
    if m.group(3) != "*" and int(m.group(3)) != p.size:
        raise _Mismatch(f"the server's copy is {m.group(3)} bytes, the manifest says {p.size}")
    return p.done, int(m.group(2)) - p.done + 1


def _validator(response: IO[bytes]) -> str:
    headers = getattr(response, "headers", None)
    if headers is None:
        return ""
    etag = headers.get("ETag", "")
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return str(etag)
    return str(headers.get("Last-Modified", ""))


def _stream(
    response: IO[bytes],
    p: _Partial,
    length: int | None,
    meter: _Meter,
    progress: ProgressFn | None,
) -> None:
    """Receives, hashes and writes in turn. A second thread for sha256 and the disk was
    measured and dropped, twice: on loopback with 2 cores it was slower than this (599
    against 739 MB/s, curl 716; then with two reused buffers, 0.50 s against 0.48 s), and
    sha256 at 1.8 GB/s outruns any real network."""
    buf = memoryview(bytearray(RECV))
    got = 0
    with p.path.open("r+b" if p.path.exists() else "wb") as out:
        out.seek(p.done)
        out.truncate()
        while True:
            try:
                n = response.readinto(buf)  # type: ignore[attr-defined]
            except (OSError, http.client.HTTPException) as e:
                out.flush()
                os.fsync(out.fileno())  # what was hashed is what a later run re-reads
                raise _Retry(f"the connection broke after {got} bytes ({e!r})") from None
            if not n:
                break
            if p.done + n > p.size:
                raise _Mismatch(f"the server sends more than {p.size} bytes")
            chunk = buf[:n]
            p.hasher.update(chunk)
            if p.sink:
                try:
                    p.sink.feed(chunk)
                except SinkRefused as e:
                    raise _Mismatch(str(e)) from None
            try:
                out.write(chunk)
            except OSError as e:
                raise ImageError(
                    f"cannot write {p.path}: {e.strerror or e}",
                    hint="free some disk space, or check the cache directory's permissions",
                ) from None
            p.done += n
            got += n
            if progress:
                progress(meter.sample(p.done))
    if length is not None and got < length:
        raise _Retry(f"the connection closed after {got} of {length} bytes")
