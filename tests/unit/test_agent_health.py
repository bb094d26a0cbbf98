"""What the agent tells users and Docker clients while the engine is out of reach, and how
fast it lets go: the verdict from the VM's and the link's state, the HTTP answer a Docker
client gets instead of a hang, a thousand clients at once on the socket, and the container
watch closing at once under a blocked event stream."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest

from pyd.agent.health import verdict
from pyd.agent.status_file import AgentState
from pyd.errors import PydError
from pyd.host.threads import Deadline
from pyd.ports.container_watch import ContainerWatch
from pyd.relay.endpoint import make_docker_forward
from pyd.relay.http_refusal import refusal_response
from pyd.vm.backends.base import VMState
from tests.unit.fakeengine import engine
from tests.unit.in_threads import run_in_threads
from tests.unit.polling import until
from tests.unit.sshserver import AllowAnyone, SSHServer, client_without_auth

# -- the verdict ----------------------------------------------------------------------------


def test_a_live_link_is_ready_whatever_else() -> None:
    assert verdict(VMState.RUNNING, "") == verdict(None, "")  # None: cannot be told
    assert verdict(VMState.RUNNING, "").state == AgentState.READY
    assert verdict(VMState.RUNNING, "").docker == ""


def test_a_dead_link_says_why_and_that_it_reconnects() -> None:
    v = verdict(VMState.RUNNING, "no reply in 3.5 s")
    assert v.state == AgentState.RECONNECTING
    assert "no reply in 3.5 s" in v.error and "reconnecting" in v.error
    assert v.docker.startswith("pyd: the SSH link to the VM is down")
    assert "try again in a few seconds" in v.docker


def test_a_paused_vm_says_so_and_how_to_resume() -> None:
    v = verdict(VMState.PAUSED, "no reply")
    assert (v.state, v.error) == (AgentState.RECONNECTING, "the VM is paused")
    assert "pyd start" in v.hint and "pyd start" in v.docker


@pytest.mark.parametrize("vm", [VMState.STOPPED, VMState.ABSENT])
def test_a_vm_gone_is_a_failure_with_the_way_back(vm: VMState) -> None:
    v = verdict(vm, "the SSH connection to the VM closed")
    assert v.state == AgentState.FAILED
    assert "stopped unexpectedly" in v.error and "pyd start" in v.hint
    assert "stopped unexpectedly" in v.docker and "run `pyd start`" in v.docker


# -- the HTTP answer ------------------------------------------------------------------------


def http_reply(sock: socket.socket, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    sock.settimeout(5)
    sock.sendall(request)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {
        k.decode().lower(): v.decode().strip() for k, v in (ln.split(b":", 1) for ln in lines)
    }
    return status, headers, body


def test_refusal_is_an_engine_style_json_error() -> None:
    raw = refusal_response("pyd: down", b"GET /v1.50/containers/json HTTP/1.1\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert json.loads(body) == {"message": "pyd: down"}
    assert f"Content-Length: {len(body)}".encode() in head
    assert refusal_response("pyd: down", b"HEAD /_ping HTTP/1.1\r\n").endswith(b"\r\n\r\n")


def test_docker_clients_get_the_reason_at_once_when_no_channel_opens(tmp_path: Path) -> None:
    def down() -> paramiko.Channel:
        raise PydError("the SSH connection to the guest is down")

    fwd = make_docker_forward(
        "t", tmp_path / "docker.sock", down, "linux", lambda e: f"pyd: nope ({e})"
    )
    with fwd:
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(tmp_path / "docker.sock"))
            status, headers, body = http_reply(c, b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        assert time.monotonic() - t0 < 1
        assert status.startswith(b"HTTP/1.1 503")
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["message"] == "pyd: nope (the SSH connection to the guest is down)"
        with socket.socket(socket.AF_UNIX) as c:  # HEAD: the same status, no body
            c.connect(str(tmp_path / "docker.sock"))
            status, _, body = http_reply(c, b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 503") and body == b""


def test_a_thousand_clients_at_once_all_get_in(tmp_path: Path) -> None:
    """All connect before any is served: the listen backlog alone must hold them."""
    path = tmp_path / "docker.sock"
    go = threading.Event()

    def held() -> paramiko.Channel:
        go.wait(30)
        raise PydError("down")

    errors: list[BaseException] = []
    answers: list[bytes] = []
    with make_docker_forward("t", path, held, "linux", lambda e: "pyd: down"):
        clients = []
        for _ in range(1000):
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)  # EAGAIN, not a wait, when the backlog is full
            try:
                c.connect(str(path))
            except OSError as e:
                errors.append(e)
                c.close()
                continue
            c.setblocking(True)
            clients.append(c)
        go.set()

        def ask(c: socket.socket) -> None:
            try:
                answers.append(http_reply(c, b"GET /_ping HTTP/1.1\r\n\r\n")[0])
            except OSError as e:
                errors.append(e)
            finally:
                c.close()

        run_in_threads(ask, [(c,) for c in clients], timeout=30)
    assert errors == []
    assert len(answers) == 1000 and set(answers) == {b"HTTP/1.1 503 Service Unavailable"}


# -- the container watch --------------------------------------------------------------------


class _Engine(AllowAnyone):
    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        return paramiko.OPEN_SUCCEEDED


def test_container_watch_closes_at_once_under_a_blocked_event_stream() -> None:
    a, b = socket.socketpair()
    server = SSHServer(paramiko.Transport(b), _Engine(), engine)
    client = client_without_auth(a, server)
    lists: list[object] = []
    try:
        watch = ContainerWatch(
            lambda: client.open_channel("direct-tcpip", ("e", 1), ("h", 2), timeout=5),
            lists.append,
        )
        watch.start()
        until(lambda: lists, 5, what="the containers listed")
        assert lists == [[]]  # subscribed, listed, now blocking on the event stream:
        until(lambda: _reading_a_channel(watch._thread), 5, what="the watch blocked")
        t0 = time.monotonic()
        watch.close()
        assert watch.join(Deadline(0.5))
        assert time.monotonic() - t0 < 0.5
    finally:
        client.close()
        server.close()


def _reading_a_channel(thread: threading.Thread) -> bool:
    """`thread` waits in a paramiko channel's read (its stack, as the interpreter has it)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "read" and code.co_filename.endswith("buffered_pipe.py"):
            return True
        frame = frame.f_back
    return False
