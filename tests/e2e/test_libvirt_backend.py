"""The real guest runs under libvirt (qemu:///system): it boots, serves Docker over the pinned
SSH forward, powers off through the ACPI button, and its definition goes without its disks."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import paramiko
import pytest

from pyd.config.arches import get_arch
from pyd.config.machine import machine_settings
from pyd.errors import EnvironmentProblem
from pyd.host.loopback import free_loopback_port
from pyd.image.cache import CachedImage
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.ssh.connect import SSHTarget, ssh_while_booting
from pyd.vm.backends.base import VMState
from pyd.vm.backends.libvirt_backend import (
    SYSTEM_URI,
    LibvirtBackend,
    find_firmware,
    runs_as_root,
)
from pyd.vm.backends.libvirt_xml import domain_xml
from pyd.vm.spec import GuestSpec, guest_spec
from pyd.vm.throwaway import BOOT_TIMEOUT, prepare, wait_for_docker

SHUTDOWN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def system_libvirt() -> Iterator[libvirt.virConnect]:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as e:
        pytest.fail(
            f"libvirt at {SYSTEM_URI} is not reachable ({e}); run packaging/linux/start-libvirt"
        )
    yield conn
    conn.close()


@pytest.fixture
def instance(image: CachedImage, tmp_path: Path) -> tuple[str, InstanceFiles, GuestSpec]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    files = prepare(tmp_path / name, image)
    spec = guest_spec(
        get_arch(image.manifest.arch),
        machine_settings("tcg"),
        image,
        files,
        cpus=2,
        memory_mib=2048,
        ssh_port=free_loopback_port(),
    )
    return name, files, spec


@pytest.fixture
def backend(
    system_libvirt: libvirt.virConnect, instance: tuple[str, InstanceFiles, GuestSpec]
) -> Iterator[LibvirtBackend]:
    vm = LibvirtBackend(instance[0], SYSTEM_URI)
    try:
        yield vm
    finally:
        # Whatever the test did, no domain outlives it.
        vm.kill()
        vm.delete()
        vm.close()


def ssh_when_up(vm: LibvirtBackend, files: InstanceFiles, spec: GuestSpec) -> paramiko.SSHClient:
    """SSH with the pinned host key; fails at once if the domain stops meanwhile."""
    _client, host = instance_keys(files)
    target = SSHTarget("127.0.0.1", spec.ssh_port, "root", files.client_key, host.public_openssh)

    def check_alive() -> None:
        if vm.state() is not VMState.RUNNING:
            pytest.fail(f"the domain stopped while booting; console: {spec.serial_log}")

    return ssh_while_booting(target, BOOT_TIMEOUT, check_alive)


def test_guest_boots_serves_docker_and_powers_off_cleanly_under_libvirt(
    backend: LibvirtBackend,
    instance: tuple[str, InstanceFiles, GuestSpec],
    system_libvirt: libvirt.virConnect,
) -> None:
    _name, files, spec = instance
    assert backend.state() is VMState.ABSENT

    started = time.monotonic()
    backend.start(spec)
    defined = time.monotonic()
    assert backend.state() is VMState.RUNNING
    client = ssh_when_up(backend, files, spec)
    try:
        ssh_up = time.monotonic()
        assert wait_for_docker(client)
        docker_up = time.monotonic()
    finally:
        client.close()
    # Multi-threaded TCG (QEMU's default; libvirt cannot say thread=multi): one thread per
    # vCPU, named by debug-threads=on. One "ALL CPUs/TCG" thread would run both on one core.
    pid = Path(f"/run/libvirt/qemu/{backend.name}.pid").read_text().strip()
    threads = {p.read_text().strip() for p in Path(f"/proc/{pid}/task").glob("*/comm")}
    assert {f"CPU {i}/TCG" for i in range(spec.cpus)} <= threads, threads
    print(
        f"\nlibvirt: start() {defined - started:.1f}s, SSH {ssh_up - started:.1f}s, "
        f"docker {docker_up - started:.1f}s after start()"
    )

    before = time.monotonic()
    backend.shutdown(timeout=SHUTDOWN_TIMEOUT)
    took = time.monotonic() - before
    print(f"libvirt: shutdown() {took:.1f}s")
    assert backend.state() is VMState.STOPPED
    # The clean path: the guest powered itself off (SHUTDOWN), it was not destroyed.
    state, reason = system_libvirt.lookupByName(backend.name).state()
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    assert took < SHUTDOWN_TIMEOUT

    backend.delete()
    assert backend.state() is VMState.ABSENT
    for disk in spec.disks:
        assert disk.path.is_file(), f"{disk.path} was removed with the domain"
    assert files.serial_log.stat().st_size > 0


def test_libvirt_runs_qemu_with_the_direct_backends_settings(
    system_libvirt: libvirt.virConnect, instance: tuple[str, InstanceFiles, GuestSpec]
) -> None:
    # The command line libvirt would run for the domain, without defining or starting it.
    name, _files, spec = instance
    firmware = find_firmware(spec.arch.firmware, spec.arch.qemu)
    xml = domain_xml(
        f"pyd-{name}",
        spec,
        instance=name,
        firmware=firmware,
        run_as_root=runs_as_root(SYSTEM_URI, os.geteuid()),
    )
    argv = system_libvirt.domainXMLToNative("qemu-argv", xml, 0).split()
    pairs = set(itertools.pairwise(argv))
    assert ("-accel", "tcg,tb-size=512") in pairs
    assert ("-cpu", "max") in pairs
    assert ("-bios", str(firmware)) in pairs
    assert ("-kernel", str(spec.kernel)) in pairs
    assert ("-netdev", f"user,id=pydnet,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22") in pairs
    assert "-no-acpi" not in argv
    assert "-nodefaults" in argv


def test_a_missing_qemu_is_reported_with_how_to_install_it(
    system_libvirt: libvirt.virConnect, instance: tuple[str, InstanceFiles, GuestSpec]
) -> None:
    # An architecture whose emulator no machine here has (qemu-system-arm is installed for
    # the arm64 guest): libvirt finds no emulator for it, as it would for a missing QEMU.
    absent = dataclasses.replace(get_arch("aarch64"), name="riscv64", qemu="qemu-system-riscv64")
    assert shutil.which(absent.qemu) is None
    name, _files, spec = instance
    vm = LibvirtBackend(name, SYSTEM_URI)
    try:
        with pytest.raises(EnvironmentProblem, match="riscv64") as info:
            vm.start(dataclasses.replace(spec, arch=absent))
        assert "brew install qemu" in info.value.hint
        assert vm.state() is VMState.ABSENT
    finally:
        vm.kill()
        vm.delete()
        vm.close()
