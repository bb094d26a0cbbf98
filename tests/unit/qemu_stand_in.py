"""QEMU's part in a direct-QEMU instance, as the backend sees it: a live process holding a
write lock on the pidfile for its whole life (QemuProcessBackend checks both)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.unit.polling import until

_HOLDER = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, str(os.getpid()).encode())\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(300)\n"  # QEMU's life: the test kills it sooner
)


@contextlib.contextmanager
def holding_pidfile(pidfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    ready = pidfile.with_name(pidfile.name + ".ready")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(pidfile), str(ready)])
    try:
        until(ready.exists, 30, 0.02, "the pidfile holder locks the pidfile")
        yield holder
    finally:
        holder.kill()
        holder.wait()
        ready.unlink(missing_ok=True)
