"""`pyd stop` and `pyd delete`."""

from __future__ import annotations

import contextlib
import shutil

from pyd.backends.base import VMState
from pyd.config.model import context_name
from pyd.config.store import load_config
from pyd.docker_context import remove_context
from pyd.lifecycle.agent_proc import stop_agent
from pyd.lifecycle.backend import backend_for_config
from pyd.lifecycle.instance import existing, locked
from pyd.lifecycle.progress import Progress, phase

SHUTDOWN_TIMEOUT = 60.0


def stop(name: str, progress: Progress, timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Stops agent and guest (clean poweroff, forced after `timeout`). False when the
    VM was not running."""
    inst = existing(name)
    with locked(inst, progress):
        with phase(progress, "agent"):
            stop_agent(inst.files)
        backend = backend_for_config(inst.name, load_config(inst.files.config))
        if backend.state() is not VMState.RUNNING:
            return False
        with phase(progress, "shutdown"):
            backend.shutdown(timeout)
        return True


def delete(name: str, progress: Progress) -> None:
    """Removes the VM, every file of the instance (its data disk too) and its context."""
    inst = existing(name)
    with locked(inst, progress):
        stop_agent(inst.files, timeout=5)
        backend = backend_for_config(inst.name, load_config(inst.files.config))
        with phase(progress, "vm"):
            backend.kill()
            if backend.state() is not VMState.ABSENT:
                backend.delete()
        remove_context(context_name(inst.name))
        with phase(progress, "files"):
            # The lock file stays until the lock is released (Windows cannot delete an
            # open file); everything else goes now.
            for path in inst.files.root.iterdir():
                if path == inst.files.start_lock:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    with contextlib.suppress(OSError):  # a start that queued behind us may own it now
        inst.files.start_lock.unlink()
        inst.files.root.rmdir()
