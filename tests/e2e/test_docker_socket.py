"""The Docker socket forward against a real guest: a streamlocal channel to dockerd, then the
host's own docker CLI through UnixSocketForward (version, a build, stdin with half-close, and
connections in parallel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest

from pyd.relay.unix_socket import UnixSocketForward
from pyd.ssh.streamlocal import StreamLocalError, open_streamlocal
from pyd.vm.throwaway import check, run
from pyd.vm.throwaway_qemu import DirectVM
from tests.e2e.guestvm import build_busybox_image

DOCKER_SOCK = "/var/run/docker.sock"
IMAGE = "pyd-test/busybox-socket"  # its own tag: other tests build pyd-test/busybox in the guest


@pytest.fixture(scope="module")
def docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        pytest.fail("the docker CLI is not installed on the host (Debian: docker.io or docker-cli)")
    return path


@pytest.fixture(scope="module")
def forward(
    guest: tuple[DirectVM, paramiko.SSHClient], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UnixSocketForward]:
    transport = guest[1].get_transport()
    path = tmp_path_factory.mktemp("fwd") / "run" / "docker.sock"
    with UnixSocketForward(path, lambda: open_streamlocal(transport, DOCKER_SOCK)) as fwd:
        yield fwd


def docker(
    cli: str, fwd: UnixSocketForward, *args: str, stdin: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_BUILDKIT"] = "0"  # the host has no buildx: the legacy builder
    return subprocess.run(
        [cli, "-H", fwd.endpoint, *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ok(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.returncode == 0, (r.args, r.stderr.decode(errors="replace")[-2000:])
    return r.stdout.decode()


def test_streamlocal_channel_reaches_dockerd(ssh: paramiko.SSHClient) -> None:
    chan = open_streamlocal(ssh.get_transport(), DOCKER_SOCK)
    try:
        chan.settimeout(60)
        chan.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        reply = b""
        while data := chan.recv(65536):
            reply += data
    finally:
        chan.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"OK"


def test_streamlocal_to_a_missing_socket_is_a_clear_error(ssh: paramiko.SSHClient) -> None:
    with pytest.raises(StreamLocalError, match=r"/run/no-such\.sock") as e:
        open_streamlocal(ssh.get_transport(), "/run/no-such.sock")
    assert e.value.path == "/run/no-such.sock"


def test_host_docker_cli_through_the_forward(
    docker_cli: str, forward: UnixSocketForward, ssh: paramiko.SSHClient
) -> None:
    version = ok(docker(docker_cli, forward, "version", "--format", "{{.Server.Version}}"))
    in_guest = check(ssh, "docker version --format '{{.Server.Version}}'")
    assert version.strip() == in_guest.strip() != ""


def test_build_then_stdin_reaches_the_container_and_ends_it(
    docker_cli: str, forward: UnixSocketForward, busybox_static: Path, tmp_path: Path
) -> None:
    shutil.copy(busybox_static, tmp_path / "busybox")
    (tmp_path / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    ok(docker(docker_cli, forward, "build", "-q", "-t", IMAGE, str(tmp_path)))
    # `cat` only exits when its stdin ends: the CLI's half-close has to cross the forward
    # and the SSH channel, and the output after it has to come back.
    r = docker(docker_cli, forward, "run", "--rm", "-i", IMAGE, "cat", stdin=b"hello\n")
    assert ok(r) == "hello\n"


def test_parallel_clients(docker_cli: str, forward: UnixSocketForward) -> None:
    def version(_: int) -> subprocess.CompletedProcess[bytes]:
        return docker(docker_cli, forward, "version", "--format", "{{.Server.Version}}")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(version, range(20)))
    outputs = {ok(r).strip() for r in results}
    assert len(outputs) == 1 and outputs != {""}
    deadline = time.monotonic() + 10  # every relay ends once its client has gone
    while forward.live_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert forward.live_connections() == 0


def test_containers_get_only_the_log_options_they_ask_for(
    docker_cli: str, forward: UnixSocketForward, ssh: paramiko.SSHClient, busybox_static: Path
) -> None:
    """As in Docker Desktop and a plain Linux engine: json-file logs with no daemon-wide
    options, so the engine API's container inspect shows what the client asked for."""
    build_busybox_image(ssh, busybox_static, IMAGE)
    asked = {
        "pyd-log-default": [],
        "pyd-log-max-file": ["--log-driver", "json-file", "--log-opt", "max-file=100"],
    }
    try:
        for name, options in asked.items():
            ok(docker(docker_cli, forward, "create", "--name", name, *options, IMAGE, "true"))
        got = [
            ok(docker(docker_cli, forward, "inspect", "-f", "{{json .HostConfig.LogConfig}}", n))
            for n in asked
        ]
    finally:
        docker(docker_cli, forward, "rm", "-f", *asked)
    assert [g.strip() for g in got] == [
        '{"Type":"json-file","Config":{}}',
        '{"Type":"json-file","Config":{"max-file":"100"}}',
    ]


def test_mounts_propagate_through_rshared_binds(
    ssh: paramiko.SSHClient, busybox_static: Path
) -> None:
    """The guest's mounts are shared as on a systemd host: `-v SRC:DST:rshared` starts, and
    mounts propagate both ways, as kind and other Kubernetes-in-Docker setups need."""
    build_busybox_image(ssh, busybox_static, IMAGE)
    propagation = "for m in / /tmp; do findmnt -n -o PROPAGATION --mountpoint $m; done"
    assert check(ssh, propagation).split() == ["shared", "shared"]
    src = "/tmp/pyd-rshared"
    check(ssh, f"mkdir -p {src}/in {src}/out")
    try:
        check(ssh, f"docker run -d --name pyd-rshared -v {src}:/prop:rshared {IMAGE} sleep 600")
        check(ssh, f"mount -t tmpfs guest {src}/in && echo from-guest > {src}/in/f")
        assert check(ssh, "docker exec pyd-rshared cat /prop/in/f").strip() == "from-guest"
        # A privileged container mounts, as a kind node does; the guest, and the first
        # container, see it.
        check(
            ssh,
            f"docker run --rm --privileged -v {src}:/prop:rshared {IMAGE} "
            "sh -c 'mount -t tmpfs container /prop/out && echo from-container > /prop/out/f'",
        )
        assert check(ssh, f"cat {src}/out/f").strip() == "from-container"
        assert check(ssh, "docker exec pyd-rshared cat /prop/out/f").strip() == "from-container"
    finally:
        run(ssh, f"docker rm -f pyd-rshared; umount {src}/in {src}/out; rm -rf {src}")
