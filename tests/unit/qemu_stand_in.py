"""QEMU's part in a direct-QEMU instance, as the backend sees it: a live process holding a
write lock on the pidfile for its whole life (QemuProcessBackend checks both)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_HOLDER = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, str(os.getpid()).encode())\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(300)\n"
)


@contextlib.contextmanager
def holding_pidfile(pidfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    ready = pidfile.with_name(pidfile.name + ".ready")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(pidfile), str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the pidfile holder did not start"
            time.sleep(0.02)
        yield holder
    finally:
        holder.kill()
        holder.wait()
        ready.unlink(missing_ok=True)
