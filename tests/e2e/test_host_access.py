"""network.host_access against a real guest (libvirt + QEMU under TCG): by default a container
reaches a server on this machine's 127.0.0.1 at QEMU's gateway 10.0.2.2, as Docker Desktop's
host.docker.internal does; switched off with `pyd config set`, after the next start no
container reaches it, root or on the host network, while DNS at 10.0.2.3 still answers. One
instance for the module: it starts once with the default and once with the switch off."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image

NAME = "hostaccess"
IMAGE = "pyd-e2e-hostaccess-busybox"
GATEWAY = "10.0.2.2"  # QEMU's user network: this machine's loopback, seen from the guest


class LoopbackServer:
    """A TCP server on this machine's 127.0.0.1 that answers every connection with one HTTP
    reply, and counts the connections it accepted: a refused wget could hide a connection
    that got through, the count cannot."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        body = self.token.encode()
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(10)
                try:
                    conn.recv(4096)
                    conn.sendall(
                        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture(scope="module")
def env(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PydEnv]:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    try:
        e.pyd("start", "-n", NAME, "--memory", "1GiB", "--disk", "4GiB")
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer()
    try:
        yield s
    finally:
        s.close()


def _wget(env: PydEnv, *run_args: str, url: str) -> tuple[int, str]:
    r = env.docker(
        "run", "--rm", *run_args, IMAGE, "timeout", "10", "wget", "-q", "-O", "-", url, check=False
    )
    return r.returncode, r.stdout + r.stderr


def test_by_default_a_container_reaches_the_hosts_loopback(
    env: PydEnv, server: LoopbackServer
) -> None:
    code, out = _wget(env, url=f"http://{GATEWAY}:{server.port}/")
    assert (code, out.strip()) == (0, server.token)
    assert server.accepted == 1


def test_host_access_off_cuts_the_hosts_loopback_at_the_next_start(
    env: PydEnv, server: LoopbackServer, tmp_path: Path
) -> None:
    r = env.pyd("config", "set", "-n", NAME, "network.host_access", "false")
    assert "applies at the next start" in r.stderr
    config = env.home / "instances" / NAME / "config.toml"
    assert "[network]\nhost_access = false" in config.read_text()
    env.pyd("stop", "-n", NAME)
    env.pyd("start", "-n", NAME)

    url = f"http://{GATEWAY}:{server.port}/"
    # Root in ordinary containers, on a bridge and on the guest's own network, and the
    # guest itself: nothing reaches the host's loopback, not even the TCP handshake.
    for run_args in ((), ("--network", "host")):
        code, out = _wget(env, *run_args, url=url)
        assert code != 0 and server.token not in out, (run_args, out)
    guest = env.pyd("ssh", "-n", NAME, "--", f"timeout 10 busybox wget -q -O - {url}", check=False)
    assert guest.returncode != 0 and server.token not in guest.stdout
    assert server.accepted == 0

    # The rule is specific to the host: DNS at 10.0.2.3 still answers (NXDOMAIN is an
    # answer; a dropped query would time out), and Docker still works.
    r = env.docker(
        "run", "--rm", IMAGE, "nslookup", f"pyd-{uuid.uuid4().hex[:8]}.invalid", "10.0.2.3",
        check=False,
    )  # fmt: skip
    assert "NXDOMAIN" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "timed out" not in r.stdout + r.stderr


def test_a_root_container_cannot_lift_the_rules(env: PydEnv) -> None:
    """The rules live in the guest's network namespace; Docker's default capabilities have
    no CAP_NET_ADMIN there, so not even root on the host network may change them."""
    r = env.docker(
        "run", "--rm", "--network", "host", IMAGE, "sh", "-c",
        "ip addr add 192.0.2.77/32 dev lo; echo code=$?",
        check=False,
    )  # fmt: skip
    assert "code=0" not in r.stdout, r.stdout
    rules = env.pyd("ssh", "-n", NAME, "--", "nft list table netdev pyd_host_access").stdout
    assert "hook egress" in rules and "policy drop" in rules
