"""The host's resolver in the guest and host.docker.internal (issue 19) against a real guest
(libvirt + QEMU under TCG). One instance for the module, its own PYD_HOME.

A name only this machine's /etc/hosts holds resolves in containers (the test adds it and
restores the file); a name this machine cannot resolve fails at once; ordinary names and
other record types still answer; host.docker.internal reaches a server on this machine's
127.0.0.1 from the default bridge, a `docker network create` network and a compose project;
network.host_dns = false hands everything to QEMU's DNS, at once."""

from __future__ import annotations

import contextlib
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, busybox_instance
from tests.e2e.test_host_access import LoopbackServer

NAME = "hostdns"
IMAGE = "pyd-e2e-hostdns-busybox"
NETWORK = "pyd-e2e-hostdns-net"
HOSTS = Path("/etc/hosts")
ONLY_ON_HOST = "192.0.2.55"  # TEST-NET-1: never a real host's


@pytest.fixture(scope="module")
def env(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PydEnv]:
    with busybox_instance(tmp_path_factory, NAME, IMAGE, "--memory", "1GiB", "--disk", "4GiB") as e:
        e.docker("network", "create", NETWORK)
        yield e


@contextlib.contextmanager
def host_name(address: str) -> Iterator[str]:
    """A fresh name in this machine's /etc/hosts only, removed after (the file restored)."""
    name = f"pyd-e2e-{uuid.uuid4().hex[:8]}.test"
    before = HOSTS.read_bytes()
    try:
        HOSTS.write_bytes(before + f"\n{address}\t{name}\n".encode())
        yield name
    finally:
        HOSTS.write_bytes(before)


def in_container(env: PydEnv, script: str, *run_args: str) -> tuple[int, str]:
    r = env.docker("run", "--rm", *run_args, IMAGE, "sh", "-c", script, check=False)
    return r.returncode, r.stdout + r.stderr


def timed_lookup(env: PydEnv, name: str, *run_args: str, qtype: str = "") -> tuple[float, str]:
    """busybox nslookup of `name` in a container (the container's resolv.conf), timed inside
    it: seconds, and what it printed."""
    option = f"-type={qtype} " if qtype else ""
    script = (
        "read a _ < /proc/uptime; "
        f"out=$(nslookup {option}{shlex.quote(name)} 2>&1); "
        'read b _ < /proc/uptime; echo "$out"; echo took $a $b'
    )
    _code, out = in_container(env, script, *run_args)
    took = out.rsplit("took ", 1)[1].split()
    return float(took[1]) - float(took[0]), out


def test_a_name_only_in_this_hosts_hosts_file_resolves_in_containers(env: PydEnv) -> None:
    with host_name(ONLY_ON_HOST) as name:
        for network in ((), ("--network", NETWORK)):
            _code, out = in_container(env, f"nslookup {name}", *network)
            assert f"Address: {ONLY_ON_HOST}" in out, (network, out)
        # The guest's own programs too (its resolv.conf names the relay).
        guest = env.pyd("ssh", "-n", NAME, "--", f"getent hosts {name}", check=False)
        assert ONLY_ON_HOST in guest.stdout, guest.stderr
        # QEMU's DNS does not know it: the answer came from this machine's resolver.
        _code, out = in_container(env, f"nslookup {name} 10.0.2.3")
        assert ONLY_ON_HOST not in out


def test_a_name_this_host_cannot_resolve_fails_at_once(env: PydEnv) -> None:
    name = f"pyd-e2e-{uuid.uuid4().hex[:8]}.invalid"
    for network in ((), ("--network", NETWORK)):
        took, out = timed_lookup(env, name, *network)
        assert "NXDOMAIN" in out or "can't find" in out, out
        assert took < 1.0, (network, took, out)


def test_ordinary_names_and_other_record_types_still_answer(env: PydEnv) -> None:
    # localhost is in every hosts file; ask it through DNS (busybox nslookup asks the server).
    _took, out = timed_lookup(env, "localhost")
    assert "Address: 127.0.0.1" in out, out
    # MX goes to QEMU's DNS: an answer (whatever this machine's servers say), not a timeout.
    took, out = timed_lookup(env, "localhost", qtype="mx")
    assert "timed out" not in out and took < 3.0, (took, out)


def test_host_docker_internal_reaches_this_hosts_loopback(env: PydEnv) -> None:
    server = LoopbackServer()
    try:
        url = f"http://host.docker.internal:{server.port}/"
        fetch = f"timeout 20 wget -q -O - {url}; exit $?"
        for network in ((), ("--network", NETWORK)):
            code, out = in_container(env, fetch, *network)
            assert code == 0 and server.token in out, (network, out)
        _code, out = in_container(env, "nslookup gateway.docker.internal")
        assert "Address: 10.0.2.2" in out, out
        compose = (
            "services:\n"
            "  probe:\n"
            f"    image: {IMAGE}\n"
            f'    command: ["sh", "-c", "wget -q -O - {url}"]\n'
        )
        script = (
            "mkdir -p /tmp/pyd-e2e-compose && cd /tmp/pyd-e2e-compose && "
            f"printf %s {shlex.quote(compose)} > compose.yaml && "
            "docker compose -p pydhostdns run --rm probe; s=$?; "
            "docker compose -p pydhostdns down >/dev/null 2>&1; exit $s"
        )
        r = env.pyd("ssh", "-n", NAME, "--", script, check=False)
        assert r.returncode == 0 and server.token in r.stdout, r.stdout + r.stderr
        assert server.accepted >= 3
    finally:
        server.close()


def _resolves_within(env: PydEnv, name: str, want: bool, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        _code, out = in_container(env, f"nslookup {name}")
        if (f"Address: {ONLY_ON_HOST}" in out) == want:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def test_host_dns_off_hands_every_query_to_qemus_dns_at_once(env: PydEnv) -> None:
    with host_name(ONLY_ON_HOST) as name:
        try:
            env.pyd("config", "set", "-n", NAME, "network.host_dns", "false")
            assert _resolves_within(env, name, False, 10)
            _code, out = in_container(env, "nslookup host.docker.internal")
            assert "Address: 10.0.2.2" in out, out  # the relay's own, either way
        finally:
            env.pyd("config", "set", "-n", NAME, "network.host_dns", "true")
        assert _resolves_within(env, name, True, 10)


def test_dns_goes_on_through_qemus_dns_while_the_agents_link_is_down(env: PydEnv) -> None:
    """The agent's SSH sessions killed in the guest (a laptop's sleep, as the guest sees it):
    the relay sees its channel end and asks QEMU's DNS at once (a host-only name is then
    NXDOMAIN, with no wait); once the agent is back, the host's resolver answers again."""
    with host_name(ONLY_ON_HOST) as name:
        assert _resolves_within(env, name, True, 10)
        # sshd's listener held stopped meanwhile: the agent reconnects in about 0.5 s under
        # TCG, and a link already back would answer through the host's resolver again.
        kill_others = (
            "pkill -STOP -x sshd; trap 'pkill -CONT -x sshd' EXIT; "
            'me=$(cut -d" " -f4 /proc/$PPID/stat); '
            'for p in $(pgrep -f "[s]shd-session: root .priv."); do [ "$p" = "$me" ] || '
            "kill $p; done; sleep 0.5; "
        )
        lookup = (
            "read a _ < /proc/uptime; "
            f"out=$(busybox nslookup {name} 2>&1); "
            'read b _ < /proc/uptime; echo "$out"; echo took $a $b'
        )
        r = env.pyd("ssh", "-n", NAME, "--", kill_others + lookup, check=False)
        took = r.stdout.rsplit("took ", 1)[1].split()
        assert ONLY_ON_HOST not in r.stdout, r.stdout
        assert float(took[1]) - float(took[0]) < 1.0, r.stdout
        assert _resolves_within(env, name, True, 60)
