"""Instances by name: where their files are, and which exist."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from pyd.config.model import validate_name
from pyd.errors import UsageError
from pyd.filelocks import holding
from pyd.instance_files import InstanceFiles
from pyd.lifecycle.progress import Progress
from pyd.paths import instances_dir

DEFAULT = "default"
LOCK_WAIT = 900.0  # a concurrent start may be building the image


@dataclass(frozen=True)
class Instance:
    name: str
    files: InstanceFiles

    @property
    def exists(self) -> bool:
        return self.files.config.exists() or self.files.data_disk.exists()


def instance(name: str) -> Instance:
    return Instance(validate_name(name), InstanceFiles(instances_dir() / name))


def name_option(name: str) -> str:
    """What a suggested pyd command line says to name the instance: nothing for the default."""
    return "" if name == DEFAULT else f" -n {name}"


def existing(name: str) -> Instance:
    inst = instance(name)
    if not inst.exists:
        raise UsageError(
            f"there is no instance named {name!r}",
            hint=f"see `pyd list`, or create it with `pyd start{name_option(name)}`",
        )
    return inst


def all_instances() -> list[Instance]:
    root = instances_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        with contextlib.suppress(UsageError):
            inst = instance(path.name)
            if inst.exists:
                found.append(inst)
    return found


@contextlib.contextmanager
def locked(inst: Instance, progress: Progress) -> Iterator[None]:
    """One start/stop/delete of an instance at a time, across processes."""
    inst.files.root.mkdir(parents=True, exist_ok=True)
    with holding(
        inst.files.start_lock,
        LOCK_WAIT,
        repr(inst.name),
        lambda: progress.info(f"waiting for another pyd command on {inst.name!r} to finish"),
    ):
        yield
