"""Files compressed for transfer: zstd, packed by the publisher and unpacked on arrival.

zstd rather than lzma (the stdlib's): at a similar size it unpacks several times faster,
and unpacking is on the user's wait. Packing uses a 128 MiB window ("long" mode), the
largest every zstd decoder accepts without being told to (ZSTD_WINDOWLOG_LIMIT_DEFAULT is
27), so the client needs no option and at most 128 MiB for the window; it finds matches
across the 1 GB disk image that the default 8 MiB window misses. Level and figures are in
bench/image_size.py.

Unpacking trusts nothing: the packed bytes were verified against their digest as they
arrived, and the output is hashed and capped at the manifest's size as it is written (a
zstd bomb stops there); any mismatch deletes the output and refuses the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import zstandard

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.manifest import FileEntry, Packed

ENCODING = "zstd"
SUFFIX = ".zst"
LEVEL = 9  # bench/image_size.py: -19 saves ~14 % more of the rootfs but packs ~30x slower
WINDOW_LOG = 27  # 128 MiB: the largest window a decoder takes by default
CHUNK = 1 << 20
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
    """Unpacks `packed` (verified already) into `out`, which must then be the file `entry`
    describes; otherwise `out` is deleted and the file refused (ImageMismatchError)."""
    name = name or out.name
    if entry.packed is None or entry.packed.encoding != ENCODING:
        raise ImageError(f"{name} is not packed with {ENCODING}")
    try:
        _unpack(packed, out, entry, name)
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _unpack(packed: Path, out: Path, entry: FileEntry, name: str) -> None:
    """Decompresses here while a second thread hashes and writes the chunk before (zstd,
    sha256 and file writes all release the GIL): decompression alone sets the pace, ~0.7 s
    for the 600 MB rootfs, where one thread doing all three took ~1.5 s."""
    hasher = hashlib.sha256()
    done = 0
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << WINDOW_LOG)
    # Two reused buffers: the thread hashes and writes one while the next chunk is
    # decompressed into the other; no 1 MiB bytes object is made (and page-faulted in) per
    # chunk.
    bufs = (memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK)))
    turn = 0
    # The pool is left first: a pending write finishes before the file closes.
    with (
        packed.open("rb") as src,
        out.open("wb") as dst,
        ThreadPoolExecutor(1) as pool,
    ):

        def consume(chunk: memoryview) -> None:
            hasher.update(chunk)
            dst.write(chunk)

        consuming: Future[None] | None = None
        reader = dctx.stream_reader(src, read_size=CHUNK, read_across_frames=True)
        while True:
            try:
                n = reader.readinto(bufs[turn])
            except zstandard.ZstdError as e:
                raise _refused(name, f"it does not unpack ({e})") from None
            if not n:
                break
            done += n
            if done > entry.size:  # a bomb, or simply not this file: stop writing now
                raise _refused(name, f"it unpacks to more than {entry.size} bytes")
            _wait(consuming, out)  # in order, and the other buffer is free again
            consuming = pool.submit(consume, bufs[turn][:n])
            turn ^= 1
        _wait(consuming, out)
        # No fsync, as for the files fetched plain: it cost 1-2 s per 600 MB here (another
        # VM's disk writing), more than the whole download on a fast link.
    if done != entry.size:
        raise _refused(name, f"it unpacks to {done} bytes, the manifest says {entry.size}")
    if hasher.hexdigest() != entry.sha256:
        raise _refused(
            name,
            f"it unpacks to sha256 {hasher.hexdigest()[:16]}…, "
            f"the manifest says {entry.sha256[:16]}…",
        )


def _wait(consuming: Future[None] | None, out: Path) -> None:
    if consuming is None:
        return
    try:
        consuming.result()
    except OSError as e:
        raise ImageError(
            f"cannot write {out}: {e.strerror or e}",
            hint="free some disk space, or check the cache directory's permissions",
        ) from None


def _refused(name: str, cause: str) -> ImageMismatchError:
    return ImageMismatchError(
        f"{name} does not match its manifest: {cause}; it was refused",
        hint="the server's copy is damaged or was tampered with; nothing was kept",
    )
