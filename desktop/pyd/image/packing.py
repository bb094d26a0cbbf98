"""Files compressed for transfer: zstd, packed by the publisher and unpacked on arrival.

zstd rather than lzma (the stdlib's): at a similar size it unpacks several times faster,
and unpacking is on the user's wait. Packing uses a 128 MiB window ("long" mode), the
largest every zstd decoder accepts without being told to (ZSTD_WINDOWLOG_LIMIT_DEFAULT is
27), so the client needs no option and at most 128 MiB for the window; it finds matches
across the 1 GB disk image that the default 8 MiB window misses. Level and figures are in
bench/image_size.py.

Unpacking streams: each chunk of a packed file goes to the decoder as it arrives from the
network (Unpacker, fed by transfer.download), so the unpack ends with the download instead
of ~1.5 s after it (bench/image_fetch.py --only link). The decoder therefore sees bytes that
are not verified yet: the accepted trade, as libzstd is fuzzed, the window is capped at
128 MiB and the output at the manifest's size (a zstd bomb stops there), and the output is
written only into the staging directory, never the cache. Nothing unverified is kept: the
file is used only when the packed bytes match their digest AND the output matches the
manifest's size and sha256; otherwise the output is deleted and the file refused.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

import zstandard

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.manifest import FileEntry, Packed
from pyd.image.transfer import SinkRefused

ENCODING = "zstd"
SUFFIX = ".zst"
LEVEL = 9  # bench/image_size.py: -19 saves ~14 % more of the rootfs but packs ~30x slower
WINDOW_LOG = 27  # 128 MiB: the largest window a decoder takes by default
CHUNK = 1 << 20
# Chunks queued at most between the socket and the decoder (64 KiB each from the socket:
# 16 MiB): the network runs ahead of a slow decoder by this much, then waits.
_QUEUED_IN = 256
_BUFFERS = 4  # decoded chunks (CHUNK each) in flight between the decoder and the disk
FEED = 1 << 16  # what unpack reads at a time, as the socket's chunks
# A packed file is published only when it saves at least this share of the plain one:
# below that, unpacking costs the client more time than the transfer saves.
MIN_SAVING = 0.05

PackProgress = Callable[[int, int], None]  # (bytes read so far, total)


def pack(
    src: Path,
    dst: Path,
    *,
    level: int = LEVEL,
    window_log: int = WINDOW_LOG,
    threads: int = 0,
    progress: PackProgress | None = None,
) -> Packed:
    """`src` packed into `dst`; the Packed entry (name, size, sha256) that describes it."""
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=window_log,
        enable_ldm=True,
        threads=threads,
        write_content_size=True,
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)
    total = src.stat().st_size
    cobj = cctx.compressobj(size=total)
    hasher = hashlib.sha256()
    size = done = 0
    with src.open("rb") as f, dst.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal size
            hasher.update(data)
            size += len(data)
            out.write(data)

        while chunk := f.read(CHUNK):
            emit(cobj.compress(chunk))
            done += len(chunk)
            if progress:
                progress(done, total)
        emit(cobj.flush())
    return Packed(ENCODING, dst.name, size, hasher.hexdigest())


def unpack(packed: Path, out: Path, entry: FileEntry, *, name: str = "") -> None:
    """Unpacks `packed` (a file on disk) into `out`, which must then be the file `entry`
    describes; otherwise `out` is deleted and the file refused (ImageMismatchError)."""
    unpacker = Unpacker(out, entry, name=name)
    try:
        with packed.open("rb") as src:
            while chunk := src.read(FEED):
                unpacker.feed(chunk)
    except SinkRefused:
        pass  # finish() says why
    except BaseException:
        unpacker.close()
        out.unlink(missing_ok=True)
        raise
    unpacker.finish()


class _Source:
    """The decoder's input: the queued chunks, until the end of this stream."""

    def __init__(self, take: Callable[[], bytes]) -> None:
        self.read = lambda size=-1: take()


class Unpacker:
    """A packed file unpacked while it downloads (a transfer.Sink). `feed` only queues a
    copy of the chunk, so the socket loop never waits on the decoder; one thread decodes
    into reused buffers and a second hashes and writes them (zstd, sha256 and writes
    release the GIL). Reused buffers, not a fresh bytes object per decoded chunk
    (stream_writer): 600 MB of new pages cost more than the decoding
    (`bench/image_fetch.py --rate`). `restart` drops everything (the download starts over
    from byte 0); `finish` waits for the decoder and accepts the output only when it is the
    file the manifest describes, else deletes it and refuses the file; `close` stops the
    threads (finish closes too)."""

    def __init__(self, out: Path, entry: FileEntry, *, name: str = "") -> None:
        self.name = name or out.name
        if entry.packed is None or entry.packed.encoding != ENCODING:
            raise ImageError(f"{self.name} is not packed with {ENCODING}")
        self.path, self.entry = out, entry
        self._file = out.open("wb")
        # Input chunks; b"" ends a stream (restart, finish), None stops the thread.
        self._packed: queue.Queue[bytes | None] = queue.Queue(_QUEUED_IN)
        self._bufs = [memoryview(bytearray(CHUNK)) for _ in range(_BUFFERS)]
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(_BUFFERS):
            self._free.put(i)
        self._unpacked: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self._stopping = self._ended = False
        self._reset()
        self._threads = [
            threading.Thread(target=self._decode, name=f"unpack {self.name}", daemon=True),
            threading.Thread(target=self._write, name=f"write {self.name}", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _reset(self) -> None:
        """An empty output; only while both threads are idle (between streams)."""
        self._file.seek(0)
        self._file.truncate()
        self._hasher = hashlib.sha256()
        self._decoded = 0
        self._cause = ""  # why what was fed cannot be this file
        self._failure: ImageError | None = None  # the output could not be written

    def feed(self, data: bytes | memoryview) -> None:
        """The next bytes of the packed file. Raises SinkRefused once what was fed cannot
        be this file (the decoder found it is not zstd, or it unpacks past the cap)."""
        if self._failure is not None:
            raise self._failure
        if self._cause:
            raise SinkRefused(self._cause)
        if data:
            self._packed.put(bytes(data))  # a copy: the caller reuses its buffer

    def restart(self) -> None:
        """The packed file starts over from byte 0."""
        self._idle()
        self._reset()

    def finish(self) -> None:
        """Returns once the whole output is written and matches the manifest; otherwise
        deletes it and raises ImageMismatchError (or ImageError when it could not be
        written)."""
        try:
            self._idle()
            if self._failure is not None:
                raise self._failure
            if self._cause:
                raise _refused(self.name, self._cause)
            if self._decoded != self.entry.size:
                raise _refused(
                    self.name,
                    f"it unpacks to {self._decoded} bytes, the manifest says {self.entry.size}",
                )
            if self._hasher.hexdigest() != self.entry.sha256:
                raise _refused(
                    self.name,
                    f"it unpacks to sha256 {self._hasher.hexdigest()[:16]}…, "
                    f"the manifest says {self.entry.sha256[:16]}…",
                )
            # No fsync, as for the files fetched plain: it cost 1-2 s per 600 MB here
            # (another VM's disk writing), more than the whole download on a fast link.
        except BaseException:
            self.close()
            self.path.unlink(missing_ok=True)
            raise
        self.close()

    def close(self) -> None:
        """Stops the threads and closes the output (kept: finish decides); idempotent."""
        if self._file.closed:
            return
        self._cause = self._cause or "closed"  # the decoder skips what is still queued
        self._packed.put(None)
        for t in self._threads:
            t.join()
        self._file.close()

    def _idle(self) -> None:
        """Ends the stream fed so far and waits until it is decoded and written."""
        self._packed.put(b"")
        self._packed.join()  # decoded: its output is queued...
        self._unpacked.join()  # ...and written

    def _take(self) -> bytes:
        """The next input chunk for the decoder; b"" at the end of the stream (the end
        mark is marked done by _decode, once its output is queued)."""
        chunk = self._packed.get()
        if chunk is None:
            self._stopping = True
        if not chunk:
            self._ended = True
            return b""
        self._packed.task_done()
        return chunk

    def _decode(self) -> None:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << WINDOW_LOG)
        while not self._stopping:  # one stream per turn: from a (re)start to its end mark
            self._ended = False
            reader = dctx.stream_reader(
                cast("IO[bytes]", _Source(self._take)), read_size=CHUNK, read_across_frames=True
            )
            try:
                while True:
                    i = self._free.get()
                    n = reader.readinto(self._bufs[i]) if not self._cause else 0
                    if not n:
                        self._free.put(i)
                        break
                    self._decoded += n
                    if self._decoded > self.entry.size:  # a bomb, or not this file: stop
                        self._free.put(i)
                        self._cause = f"it unpacks to more than {self.entry.size} bytes"
                        break
                    self._unpacked.put((i, n))
            except zstandard.ZstdError as e:
                self._cause = f"it does not unpack ({e})"
            except Exception as e:  # never a silent dead thread: the file is refused
                self._cause = f"it does not unpack ({e!r})"
            # After a refusal the rest of the stream is only drained, up to its end mark.
            while not self._ended:
                self._take()
            self._packed.task_done()  # the end mark (or the stop)
        self._unpacked.put(None)

    def _write(self) -> None:
        while (item := self._unpacked.get()) is not None:
            i, n = item
            try:
                if self._failure is None:
                    self._hasher.update(self._bufs[i][:n])
                    self._file.write(self._bufs[i][:n])
            except OSError as e:
                self._failure = ImageError(
                    f"cannot write {self.path}: {e.strerror or e}",
                    hint="free some disk space, or check the cache directory's permissions",
                )
            finally:
                self._free.put(i)
                self._unpacked.task_done()
        self._unpacked.task_done()


def _refused(name: str, cause: str) -> ImageMismatchError:
    return ImageMismatchError(
        f"{name} does not match its manifest: {cause}; it was refused",
        hint="the server's copy is damaged or was tampered with; nothing was kept",
    )
