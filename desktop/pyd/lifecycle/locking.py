"""One start, stop or delete of an instance at a time, across processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pyd.host.filelocks import holding
from pyd.host.private_files import instance_dir
from pyd.instance.files import CONFIG, START_LOCK, InstanceFiles
from pyd.instance.registry import Instance
from pyd.lifecycle.progress import Progress

LOCK_WAIT = 900.0  # a concurrent start may be building the image


@contextlib.contextmanager
def locked(inst: Instance, progress: Progress) -> Iterator[None]:
    """One start/stop/delete of an instance at a time, across processes. A first start
    that fails before it made anything (a bad setting) leaves no directory behind."""
    instance_dir(inst.files.root)
    try:
        with holding(
            inst.files.start_lock,
            LOCK_WAIT,
            repr(inst.name),
            lambda: progress.info(f"waiting for another pyd command on {inst.name!r} to finish"),
        ):
            yield
    finally:
        if not inst.exists:
            _remove_if_only_locks(inst.files)


_LOCKS_ONLY = {START_LOCK, CONFIG + ".lock"}


def _remove_if_only_locks(files: InstanceFiles) -> None:
    with contextlib.suppress(OSError):  # another command may be making it meanwhile
        if {p.name for p in files.root.iterdir()} <= _LOCKS_ONLY:
            for name in _LOCKS_ONLY:
                (files.root / name).unlink(missing_ok=True)
            files.root.rmdir()
