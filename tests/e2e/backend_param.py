"""The backends an e2e module's instance runs under, as a fixture parameter: libvirt, and
direct QEMU started the Windows way (detached, QMP over loopback mutual TLS), forced here by
PYD_QEMU_LAUNCH=detached and PYD_QMP=tls in the environment every pyd command gets; or
direct QEMU the POSIX way (QEMU_POSIX)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyd.vm.backends.qmp import QmpEndpoint, QmpTransport, qmp_run
from tests.e2e.pydcli import PydEnv

BACKENDS = ("libvirt", "qemu-detached-tls")
# Direct QEMU the POSIX way (-daemonize, QMP on a Unix socket): where QEMU 7.2 can suspend
# (fd: migration needs the Unix monitor; over TLS it needs QEMU 8.2).
QEMU_POSIX = "qemu-daemonized-unix"
WINDOWS_STYLE = (("PYD_QEMU_LAUNCH", "detached"), ("PYD_QMP", "tls"))


@dataclass(frozen=True)
class SwitchedEnv(PydEnv):
    """A PydEnv whose every command (pyd, docker) gets `switches` in its environment."""

    switches: tuple[tuple[str, str], ...] = ()

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**(dict(self.switches) | extra))


def backend_env(backend: str, home: Path, docker_config: Path, name: str) -> PydEnv:
    """An environment whose instance `name` runs under `backend` (one of BACKENDS, or
    QEMU_POSIX)."""
    if backend == "libvirt":
        return PydEnv(home, docker_config)
    if backend == QEMU_POSIX:
        posix = PydEnv(home, docker_config)
        posix.pyd("config", "set", "--create", "backend", "qemu", "-n", name)
        return posix
    env = SwitchedEnv(home, docker_config, WINDOWS_STYLE)
    env.pyd("config", "set", "--create", "backend", "qemu", "-n", name)
    return env


def qmp(env: PydEnv, name: str, command: str) -> dict[str, Any]:
    """Runs `command` on the monitor of `name`'s QEMU (the TLS one), as pyd's client."""
    root = env.home / "instances" / name
    port = int((root / "qmp.port").read_text())
    return qmp_run(QmpEndpoint(QmpTransport.TLS, port=port, tls_dir=root / "qmp-tls"), command)
