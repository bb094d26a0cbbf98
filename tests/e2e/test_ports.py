"""Published container ports reach the host by themselves, over the agent's SSH connection
(QEMU under TCG, the host's docker CLI). One instance for the module under each backend:
libvirt, and direct QEMU started the Windows way (backend_param.py)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyd.host.loopback import free_loopback_port
from pyd.image.cache import CachedImage
from tests.e2e.backend_param import BACKENDS, backend_env
from tests.e2e.pydcli import PydEnv, build_busybox_image, cut_agent_ssh, fetch

NAME = "ports"
IMAGE = "pyd-e2e-ports-busybox"


@pytest.fixture(scope="module", params=BACKENDS)
def env(
    request: pytest.FixtureRequest, image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PydEnv]:
    # The same name under both backends: each has its own PYD_HOME, and direct QEMU makes
    # no libvirt domain.
    home, config = tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config")
    e = backend_env(request.param, home, config, NAME)
    try:
        e.pyd("start", "-n", NAME)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _httpd(env: PydEnv, *publish: str) -> str:
    """A container serving /www/blob (1 MiB of random bytes) and /www/id on port 80."""
    name = f"web-{uuid.uuid4().hex[:8]}"
    env.docker(
        "run", "-d", "--name", name, *publish, IMAGE, "sh", "-c",
        "mkdir /www && head -c 1048576 /dev/urandom > /www/blob && "
        f"echo {name} > /www/id && exec httpd -f -p 80 -h /www",
    )  # fmt: skip
    return name


def _guest_sha(env: PydEnv, container: str) -> str:
    out = env.docker("exec", container, "sha256sum", "/www/blob").stdout
    return out.split()[0]


def _ports(env: PydEnv) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(env.pyd("port", "ls", "-n", NAME, "--json").stdout)
    return data


def _listening(port: int) -> list[str]:
    """Host addresses (hex, as /proc shows them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def _closed(port: int, host: str = "127.0.0.1", wait: float = 5) -> bool:
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_published_port_serves_the_containers_file(env: PydEnv) -> None:
    port = free_loopback_port()
    web = _httpd(env, "-p", f"{port}:80")
    body = fetch(f"http://127.0.0.1:{port}/blob")
    assert hashlib.sha256(body).hexdigest() == _guest_sha(env, web)
    assert fetch(f"http://[::1]:{port}/id").decode().strip() == web  # IPv6 loopback too
    assert "00000000" in _listening(port)  # 0.0.0.0, as Docker on Linux binds it
    env.docker("rm", "-f", web)
    assert _closed(port), "the listener outlived its container"


def test_random_ports_and_ranges(env: PydEnv) -> None:
    web = _httpd(env, "-P", "--expose", "80")
    host_port = int(env.docker("port", web, "80/tcp").stdout.splitlines()[0].rsplit(":", 1)[1])
    assert fetch(f"http://127.0.0.1:{host_port}/id").decode().strip() == web
    base = free_loopback_port()
    ranged = _httpd(env, "-p", f"{base}-{base + 1}:80-81")
    assert fetch(f"http://127.0.0.1:{base}/id").decode().strip() == ranged
    assert _listening(base + 1), "the second port of the range is not forwarded"
    env.docker("rm", "-f", web, ranged)


def test_loopback_only_binding_stays_on_loopback(env: PydEnv) -> None:
    port = free_loopback_port()
    web = _httpd(env, "-p", f"127.0.0.1:{port}:80")
    assert fetch(f"http://127.0.0.1:{port}/id").decode().strip() == web
    assert _listening(port) == ["0100007F"]
    env.docker("rm", "-f", web)


def test_a_taken_port_is_reported_and_the_others_carry_on(env: PydEnv) -> None:
    taken, free = free_loopback_port(), free_loopback_port()
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", taken))
        squatter.listen()
        blocked = _httpd(env, "-p", f"{taken}:80")
        fine = _httpd(env, "-p", f"{free}:80")
        assert fetch(f"http://127.0.0.1:{free}/id").decode().strip() == fine
        rows = {p["host"]: p for p in _ports(env) if p["host"].endswith(f":{taken}")}
        v4 = rows[f"0.0.0.0:{taken}"]  # the squatter holds IPv4 only; [::] still listens
        assert v4["state"] == "failed" and f"pid {os.getpid()}" in v4["detail"], rows
    env.docker("rm", "-f", blocked, fine)


def test_udp_bindings_are_listed_as_listening(env: PydEnv) -> None:
    # What they carry is tests/e2e/test_udp_ports.py's.
    port = free_loopback_port()
    web = _httpd(env, "-p", f"{port}:53/udp")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = [p for p in _ports(env) if p["proto"] == "udp" and p["host"].endswith(f":{port}")]
        if rows:
            break
        time.sleep(0.2)
    assert rows and {r["state"] for r in rows} == {"listening"}, rows
    env.docker("rm", "-f", web)


def test_forwards_come_back_after_the_ssh_connection_is_cut(env: PydEnv) -> None:
    port = free_loopback_port()
    web = _httpd(env, "-p", f"{port}:80")
    assert fetch(f"http://127.0.0.1:{port}/id").decode().strip() == web
    cut_agent_ssh(env, NAME)
    assert fetch(f"http://127.0.0.1:{port}/id", deadline=30).decode().strip() == web
    env.docker("rm", "-f", web)


def test_manual_forward_add_ls_rm(env: PydEnv) -> None:
    guest_port, host_port = 7777, free_loopback_port()
    serve = f"busybox httpd -p 127.0.0.1:{guest_port} -h /tmp/m"
    env.pyd("ssh", "-n", NAME, "--", f"mkdir -p /tmp/m && echo manual > /tmp/m/id && {serve}")
    env.pyd("port", "add", f"{host_port}:{guest_port}", "-n", NAME)
    assert fetch(f"http://127.0.0.1:{host_port}/id").decode().strip() == "manual"
    rows = [p for p in _ports(env) if p["origin"] == "manual"]
    assert [(p["host"], p["state"]) for p in rows] == [(f"127.0.0.1:{host_port}", "listening")]
    assert f"127.0.0.1:{host_port}:{guest_port}" in env.pyd("config", "show", "-n", NAME).stdout
    env.pyd("port", "rm", str(host_port), "-n", NAME)
    assert _closed(host_port)
