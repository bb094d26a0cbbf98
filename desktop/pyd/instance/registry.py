"""Instances by name: where their files are, and which exist."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from pyd.config.settings import DEFAULT_INSTANCE, validate_name
from pyd.errors import UsageError
from pyd.host.paths import instances_dir
from pyd.instance.files import InstanceFiles


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
    return "" if name == DEFAULT_INSTANCE else f" -n {name}"


def existing(name: str, create: str = "") -> Instance:
    """The instance `name`, which must exist. `create` is the command that would make it
    (`pyd start` when not given), for the hint."""
    inst = instance(name)
    if not inst.exists:
        raise UsageError(
            f"there is no instance named {name!r}",
            hint=f"{known_instances()}; create it with `{create or 'pyd start'}"
            f"{name_option(name)}`",
        )
    return inst


def known_instances() -> str:
    """The instances there are, for a hint after a mistyped name."""
    names = [i.name for i in all_instances()]
    if not names:
        return "there are no instances yet"
    return "the instances are " + ", ".join(names) + " (`pyd list`)"


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
