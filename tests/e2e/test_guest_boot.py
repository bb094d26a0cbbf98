"""The built image boots under QEMU with a seed and serves Docker (shared guest)."""

from __future__ import annotations

import base64
from pathlib import Path

import paramiko
import pytest

from pyd.instance.files import InstanceFiles
from pyd.ssh.connect import HostKeyMismatchError, SSHTarget, connect
from pyd.ssh.keys import generate_keypair
from pyd.vm.throwaway import check
from pyd.vm.throwaway_qemu import DirectVM
from tests.e2e.guestvm import build_busybox_image
from tests.httpserve import serve_directory


def test_guest_presents_the_seeded_host_key(guest: tuple[DirectVM, paramiko.SSHClient]) -> None:
    vm, client = guest
    transport = client.get_transport()
    assert transport is not None
    presented = transport.get_remote_server_key()
    seeded = (vm.files.host_key.with_name("host_ed25519.pub")).read_text().split()
    assert presented.get_name() == seeded[0] == "ssh-ed25519"
    assert presented.asbytes() == base64.b64decode(seeded[1])


def test_a_different_pinned_host_key_is_refused(guest: tuple[DirectVM, paramiko.SSHClient]) -> None:
    vm, _ = guest
    wrong = generate_keypair("not-the-guest")
    target = vm.ssh_target()
    with pytest.raises(HostKeyMismatchError, match="different host key"):
        connect(
            SSHTarget(target.host, target.port, target.user, target.key_file, wrong.public_openssh)
        )


def test_passwords_and_unknown_keys_get_no_shell(
    guest: tuple[DirectVM, paramiko.SSHClient], tmp_path: Path
) -> None:
    vm, client = guest
    config = check(
        client,
        "sshd -T 2>/dev/null | grep -E '^(passwordauthentication|"
        "kbdinteractiveauthentication|permitrootlogin) '",
    )
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    assert "permitrootlogin without-password" in config
    stranger = tmp_path / "stranger"
    stranger.write_text(generate_keypair("stranger").private_openssh)
    target = vm.ssh_target()
    with pytest.raises(paramiko.AuthenticationException):
        connect(SSHTarget(target.host, target.port, target.user, stranger, target.host_public_key))


def test_docker_info_reports_overlay2_on_the_data_disk(ssh: paramiko.SSHClient) -> None:
    info = check(ssh, "docker info --format '{{.Driver}} {{.DockerRootDir}}'").split()
    assert info == ["overlay2", "/var/lib/docker"]
    # /var/lib/docker is the data disk (serial pyd-data), not the OS disk.
    source = check(ssh, "findmnt -n -o SOURCE --target /var/lib/pyd-data").strip()
    assert check(ssh, f"cat /sys/block/{Path(source).name}/serial").strip() == "pyd-data"
    assert "discard" in check(ssh, "findmnt -n -o OPTIONS --target /var/lib/pyd-data")


def test_nothing_the_boot_started_is_left_a_zombie(ssh: paramiko.SSHClient) -> None:
    """A job a daemon's start script leaves in the background must be init's to reap, not
    the daemon's that the script became (dockerd reaps no child it did not start)."""
    check(ssh, "docker info >/dev/null")  # dockerd up: its start script has run
    zombies = check(ssh, "ps -eo stat,ppid,args | awk '$1 ~ /^Z/'").strip()
    assert zombies == ""


def test_build_and_run_a_busybox_image_without_a_registry(
    ssh: paramiko.SSHClient, busybox_static: Path
) -> None:
    build_busybox_image(ssh, busybox_static, "pyd-test/busybox")
    out = check(ssh, "docker run --rm pyd-test/busybox echo hello-from-pyd-guest")
    assert out.strip() == "hello-from-pyd-guest"


def test_containers_reach_out_through_the_guests_nat(
    ssh: paramiko.SSHClient, busybox_static: Path, tmp_path: Path
) -> None:
    # QEMU's user network maps 10.0.2.2 to the host's loopback: a container fetching from a
    # server on the host's 127.0.0.1 proves outbound NAT (the guest's firewall rules) works.
    build_busybox_image(ssh, busybox_static, "pyd-test/busybox")
    (tmp_path / "token").write_text("nat-works-7f3a\n")
    with serve_directory(tmp_path) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        out = check(ssh, f"docker run --rm pyd-test/busybox wget -qO- http://10.0.2.2:{port}/token")
    assert out.strip() == "nat-works-7f3a"


def test_seed_settings_reach_the_guest(guest: tuple[DirectVM, paramiko.SSHClient]) -> None:
    vm, client = guest
    assert check(client, "hostname").strip() == "pyd-test"
    # Not /root: a share of a root user's host home is mounted there.
    assert check(client, "echo $HOME; pwd").split() == ["/var/lib/pyd/root"] * 2
    assert check(
        client, "stat -c %a /etc/ssh/ssh_host_ed25519_key /etc/ssh/pyd_authorized_keys"
    ).split() == ["600", "600"]
    assert InstanceFiles(vm.files.root).seed_iso.stat().st_mode & 0o777 == 0o600
