"""Booting the built image with QEMU for the e2e tests (and bench/): one instance
directory, its seed and disks, a VM, an SSH client. Always killed on exit."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from pyd.accel import detect_accel
from pyd.arches import get_arch
from pyd.backends.qemu_direct import DirectVM, guest_spec
from pyd.image.cache import CachedImage
from pyd.instance_files import InstanceFiles
from pyd.machine import machine_settings
from pyd.netports import free_loopback_port
from pyd.provision import SeedSettings, ensure_disks, write_seed

# Under software emulation a boot to a Docker answer takes ~20 s; leave room for a loaded CI.
BOOT_TIMEOUT = 240.0


@dataclass
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
    r = run(client, command, timeout)
    assert r.exit_code == 0, f"{command!r} failed ({r.exit_code}): {r.stderr}{r.stdout}"
    return r.stdout


def wait_for_docker(client: paramiko.SSHClient, timeout: float = BOOT_TIMEOUT) -> str:
    """Blocks in the guest until dockerd's socket exists, then asks it once."""
    return check(
        client,
        f"i=0; until [ -S /run/docker.sock ]; do i=$((i+1)); [ $i -gt {int(timeout * 10)} ] "
        "&& exit 9; sleep 0.1; done; docker version --format '{{.Server.Version}}'",
        timeout,
    ).strip()


def build_busybox_image(client: paramiko.SSHClient, busybox: Path, tag: str) -> None:
    """A FROM-scratch image from Debian's busybox-static: no registry needed."""
    check(client, "mkdir -p /tmp/bbctx")
    with client.open_sftp() as sftp:
        sftp.put(str(busybox), "/tmp/bbctx/busybox")
        sftp.chmod("/tmp/bbctx/busybox", 0o755)
        with sftp.open("/tmp/bbctx/Dockerfile", "w") as f:
            f.write('FROM scratch\nCOPY busybox /bin/busybox\n'
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
    check(client, f"docker build -q -t {tag} /tmp/bbctx")


def prepare(root: Path, image: CachedImage, hostname: str = "pyd-test") -> InstanceFiles:
    files = InstanceFiles(root)
    ensure_disks(files, image, data_gib=8)
    write_seed(files, SeedSettings(instance_id=root.name, hostname=hostname))
    return files


@contextlib.contextmanager
def booted(files: InstanceFiles, image: CachedImage) -> Iterator[tuple[DirectVM, paramiko.SSHClient]]:
    spec = guest_spec(get_arch(), machine_settings(detect_accel()), image, files,
                      cpus=2, memory_mib=2048, ssh_port=free_loopback_port())
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
