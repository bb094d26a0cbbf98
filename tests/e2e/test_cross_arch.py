"""Containers of the other architecture on the x86_64 guest (shared guest): QEMU's user-mode
emulator, registered with binfmt_misc at boot (guest-image/overlay/usr/lib/pyd/binfmt), runs
an arm64 busybox from Debian's busybox-static:arm64, in `docker run` and `docker build`."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from pyd.guestdocker.platforms import COMMAND, parse_platforms
from pyd.vm.throwaway import check
from pyd.vm.throwaway_qemu import DirectVM

IMAGE = "pyd-test/busybox-arm64"
BUILT = "pyd-test/built-on-arm64"
# The guest's docker CLI has no buildx: the classic builder, as the other guest tests use.
BUILD = "DOCKER_BUILDKIT=0 docker build -q --platform linux/arm64"


@pytest.fixture(scope="module")
def x86_guest(guest: tuple[DirectVM, paramiko.SSHClient]) -> paramiko.SSHClient:
    client = guest[1]
    if check(client, "uname -m").strip() != "x86_64":
        pytest.skip("the arm64-on-x86_64 case; an arm64 guest emulates linux/amd64 instead")
    return client


@pytest.fixture(scope="module")
def arm64_busybox_image(x86_guest: paramiko.SSHClient, busybox_arm64: Path) -> str:
    """A FROM-scratch arm64 image: its RUN already executes the arm64 busybox (emulated)."""
    ctx = "/tmp/bbctx-arm64"
    check(x86_guest, f"mkdir -p {ctx}")
    with x86_guest.open_sftp() as sftp:
        sftp.put(str(busybox_arm64), f"{ctx}/busybox")
        sftp.chmod(f"{ctx}/busybox", 0o755)
        with sftp.open(f"{ctx}/Dockerfile", "w") as f:
            f.write(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            )
    check(x86_guest, f"{BUILD} -t {IMAGE} {ctx}")
    return IMAGE


def test_the_emulator_is_registered_fixed_and_reported(x86_guest: paramiko.SSHClient) -> None:
    entry = check(x86_guest, "cat /proc/sys/fs/binfmt_misc/qemu-aarch64").splitlines()
    assert entry[0] == "enabled"
    flags = next(line for line in entry if line.startswith("flags:"))
    assert "F" in flags.split(":", 1)[1], entry  # opened at boot: works in every container
    # The agent's command, on the real guest: what `pyd status` lists.
    assert parse_platforms(check(x86_guest, COMMAND)) == ("linux/amd64", "linux/arm64")
    # Only the one emulator is in the image (Debian's qemu-user holds ~30).
    assert check(x86_guest, "ls /usr/bin/qemu-*").split() == ["/usr/bin/qemu-aarch64"]


def test_an_arm64_container_runs_under_emulation(
    x86_guest: paramiko.SSHClient, arm64_busybox_image: str
) -> None:
    arch = check(x86_guest, f"docker image inspect -f '{{{{.Architecture}}}}' {IMAGE}")
    assert arch.strip() == "arm64"
    out = check(x86_guest, f"docker run --rm --platform linux/arm64 {IMAGE} uname -m")
    assert out.strip() == "aarch64"


def test_docker_build_for_arm64_runs_an_arm64_binary(
    x86_guest: paramiko.SSHClient, arm64_busybox_image: str
) -> None:
    ctx = "/tmp/bbctx-arm64-build"
    check(x86_guest, f"mkdir -p {ctx}")
    with x86_guest.open_sftp() as sftp, sftp.open(f"{ctx}/Dockerfile", "w") as f:
        f.write(f"FROM {IMAGE}\nRUN uname -m > /built-on\n")
    check(x86_guest, f"{BUILD} -t {BUILT} {ctx}")
    out = check(x86_guest, f"docker run --rm --platform linux/arm64 {BUILT} cat /built-on")
    assert out.strip() == "aarch64"
