"""Which VM backend runs an instance, from its config."""

from __future__ import annotations

import os

from pyd.backends.base import VMBackend
from pyd.config.model import InstanceConfig
from pyd.config.store import load_config
from pyd.lifecycle.instance import instance


def backend_for_config(name: str, cfg: InstanceConfig) -> VMBackend:
    if cfg.backend == "libvirt":
        from pyd.backends.libvirt_backend import LibvirtBackend, choose_uri

        euid = os.geteuid() if hasattr(os, "geteuid") else -1
        return LibvirtBackend(name, choose_uri(cfg.libvirt_uri, os.environ, euid))
    from pyd.backends.qemu_process import QemuProcessBackend

    return QemuProcessBackend(name, instance(name).files)


def backend_for(name: str) -> VMBackend:
    return backend_for_config(name, load_config(instance(name).files.config))
