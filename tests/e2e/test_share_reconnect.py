"""A running container's bind into a share keeps working after the link drops and after
`pyd suspend` + `pyd start` (issue 18): the guest's sshfs outlives its connection and
connects again (pyd.mounts.sshfs). Before, the bind held a dead FUSE mount for good
("Transport endpoint is not connected"). One libvirt instance under TCG for the module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from pyd.mounts.sshfs import guest_socket
from tests.e2e.pydcli import PydEnv, build_busybox_image, cut_agent_ssh, wait_mounted

NAME = "srec"
IMAGE = "pyd-e2e-srec-busybox"
CONTAINER = "srec-writer"
# Counts into the share through its bind, a new file each second (written aside and renamed),
# and goes on through errors while the link is down.
WRITER = "i=0; while true; do i=$((i+1)); echo $i > /s/n.new && mv /s/n.new /s/n; sleep 1; done"


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("srec") / "a share"


@pytest.fixture(scope="module")
def env(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory, share: Path
) -> Iterator[PydEnv]:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    share.mkdir()
    try:
        e.pyd("start", "-n", NAME, "--memory", "1GiB")
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        e.pyd("mount", "add", str(share), "-n", NAME)
        wait_mounted(e, NAME, share)
        e.docker("run", "-d", "--name", CONTAINER, "-v", f"{share}:/s", IMAGE, "sh", "-c", WRITER)
        _until_written(share)
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _count(share: Path) -> int:
    try:
        return int((share / "n").read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _until_written(share: Path, seconds: float = 90) -> int:
    """The container's count once it moves on from now: its writes reach the host again."""
    first = _count(share)
    end = time.monotonic() + seconds
    while _count(share) <= first:
        assert time.monotonic() < end, f"the container's count stuck at {first} for {seconds} s"
        time.sleep(0.5)
    return _count(share)


def _container_reads(env: PydEnv, share: Path, name: str, text: str, seconds: float = 90) -> None:
    """The running container (not a new one) reads a file the host wrote just now."""
    (share / name).write_text(text)
    end = time.monotonic() + seconds
    while True:
        r = env.docker("exec", CONTAINER, "cat", f"/s/{name}", check=False)
        if r.returncode == 0 and r.stdout == text:
            return
        assert time.monotonic() < end, f"not back after {seconds} s: {r.stdout!r} {r.stderr!r}"
        time.sleep(0.5)


def test_a_running_containers_bind_survives_a_cut_link(env: PydEnv, share: Path) -> None:
    cut_agent_ssh(env, NAME)
    _container_reads(env, share, "after-cut.txt", "after the cut\n")
    _until_written(share)
    wait_mounted(env, NAME, share)
    running = env.docker("inspect", "-f", "{{.State.Running}}", CONTAINER).stdout.strip()
    assert running == "true"


def test_a_running_containers_bind_survives_suspend_and_resume(env: PydEnv, share: Path) -> None:
    before = _count(share)
    env.pyd("suspend", "-n", NAME)
    env.pyd("start", "-n", NAME)
    began = time.monotonic()
    _container_reads(env, share, "after-resume.txt", "after the resume\n")
    after = _until_written(share)
    print(f"the container's bind reads and writes the share {time.monotonic() - began:.1f} s "
          "after pyd start returned")  # fmt: skip
    assert after > before
    wait_mounted(env, NAME, share)


def test_only_root_in_the_guest_reaches_the_shares_socket(env: PydEnv, share: Path) -> None:
    """Whoever connects to a share's socket reads and writes the share: in the guest it is
    root's only (a container sees neither it nor its directory)."""
    sock = guest_socket(str(share))
    as_nobody = (
        f"setpriv --reuid=65534 --regid=65534 --clear-groups socat -u OPEN:/dev/null "
        f"UNIX-CONNECT:{sock} 2>&1; echo status=$?"
    )
    r = env.pyd("ssh", "-n", NAME, "--", f"ls -l {sock}; {as_nobody}")
    print(r.stdout)
    assert r.stdout.startswith("srw-------") and " root root " in r.stdout
    assert "Permission denied" in r.stdout and "status=0" not in r.stdout
    seen = env.docker("run", "--rm", IMAGE, "ls", "/run/pyd", check=False)
    assert seen.returncode != 0
