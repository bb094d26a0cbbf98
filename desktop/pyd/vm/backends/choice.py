"""Which VM backend runs an instance, from its config."""

from __future__ import annotations

import os

from pyd.config.settings import BackendName, InstanceConfig
from pyd.config.store import load_config
from pyd.errors import PydError
from pyd.instance.registry import instance
from pyd.vm.backends.base import VMBackend


def backend_for_config(name: str, cfg: InstanceConfig) -> VMBackend:
    if cfg.backend == BackendName.LIBVIRT:
        from pyd.vm.backends.libvirt_backend import LibvirtBackend, choose_uri

        return LibvirtBackend(name, choose_uri(cfg.libvirt_uri, os.environ, _euid()))
    from pyd.vm.backends.qemu_process import QemuProcessBackend

    return QemuProcessBackend(name, instance(name).files)


def backend_for(name: str) -> VMBackend:
    return backend_for_config(name, load_config(instance(name).files.config))


def backends_to_stop(name: str) -> tuple[list[VMBackend], str]:
    """The backend that may run `name`, for stopping and deleting it: the configured one;
    every one that may, when config.toml cannot be read (a damaged file must not leave a
    VM running nor an instance undeletable). With them, why the config was not used ("" when
    it was)."""
    try:
        return [backend_for(name)], ""
    except PydError as e:
        return candidate_backends(name), e.message


def candidate_backends(name: str) -> list[VMBackend]:
    """Direct QEMU (its pidfile says whether it runs) and libvirt at its default URI, when
    libvirt's Python binding is installed."""
    from pyd.vm.backends.qemu_process import QemuProcessBackend

    found: list[VMBackend] = [QemuProcessBackend(name, instance(name).files)]
    try:
        from pyd.vm.backends.libvirt_backend import LibvirtBackend, choose_uri
    except ImportError:
        return found
    found.append(LibvirtBackend(name, choose_uri("", os.environ, _euid())))
    return found


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1
