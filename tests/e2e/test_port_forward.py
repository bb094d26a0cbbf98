"""A host TCP port forwarded to a port in a real guest: TcpPortForward over the guest's
OpenSSH sshd (direct-tcpip), an HTTP download checked end to end, and a clean close."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import paramiko
import pytest

from pyd.host.threads import Deadline
from pyd.ports.forwards import Forward
from pyd.ports.listener import TcpPortForward
from pyd.ssh.direct_tcpip import open_direct_tcpip
from pyd.vm.throwaway import check
from pyd.vm.throwaway_qemu import DirectVM
from tests.unit.listening import nobody_listens

GUEST_PORT = 18081  # busybox httpd, loopback only in the guest
GUEST_DIR = "/tmp/pyd-e2e-port-forward"
SIZE = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def ssh(guest: tuple[DirectVM, paramiko.SSHClient]) -> paramiko.SSHClient:
    """The shared guest's client, at module scope (the httpd fixture lives that long)."""
    return guest[1]


@pytest.fixture(scope="module")
def httpd(ssh: paramiko.SSHClient) -> Iterator[str]:
    """busybox httpd serving a 5 MiB file of random bytes on the guest's loopback only (so
    nothing but an SSH forward reaches it); yields the file's sha256."""
    out = check(
        ssh,
        f"mkdir -p {GUEST_DIR} && head -c {SIZE} /dev/urandom > {GUEST_DIR}/blob && "
        f"sha256sum {GUEST_DIR}/blob && "
        f"{{ busybox httpd -f -p 127.0.0.1:{GUEST_PORT} -h {GUEST_DIR} </dev/null >/dev/null "
        "2>&1 & echo $! > /tmp/pyd-e2e-httpd.pid; } && "
        f"i=0; until busybox netstat -ltn | grep -q '127.0.0.1:{GUEST_PORT} '; do "
        "i=$((i+1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done",
    )
    try:
        yield out.split()[0]
    finally:
        check(ssh, f"kill $(cat /tmp/pyd-e2e-httpd.pid); rm -rf {GUEST_DIR}")


def opener(ssh: paramiko.SSHClient) -> Callable[[Forward, tuple[str, int]], paramiko.Channel]:
    transport = ssh.get_transport()
    assert transport is not None

    def open_channel(f: Forward, origin: tuple[str, int]) -> paramiko.Channel:
        return open_direct_tcpip(transport, (f.guest_ip, f.guest_port), origin, timeout=60)

    return open_channel


def test_http_download_through_a_forwarded_port_arrives_intact(
    ssh: paramiko.SSHClient, httpd: str
) -> None:
    fwd = TcpPortForward(Forward("127.0.0.1", 0, GUEST_PORT, "tcp", "manual"), opener(ssh))
    fwd.start()
    try:
        host, port = fwd.address
        with urllib.request.urlopen(f"http://{host}:{port}/blob", timeout=120) as r:
            body = r.read()
        assert len(body) == SIZE
        assert hashlib.sha256(body).hexdigest() == httpd
    finally:
        fwd.close()
    # close() does not wait: the accept thread closes the listener on its way out.
    assert fwd.join(Deadline(10))
    assert nobody_listens((host, port))


def test_a_guest_port_nobody_listens_on_closes_the_client_connection(
    ssh: paramiko.SSHClient,
) -> None:
    with TcpPortForward(Forward("127.0.0.1", 0, 9, "tcp", "manual"), opener(ssh)) as fwd:
        host, port = fwd.address
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=120).read()
