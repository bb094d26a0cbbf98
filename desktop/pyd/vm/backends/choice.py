"""Which VM backend runs an instance: its `backend` setting, and for `auto` the one it booted
with or, before its first boot, libvirt where its daemon answers on Linux and QEMU directly
everywhere else (choose_backend, pure; libvirt_answers is the probe)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

from pyd.config.settings import BackendName, InstanceConfig
from pyd.config.store import load_config
from pyd.errors import EnvironmentProblem, PydError
from pyd.instance.registry import instance, name_option
from pyd.instance.state import load_state
from pyd.vm.backends.base import VMBackend

NO_BINDING = "libvirt's Python binding (libvirt-python) is not installed"
# The probe: (answers, why not) for a libvirt URI.
Probe = Callable[[str], tuple[bool, str]]


class BackendChoice(NamedTuple):
    name: BackendName  # libvirt or qemu, never auto
    reason: str  # why, as `pyd status` says it after the name


class BackendUnavailable(EnvironmentProblem):
    """`auto` keeps an instance on libvirt, its backend at boot, and libvirtd does not
    answer: booting it with QEMU directly could run a second VM on the same disks."""

    def __init__(self, message: str, hint: str, choice: BackendChoice) -> None:
        super().__init__(message, hint)
        self.choice = choice


def choose_backend(
    setting: str,
    system: str,
    libvirt_answers: bool,
    recorded: BackendName | None,
    uri: str = "",
    why_not: str = "",
    name: str = "default",
) -> BackendChoice:
    """Pure. `system` is sys.platform's value; `uri` where libvirt was asked ("" when its
    Python binding is missing, `why_not` then says so). An explicit setting always wins.
    Raises BackendUnavailable when auto keeps a libvirt instance on a libvirtd that does
    not answer."""
    if setting != BackendName.AUTO:
        return BackendChoice(BackendName(setting), "set in config.toml")
    if recorded is BackendName.LIBVIRT and not libvirt_answers:
        opt = name_option(name)
        choice = BackendChoice(BackendName.LIBVIRT, "recorded when it booted")
        where = f"at {uri}" if uri else f"({why_not})"
        raise BackendUnavailable(
            f"instance {name!r} runs under libvirt (backend auto keeps the backend it booted "
            f"with), and libvirtd does not answer {where}",
            hint=f"start libvirtd ({_start_libvirtd(system)}); or, to run it with QEMU "
            f"directly from now on: `pyd stop{opt}` once libvirtd answers, then "
            f"`pyd config set backend qemu{opt}`",
            choice=choice,
        )
    if recorded is not None:
        return BackendChoice(recorded, "recorded when it booted")
    if system != "linux":
        return BackendChoice(BackendName.QEMU, f"auto on {system}")
    if libvirt_answers:
        return BackendChoice(BackendName.LIBVIRT, f"its daemon answers at {uri}")
    if not uri:
        return BackendChoice(BackendName.QEMU, why_not)
    detail = f" ({why_not})" if why_not else ""
    return BackendChoice(BackendName.QEMU, f"libvirtd does not answer at {uri}{detail}")


def _start_libvirtd(system: str) -> str:
    if system == "linux":
        # Without systemd (containers, WSL): the daemons by hand, as packaging/linux/start-libvirt
        # does (an installed pyd has no checkout to run it from).
        return "sudo systemctl start libvirtd; without systemd: sudo virtlogd -d; sudo libvirtd -d"
    return "brew services start libvirt" if system == "darwin" else "libvirt's service"


def libvirt_uri(cfg: InstanceConfig) -> str:
    """The URI pyd would use for libvirt; "" when libvirt's Python binding is missing."""
    try:
        from pyd.vm.backends.libvirt_backend import choose_uri
    except ImportError:
        return ""
    return choose_uri(cfg.libvirt_uri, os.environ, _euid())


def libvirt_answers(uri: str) -> tuple[bool, str]:
    """Whether libvirtd answers at `uri`: one connection opened and closed (a refused or
    missing socket fails at once). With why not, when it does not."""
    try:
        import libvirt
    except ImportError:
        return False, NO_BINDING
    libvirt.registerErrorHandler(_quiet, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        return False, str(e.get_error_message() or e)
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
    return True, ""


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; the reason is reported."""


def resolve_backend(
    name: str,
    cfg: InstanceConfig,
    system: str = sys.platform,
    probe: Probe | None = None,
) -> BackendChoice:
    """The backend `name` runs with now, and why (may raise BackendUnavailable). The probe
    runs only for auto, on Linux or for a libvirt instance."""
    recorded = _recorded(name) if cfg.backend == BackendName.AUTO else None
    answers, why_not, uri = False, "", ""
    auto = cfg.backend == BackendName.AUTO
    if auto and (recorded is BackendName.LIBVIRT or (recorded is None and system == "linux")):
        uri = libvirt_uri(cfg)
        answers, why_not = (probe or libvirt_answers)(uri) if uri else (False, NO_BINDING)
    return choose_backend(cfg.backend, system, answers, recorded, uri, why_not, name)


def _recorded(name: str) -> BackendName | None:
    state = load_state(instance(name).files.state)
    return state.backend if state is not None else None


def backend_named(name: str, cfg: InstanceConfig, backend: BackendName) -> VMBackend:
    """The backend object for instance `name` (libvirt at the configured URI)."""
    if backend == BackendName.LIBVIRT:
        from pyd.vm.backends.libvirt_backend import LibvirtBackend, choose_uri

        return LibvirtBackend(name, choose_uri(cfg.libvirt_uri, os.environ, _euid()))
    from pyd.vm.backends.qemu_process import QemuProcessBackend

    return QemuProcessBackend(name, instance(name).files)


def backend_for_config(name: str, cfg: InstanceConfig) -> VMBackend:
    return backend_named(name, cfg, resolve_backend(name, cfg).name)


def backend_for(name: str) -> VMBackend:
    return backend_for_config(name, load_config(instance(name).files.config))


def backend_kind(backend: VMBackend) -> BackendName | None:
    """Which backend `backend` is, to record in state.json; None for any other (tests')."""
    from pyd.vm.backends.qemu_process import QemuProcessBackend

    if isinstance(backend, QemuProcessBackend):
        return BackendName.QEMU
    try:
        from pyd.vm.backends.libvirt_backend import LibvirtBackend
    except ImportError:
        return None
    return BackendName.LIBVIRT if isinstance(backend, LibvirtBackend) else None


def backends_to_stop(name: str) -> tuple[list[VMBackend], str]:
    """The backend that may run `name`, for stopping and deleting it: the configured one
    (for auto, the one it booted with, asked even when libvirtd does not answer: its error
    is then told rather than the VM skipped); every one that may, when config.toml or
    state.json cannot be read (a damaged file must not leave a VM running nor an instance
    undeletable). With them, why the config was not used ("" when it was)."""
    try:
        return [backend_for(name)], ""
    except BackendUnavailable as e:
        cfg = load_config(instance(name).files.config)
        return [backend_named(name, cfg, e.choice.name)], ""
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
