"""Boot an image in a throwaway or given instance directory with QEMU directly and talk
to it over SSH: `pyd image boot-check`, the e2e tests and bench/ use this. The VM is
always powered off (or killed) when the block ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from pyd.config.arches import get_arch
from pyd.config.machine import machine_settings
from pyd.errors import PydError
from pyd.host.loopback import free_loopback_port
from pyd.image.cache import CachedImage
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import SeedSettings, ensure_disks, write_seed
from pyd.vm.accel import detect_accel
from pyd.vm.spec import guest_spec
from pyd.vm.throwaway_qemu import DirectVM

# Under software emulation a boot to a Docker answer takes ~20 s; leave room for a loaded host.
BOOT_TIMEOUT = 240.0


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run(client: paramiko.SSHClient, command: str, timeout: float = 300) -> Result:
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return Result(stdout.channel.recv_exit_status(), out, err)


def check(client: paramiko.SSHClient, command: str, timeout: float = 300) -> str:
    """stdout of `command`; a PydError with its output when it fails."""
    r = run(client, command, timeout)
    if r.exit_code != 0:
        raise PydError(
            f"guest command {command!r} failed ({r.exit_code}): "
            f"{(r.stderr + r.stdout).strip()[-2000:]}"
        )
    return r.stdout


def wait_for_docker(client: paramiko.SSHClient, timeout: float = BOOT_TIMEOUT) -> str:
    """Blocks in the guest until dockerd's socket exists, then asks it once (a poll of the
    docker CLI would cost the booting guest ~1 s of emulated CPU per try)."""
    return check(
        client,
        f"i=0; until [ -S /run/docker.sock ]; do i=$((i+1)); [ $i -gt {int(timeout * 10)} ] "
        "&& exit 9; sleep 0.1; done; docker version --format '{{.Server.Version}}'",
        timeout,
    ).strip()


def prepare(root: Path, image: CachedImage, hostname: str = "pyd-test") -> InstanceFiles:
    files = InstanceFiles(root)
    ensure_disks(files, image, data_gib=8)
    write_seed(files, SeedSettings(instance_id=root.name, hostname=hostname))
    return files


@contextlib.contextmanager
def booted(
    files: InstanceFiles, image: CachedImage, accel: str | None = None
) -> Iterator[tuple[DirectVM, paramiko.SSHClient]]:
    arch = get_arch(image.manifest.arch)
    spec = guest_spec(
        arch,
        machine_settings(accel or detect_accel(arch.name), arch.name),
        image,
        files,
        cpus=2,
        memory_mib=2048,
        ssh_port=free_loopback_port(),
    )
    vm = DirectVM.launch(spec, files)
    client = None
    try:
        client = vm.connect(BOOT_TIMEOUT)
        yield vm, client
    finally:
        if client is not None:
            vm.poweroff(client, timeout=60)
        vm.kill()


def elapsed(vm: DirectVM) -> float:
    return time.monotonic() - vm.started
