"""Published UDP ports carry datagrams both ways (issue 19): a UDP echo server in a container
behind `-p H:C/udp`, reached from the host through the agent's SSH connection and the guest's
udp-relay (QEMU under TCG, the host's docker CLI)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyd.host.loopback import free_tcp_and_udp_port
from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image, build_static_tool_image, cut_agent_ssh

NAME = "udpports"
BASE = "pyd-e2e-udp-busybox"
IMAGE = "pyd-e2e-udpecho"
ECHO_PORT = 5000
# A datagram's first trip starts the relay in the guest (and docker-proxy's flow): seconds
# under emulation. Later ones take milliseconds.
FIRST_REPLY = 60.0


@pytest.fixture(scope="module")
def env(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PydEnv]:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    try:
        e.pyd("start", "-n", NAME)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), BASE)
        build_static_tool_image(e, tmp_path_factory.mktemp("udpecho"), "udpecho", BASE, IMAGE)
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _ports(env: PydEnv) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(env.pyd("port", "ls", "-n", NAME, "--json").stdout)
    return rows


def _udp_rows(env: PydEnv, port: int) -> list[dict[str, Any]]:
    return [p for p in _ports(env) if p["proto"] == "udp" and p["host"].endswith(f":{port}")]


def _echo(env: PydEnv, port: int) -> str:
    """A container echoing UDP (and TCP) on ECHO_PORT, published on the host's `port`; back
    once `pyd port ls` lists its UDP binding as listening."""
    name = f"udpecho-{os.urandom(4).hex()}"
    env.docker(
        "run", "-d", "--name", name, "-p", f"{port}:{ECHO_PORT}/udp", IMAGE,
        "udpecho", str(ECHO_PORT),
    )  # fmt: skip
    end = time.monotonic() + 30
    while not (rows := _udp_rows(env, port)) or any(r["state"] != "listening" for r in rows):
        assert time.monotonic() < end, f"the UDP binding is not listening: {rows}"
        time.sleep(0.2)
    return name


def _client(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


def _first_reply(client: socket.socket, address: tuple[str, int]) -> bytes:
    """Asks until answered: the first datagrams may go before the relay runs."""
    end = time.monotonic() + FIRST_REPLY
    client.settimeout(2)
    while True:
        client.sendto(b"hello", address)
        try:
            return client.recvfrom(100)[0]
        except TimeoutError:
            assert time.monotonic() < end, f"no reply from {address} in {FIRST_REPLY} s"


def _ask(client: socket.socket, address: tuple[str, int], data: bytes) -> bytes:
    client.settimeout(10)
    client.sendto(data, address)
    return client.recvfrom(70000)[0]


def test_datagrams_of_1_byte_to_60_kb_come_back_intact(env: PydEnv) -> None:
    port = free_tcp_and_udp_port()
    name = _echo(env, port)
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with _client(family) as c:
            assert _first_reply(c, (host, port)) == b"hello"
            for size in (1, 512, 1472, 9000, 32 * 1024, 60 * 1024):
                data = os.urandom(size)
                assert _ask(c, (host, port), data) == data, f"{size} bytes via {host}"
    env.docker("rm", "-f", name)


def test_two_clients_each_get_their_own_replies(env: PydEnv) -> None:
    port = free_tcp_and_udp_port()
    name = _echo(env, port)
    address = ("127.0.0.1", port)
    with _client() as a, _client() as b:
        _first_reply(a, address)
        _first_reply(b, address)
        for i in range(20):
            a.sendto(b"a%d" % i, address)
            b.sendto(b"b%d" % i, address)
            assert a.recvfrom(100)[0] == b"a%d" % i
            assert b.recvfrom(100)[0] == b"b%d" % i
    env.docker("rm", "-f", name)


def test_the_binding_goes_when_the_container_stops(env: PydEnv) -> None:
    port = free_tcp_and_udp_port()
    name = _echo(env, port)
    with _client() as c:
        _first_reply(c, ("127.0.0.1", port))
    env.docker("stop", "-t", "1", name)
    end = time.monotonic() + 30
    while _udp_rows(env, port):
        assert time.monotonic() < end, "the UDP binding outlived its container"
        time.sleep(0.2)
    with _client() as s:
        s.bind(("0.0.0.0", port))  # the host socket is gone too
    env.docker("rm", "-f", name)


def test_replies_come_back_after_the_ssh_connection_is_cut(env: PydEnv) -> None:
    port = free_tcp_and_udp_port()
    name = _echo(env, port)
    with _client() as c:
        _first_reply(c, ("127.0.0.1", port))
        cut_agent_ssh(env, NAME)  # the relay's channel ends with the connection
        assert _first_reply(c, ("127.0.0.1", port)) == b"hello"  # a new relay, same port
    env.docker("rm", "-f", name)


def test_a_manual_udp_forward_reaches_a_port_in_the_guest(env: PydEnv) -> None:
    """`pyd port add H:G/udp`: the host's port H to port G of the guest itself (here a
    host-network container's), applied by the running agent, and gone with `pyd port rm`."""
    port = free_tcp_and_udp_port()
    guest_port = ECHO_PORT + 1
    name = f"udphost-{os.urandom(4).hex()}"
    env.docker("run", "-d", "--name", name, "--network", "host", IMAGE, "udpecho", str(guest_port))
    spec = f"{port}:{guest_port}/udp"
    env.pyd("port", "add", spec, "-n", NAME)
    end = time.monotonic() + 30
    while [r["state"] for r in _udp_rows(env, port)] != ["listening"]:
        assert time.monotonic() < end, f"not listening: {_udp_rows(env, port)}"
        time.sleep(0.2)
    with _client() as c:
        assert _first_reply(c, ("127.0.0.1", port)) == b"hello"
        data = os.urandom(4000)
        assert _ask(c, ("127.0.0.1", port), data) == data
    env.pyd("port", "rm", spec, "-n", NAME)
    end = time.monotonic() + 30
    while _udp_rows(env, port):
        assert time.monotonic() < end, "the manual UDP forward outlived its removal"
        time.sleep(0.2)
    env.docker("rm", "-f", name)
