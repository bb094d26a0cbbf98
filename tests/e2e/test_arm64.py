"""The aarch64 guest end to end, emulated under TCG on this x86 host: `pyd start --arch
aarch64` through libvirt (one instance shared by the tests, in file order; the last of them
deletes it), then the same guest through the direct QEMU backend. Never both at once: each
saturates the host's cores."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from pyd.host.loopback import free_loopback_port
from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, fetch, remove_domain

NAME = "arm"  # no other test uses it: its domain is pyd-arm, its context pyd-arm
DOMAIN = f"pyd-{NAME}"
QEMU_NAME = "armq"
IMAGE = "pyd-e2e-arm64-busybox"

# Lookups of absent domains are expected here; keep libvirt from printing them.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _remove_domain() -> bool:
    """Destroys and undefines pyd-arm if it exists; whether it did."""
    return remove_domain(DOMAIN)


def _domain_exists() -> bool:
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(DOMAIN)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _timed(env: PydEnv, *args: str) -> float:
    t0 = time.monotonic()
    env.pyd(*args)
    return time.monotonic() - t0


def _build_busybox(env: PydEnv, busybox: Path, workdir: Path, *docker: str) -> None:
    """A FROM-scratch image of the arm64 busybox, built in the guest: no registry."""
    shutil.copy(busybox, workdir / "busybox")
    (workdir / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    env.docker(*docker, "build", "-q", "-t", IMAGE, str(workdir))


@pytest.fixture(scope="module")
def arm(
    image_arm64: CachedImage, busybox_arm64: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PydEnv]:
    """A started aarch64 instance (libvirt) with the arm64 busybox image built in it."""
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as e:
        pytest.fail(f"libvirtd does not answer ({e}); start it: packaging/linux/start-libvirt")
    assert not _domain_exists(), f"a {DOMAIN} domain exists already on this host"
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    try:
        took = _timed(env, "start", "-n", NAME, "--arch", "aarch64")
        print(f"pyd start --arch aarch64 (libvirt): {took:.1f}s")
        _build_busybox(env, busybox_arm64, tmp_path_factory.mktemp("bb"))
        yield env
    finally:
        env.pyd("delete", "-f", "-n", NAME, check=False)
        _remove_domain()


def test_the_docker_cli_reaches_the_arm64_guest_through_its_context(arm: PydEnv) -> None:
    assert arm.docker("context", "show").stdout.strip() == DOMAIN
    info = arm.docker("info", "--format", "{{.Architecture}} {{.OSType}}").stdout.split()
    assert info == ["aarch64", "linux"]
    st = arm.status(NAME)
    assert (st["state"], st["backend"], st["arch"]) == ("running", "libvirt", "aarch64"), st


def test_an_image_of_the_arm64_busybox_runs_natively(arm: PydEnv) -> None:
    assert arm.docker("run", "--rm", IMAGE, "uname", "-m").stdout.strip() == "aarch64"
    built = arm.docker("image", "inspect", "--format", "{{.Architecture}}", IMAGE).stdout
    assert built.strip() == "arm64"


def test_a_published_port_reaches_the_host(arm: PydEnv) -> None:
    port = free_loopback_port()
    token = uuid.uuid4().hex
    web = arm.docker(
        "run", "-d", "-p", f"{port}:80", IMAGE, "sh", "-c",
        f"mkdir /www && echo {token} > /www/id && exec httpd -f -p 80 -h /www",
    ).stdout.strip()  # fmt: skip
    try:
        assert fetch(f"http://127.0.0.1:{port}/id", deadline=30).decode().strip() == token
    finally:
        arm.docker("rm", "-f", web)


def _mounted(env: PydEnv, location: Path, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while True:
        rows: list[dict[str, Any]] = json.loads(env.pyd("mount", "ls", "-n", NAME, "--json").stdout)
        row = next((r for r in rows if r["location"] == str(location)), None)
        if row is not None and row["state"] == "mounted":
            return
        if time.monotonic() > end:
            raise AssertionError(f"{location} not mounted after {seconds} s: {row}")
        time.sleep(0.2)


def test_a_shared_host_directory_is_read_and_written_by_a_container(
    arm: PydEnv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    share = tmp_path_factory.mktemp("arm-share")
    arm.pyd("mount", "add", str(share), "-n", NAME)
    _mounted(arm, share)
    (share / "from-host.txt").write_text("hello from the host\n")
    out = arm.docker(
        "run", "--rm", "-v", f"{share}:/data", IMAGE, "sh", "-c",
        "cat /data/from-host.txt && uname -m > /data/from-container.txt",
    ).stdout  # fmt: skip
    assert out == "hello from the host\n"
    assert (share / "from-container.txt").read_text() == "aarch64\n"


def test_delete_removes_the_arm64_instance(arm: PydEnv) -> None:
    """Last of the libvirt tests: the direct QEMU one below must not run beside it."""
    took = _timed(arm, "delete", "-f", "-n", NAME)
    print(f"pyd delete -f of the arm64 instance: {took:.1f}s")
    assert not _domain_exists()
    assert not (arm.home / "instances" / NAME).exists()
    assert DOMAIN not in arm.docker("context", "ls", "--format", "{{.Name}}").stdout.split()


def test_the_direct_qemu_backend_boots_the_arm64_guest(
    image_arm64: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Alone, whatever the tests above left: two emulated guests would share two cores.
    _remove_domain()
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    env.pyd("config", "set", "--create", "backend", "qemu", "-n", QEMU_NAME)
    pidfile = env.home / "instances" / QEMU_NAME / "qemu.pid"
    try:
        took = _timed(env, "start", "-n", QEMU_NAME, "--arch", "aarch64", "--no-context")
        print(f"pyd start --arch aarch64 (direct QEMU): {took:.1f}s")
        st = env.status(QEMU_NAME)
        assert (st["backend"], st["state"], st["arch"]) == ("qemu", "running", "aarch64"), st
        info = env.docker("-H", st["docker_host"], "info", "--format", "{{.Architecture}}")
        assert info.stdout.strip() == "aarch64"
        r = env.pyd("ssh", "-n", QEMU_NAME, "--", "uname -m")
        assert r.stdout.strip() == "aarch64"
        cmdline = Path(f"/proc/{int(pidfile.read_text())}/cmdline").read_bytes()
        assert b"qemu-system-aarch64" in cmdline
    finally:
        env.pyd("delete", "-f", "-n", QEMU_NAME, check=False)
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert not (env.home / "instances" / QEMU_NAME).exists()
