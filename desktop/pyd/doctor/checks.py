"""`pyd doctor`'s checks as values: what the probes saw (Facts) in, one Check per thing pyd
needs out, each failing one with the exact command that fixes it on this OS. Pure: the OS is
a field ("linux", "darwin", "win32"), so tests run every OS's checks and hints anywhere.

Required checks are what `pyd start` cannot do without (exit 1 when one fails); the others
are warnings: pyd works without them, slower or with less (software emulation, shares over
the agent's own connection, `pyd docker` instead of a host docker CLI).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pyd.config.qemu_install import QEMU_IMG, install_hint, not_found_message, upgrade_hint
from pyd.config.settings import DEFAULT_INSTANCE, BackendName
from pyd.vm.accel import AccelProbe
from pyd.vm.qemu_binary import Version, check_version, format_version

GIB = 1024**3
# Below this a start fails: a new instance's image is ~0.3 GiB and twice that while it
# downloads and unpacks, and the OS and data disks, seed and logs take their first writes.
MIN_FREE = 1 * GIB
# Below this, a warning: Docker's data disk (20 GiB by default, allocated as it fills)
# grows into this disk with every image pulled or built, and a host disk that fills up
# stops the VM's writes; 10 GiB holds a usual set of images and build cache.
LOW_FREE = 10 * GIB

WINDOWS_SSH = r"C:\Windows\System32\OpenSSH\ssh.exe"
WINDOWS_SFTP_SERVER = r"C:\Windows\System32\OpenSSH\sftp-server.exe"
_ADMIN_PS = "in an administrator PowerShell: "
OPENSSH_CLIENT_WINDOWS = _ADMIN_PS + "Add-WindowsCapability -Online -Name OpenSSH.Client~~~~0.0.1.0"
# sftp-server.exe ships with Windows' OpenSSH Server feature, not with the client.
OPENSSH_SERVER_WINDOWS = _ADMIN_PS + "Add-WindowsCapability -Online -Name OpenSSH.Server~~~~0.0.1.0"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was seen
    fix: str = ""  # the exact command (or step) that fixes it on this OS; "" when ok
    required: bool = True  # False: a warning, never a failed doctor

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fails(self) -> bool:
        """A required check that failed: `pyd doctor` exits 1, `pyd start` cannot work."""
        return self.required and not self.ok


@dataclass(frozen=True)
class DiskSpace:
    label: str  # what lives there: "image cache", "instances"
    path: str
    free: int | None  # bytes; None when it could not be read
    error: str = ""


@dataclass(frozen=True)
class Facts:
    """Everything the probes saw on this host, for one instance."""

    system: str  # "linux", "darwin", "win32"
    host_arch: str
    guest_arch: str
    qemu_program: str  # e.g. "qemu-system-x86_64"
    qemu_path: str | None  # None: not found
    qemu_version: Version | None  # None: not found, or --version failed (qemu_error)
    qemu_img_path: str | None  # None: not found where QEMU is looked for
    accel_setting: str  # "auto" or one accelerator
    accel: AccelProbe
    backend_setting: str  # auto, libvirt, qemu
    recorded_backend: BackendName | None  # what the instance last booted with
    libvirt_uri: str  # "" when libvirt's Python binding is missing
    libvirt_answers: bool
    ssh_path: str | None
    sftp_server: str | None  # OpenSSH's sftp-server, when found
    sftp_wanted: bool  # shares use OpenSSH's sftp-server here by default (Linux)
    docker_cli: str | None
    instance: str
    context: str  # the instance's docker context: pyd or pyd-NAME
    context_exists: bool
    instance_ran: bool  # state.json exists: its first start got as far as the boot
    qemu_error: str = ""
    libvirt_why_not: str = ""
    has_systemd: bool = False
    disks: tuple[DiskSpace, ...] = field(default_factory=tuple)
    loopback_error: str = ""  # "" when a loopback port could be bound
    config_error: str = ""  # config.toml cannot be read (the rest is checked on defaults)
    config_fix: str = ""
    rosetta: bool = False  # this Python is an x86_64 one translated by Rosetta 2 (macOS)


def all_checks(f: Facts) -> list[Check]:
    """Every check, in the order `pyd doctor` prints them."""
    found = [Check("config", False, f.config_error, f.config_fix)] if f.config_error else []
    found += [qemu_check(f), qemu_img_check(f), accel_check(f)]
    if f.rosetta:
        found.append(rosetta_check(f))
    libvirt = libvirt_check(f)
    if libvirt is not None:
        found.append(libvirt)
    found += [ssh_check(f), sftp_server_check(f)]
    found += [disk_check(d) for d in f.disks]
    found += [docker_cli_check(f), context_check(f), loopback_check(f)]
    return found


# Those that can make `pyd start` fail; the CLI appends their fixes to its error.
START_CHECKS = ("config", "qemu", "qemu-img", "accelerator", "libvirt", "disk", "loopback port")


def matters_for_start(check: Check) -> bool:
    return check.name.split(" (")[0] in START_CHECKS


def qemu_check(f: Facts) -> Check:
    name, program = "qemu", f.qemu_program
    if f.qemu_path is None:
        return Check(name, False, not_found_message(program, f.system), _qemu_install(f))
    if f.qemu_version is None:
        return Check(name, False, f"{f.qemu_path}: {f.qemu_error}", _qemu_install(f))
    problem = check_version(f.qemu_version, program, f.system, f.host_arch)
    if problem is not None:
        return Check(name, False, f"{f.qemu_path}: {problem}", upgrade_hint(program, f.system))
    return Check(name, True, f"{f.qemu_path}, QEMU {format_version(f.qemu_version)}")


def _qemu_install(f: Facts) -> str:
    return install_hint(f.qemu_program, f.system)


def qemu_img_check(f: Facts) -> Check:
    """qemu-img makes an instance's disks at its first start (and after `pyd upgrade`),
    found where QEMU is (pyd.config.qemu_install): required."""
    if f.qemu_img_path is None:
        return Check(
            QEMU_IMG, False, not_found_message(QEMU_IMG, f.system), install_hint(QEMU_IMG, f.system)
        )
    return Check(QEMU_IMG, True, f.qemu_img_path)


def accel_check(f: Facts) -> Check:
    """A warning under `accel = "auto"` (pyd falls back to software emulation, several times
    slower); required when the setting names the accelerator, as a start then fails."""
    probe = f.accel
    asked = f.accel_setting != "auto" and f.accel_setting == probe.accel
    detail = f"{probe.accel}: {probe.detail}"
    if not probe.ok and not asked:
        detail += "; pyd falls back to tcg (software emulation, several times slower)"
    return Check("accelerator", probe.ok, detail, "" if probe.ok else probe.fix, required=asked)


def rosetta_check(f: Facts) -> Check:
    """pyd still picks the Mac's own arm64 guest and hvf (config.arches asks sysctl), but
    everything pyd runs in Python (the agent's relays, shares) is translated: a warning."""
    return Check(
        "python",
        False,
        f"Python runs under Rosetta (an x86_64 Python on this {f.host_arch} Mac): "
        "pyd's own work is translated, slower",
        "install an arm64 Python (python.org's macOS installer, or "
        "/opt/homebrew/bin/brew install python), then install pyd with it",
        required=False,
    )


def libvirt_check(f: Facts) -> Check | None:
    """Linux only (and wherever the setting asks for libvirt): required when the instance
    runs with libvirt (the setting, or auto that booted it under libvirt); a warning when
    auto would fall back to QEMU directly."""
    explicit = f.backend_setting == BackendName.LIBVIRT
    if f.system != "linux" and not explicit:
        return None
    name = "libvirt"
    if f.backend_setting == BackendName.QEMU:
        return Check(name, True, "not used (backend qemu)", required=False)
    where = f"at {f.libvirt_uri}" if f.libvirt_uri else ""
    if f.libvirt_answers:
        return Check(name, True, f"libvirtd answers {where}", required=explicit)
    needed = explicit or f.recorded_backend is BackendName.LIBVIRT
    why = f.libvirt_why_not or "no answer"
    detail = f"libvirtd does not answer {where} ({why})" if where else why
    if not needed:
        detail += "; backend auto runs QEMU directly instead"
    return Check(name, False, detail, _libvirt_fix(f), required=needed)


def _libvirt_fix(f: Facts) -> str:
    if f.system == "darwin":
        return "brew services start libvirt"
    if f.system != "linux":
        return "pyd config set backend qemu" + _name_opt(f.instance)
    if not f.libvirt_uri:  # the binding is missing: the daemon, its headers, then the binding
        return (
            "sudo apt-get install libvirt-daemon-system libvirt-dev pkg-config && "
            "pip install libvirt-python"
        )
    if f.has_systemd:
        return "sudo systemctl start libvirtd"
    return "sudo sh -c 'virtlogd -d && libvirtd -d'"


def ssh_check(f: Facts) -> Check:
    """OpenSSH's client carries shares (and `pyd ssh`); without it the agent's own SSH
    connection carries them, slower: a warning."""
    if f.ssh_path is not None:
        return Check("ssh", True, f.ssh_path, required=False)
    fixes = {
        "win32": OPENSSH_CLIENT_WINDOWS,
        "darwin": "macOS ships /usr/bin/ssh: put /usr/bin back on PATH",
    }
    place = f"PATH or {WINDOWS_SSH}" if f.system == "win32" else "PATH"  # host.programs
    return Check(
        "ssh",
        False,
        f"no OpenSSH client (ssh) in {place}: shares go over the agent's own connection "
        "(slower) and `pyd ssh` does not work",
        fixes.get(f.system, "sudo apt-get install openssh-client"),
        required=False,
    )


def sftp_server_check(f: Facts) -> Check:
    """OpenSSH's sftp-server answers shares on Linux (confined to the share); elsewhere pyd's
    built-in server does, and a missing sftp-server changes nothing: ok there."""
    name = "sftp-server"
    if f.sftp_server is not None:
        return Check(name, True, f.sftp_server, required=False)
    if not f.sftp_wanted:
        where = WINDOWS_SFTP_SERVER if f.system == "win32" else "/usr/libexec/sftp-server"
        return Check(
            name,
            True,
            f"not used: pyd's built-in SFTP server answers shares on {f.system} ({where} absent)",
            required=False,
        )
    return Check(
        name,
        False,
        "no OpenSSH sftp-server: shares use pyd's built-in SFTP server (slower on small files)",
        "sudo apt-get install openssh-sftp-server",
        required=False,
    )


def disk_check(d: DiskSpace) -> Check:
    name = f"disk ({d.label})"
    if d.free is None:
        return Check(
            name,
            False,
            f"{d.path}: free space unknown ({d.error})",
            f"check that {d.path} (or its parent) exists and is yours",
            required=False,
        )
    free = f"{d.free / GIB:.1f} GiB free in {d.path}"
    fix = f"free space on the disk holding {d.path}, e.g. `pyd image prune`"
    if d.free < MIN_FREE:
        return Check(name, False, f"{free}: a start needs at least 1 GiB", fix)
    if d.free < LOW_FREE:
        return Check(
            name,
            False,
            f"{free}: below 10 GiB Docker's data disk soon fills it as images are pulled",
            fix,
            required=False,
        )
    return Check(name, True, free)


def docker_cli_check(f: Facts) -> Check:
    """pyd works without a host docker CLI (`pyd docker` runs the guest's): a warning."""
    if f.docker_cli is not None:
        return Check("docker CLI", True, f.docker_cli, required=False)
    return Check(
        "docker CLI",
        False,
        "no docker CLI on PATH: `pyd docker ARGS` runs the guest's instead",
        "pyd shim install",  # a `docker` command that runs `pyd docker`
        required=False,
    )


def context_check(f: Facts) -> Check:
    name = f"docker context {f.context}"
    if f.context_exists:
        return Check(name, True, "exists", required=False)
    if not f.instance_ran:
        first = f"made at the first `pyd start{_name_opt(f.instance)}`"
        return Check(name, True, first, required=False)
    return Check(
        name,
        False,
        f"missing although {f.instance!r} has started before: `docker` does not reach it",
        f"pyd start{_name_opt(f.instance)}",  # writes the context again, running or not
        required=False,
    )


def loopback_check(f: Facts) -> Check:
    name = "loopback port"
    if not f.loopback_error:
        return Check(name, True, "127.0.0.1 accepts a listener (the guest's SSH forward)")
    fixes = {
        "linux": "sudo ip link set lo up",
        "darwin": "sudo ifconfig lo0 up",
        "win32": "netsh int ipv4 show excludedportrange protocol=tcp (ports Windows "
        "reserved), then allow 127.0.0.1 listeners in the firewall or security product",
    }
    return Check(
        name, False, f"cannot listen on 127.0.0.1: {f.loopback_error}", fixes.get(f.system, "")
    )


def _name_opt(name: str) -> str:
    return "" if name == DEFAULT_INSTANCE else f" -n {name}"


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.fails for c in checks) else 0


def start_fixes(checks: list[Check]) -> list[str]:
    """The failing checks that can make `pyd start` fail, as lines for its error's hint."""
    return [
        f"{c.name}: {c.detail}" + (f"; fix: {c.fix}" if c.fix else "")
        for c in checks
        if not c.ok and matters_for_start(c)
    ]
