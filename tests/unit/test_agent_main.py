"""The agent's main loop in-process, against a stand-in guest (tests/unit/execserver.py with
a Docker engine stand-in on its Unix socket channels) behind a cuttable link
(tests/unit/linkproxy.py): what it publishes on the way to ready, how it stops on the event
the signal handler sets, what it says when it fails or crashes, and what Docker clients and
`pyd docker` are told while the link is down."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from pyd.agent import main as agent_main
from pyd.agent.disk_usage import DF_COMMAND
from pyd.agent.main import Agent
from pyd.agent.session import SSHSession
from pyd.agent.status_file import AgentState, read_status
from pyd.errors import PydError
from pyd.guestdocker.platforms import COMMAND as PLATFORMS_COMMAND
from pyd.instance.files import InstanceFiles
from pyd.instance.saved_state import RestoreMark, write_mark
from pyd.ssh.connect import SSHTarget
from pyd.ssh.heartbeat import Heartbeat
from pyd.ssh.keys import generate_keypair, write_private
from pyd.vm.backends.base import VMState
from tests.unit.execserver import ExecSSHServer
from tests.unit.fakeengine import engine
from tests.unit.linkproxy import LinkProxy
from tests.unit.polling import until
from tests.unit.sshserver import host_keypair

# Short beats: a dead link is noticed in half a second instead of five.
INTERVAL, TIMEOUT = 0.05, 0.4


def fast_heartbeat(transport: paramiko.Transport, on_dead: Callable[[str], None]) -> Heartbeat:
    return Heartbeat(transport, on_dead, interval=INTERVAL, timeout=TIMEOUT)


Beat = Callable[[paramiko.Transport, Callable[[str], None]], Heartbeat]


@dataclass
class Stand:
    """A guest, the link to it, and the agent's instance directory."""

    server: ExecSSHServer
    proxy: LinkProxy
    files: InstanceFiles
    key: Path
    vm: list[VMState | None]  # what the VM's backend says: vm[0]

    def session(self, port: int | None = None, heartbeat: Beat = fast_heartbeat) -> SSHSession:
        target = SSHTarget(
            "127.0.0.1",
            self.proxy.port if port is None else port,
            "root",
            self.key,
            host_keypair().public_openssh,
        )
        return SSHSession(target, heartbeat=heartbeat)

    def agent(self, port: int | None = None, heartbeat: Beat = fast_heartbeat) -> Agent:
        session = self.session(port, heartbeat)
        return Agent(self.files, "t", "launch-1", lambda: self.vm[0], session)

    def status(self) -> str:
        status = read_status(self.files.agent_status)
        return status.state if status is not None else ""


@pytest.fixture
def stand(tmp_path: Path) -> Iterator[Stand]:
    with _stand(tmp_path, engine) as made:
        yield made


@contextlib.contextmanager
def _stand(tmp_path: Path, guest_engine: Callable[[paramiko.Channel], None]) -> Iterator[Stand]:
    server = ExecSSHServer(unix_socket=guest_engine)
    proxy = LinkProxy(server.port)
    root = tmp_path / "i"
    (root / "ssh").mkdir(parents=True)
    key = root / "ssh" / "id_ed25519"
    write_private(key, generate_keypair("test").private_openssh)
    # No shares (the defaults would share the home directory) and no manual forwards.
    (root / "config.toml").write_text('mounts = []\n[ports]\nbind = "localhost"\n')
    try:
        yield Stand(server, proxy, InstanceFiles(root), key, [VMState.RUNNING])
    finally:
        proxy.close()
        server.close()


class Running:
    """`agent.run()` in a thread, as main() runs it in the main thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.agent.run()
        except BaseException as e:
            self.error = e

    def ended(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@pytest.fixture
def running(stand: Stand) -> Iterator[Running]:
    r = Running(stand.agent())
    until(lambda: stand.status() == AgentState.READY, 10, what="the agent ready")
    yield r
    r.agent.request_stop()
    assert r.ended(10)


def agent_threads() -> list[str]:
    return sorted(
        t.name for t in threading.enumerate() if t.name.startswith(("pyd-", "disk-usage"))
    )


def http_get(path: Path, request: bytes = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n") -> bytes:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(10)
        c.connect(str(path))
        c.sendall(request)
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


# -- ready, then stopped ------------------------------------------------------------------


def test_the_agent_publishes_its_phases_and_serves_docker_when_ready(
    stand: Stand, running: Running
) -> None:
    status = read_status(stand.files.agent_status)
    assert status is not None
    assert (status.state, status.vm, status.launch) == (AgentState.READY, "running", "launch-1")
    assert [p.name for p in status.phases] == ["ssh", "engine", "shares"]
    assert status.docker_host == f"unix://{stand.files.docker_sock}"
    reply = http_get(stand.files.docker_sock)
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"OK")


def test_the_questions_for_status_alone_wait_until_the_first_docker_command_had_the_guest(
    stand: Stand, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Platforms and disk use each start a process in the guest: not in the moments after
    ready, when the user's first docker command reaches a guest busy after its resume."""
    monkeypatch.setattr(agent_main, "STATUS_ASKS_AFTER", 1.0)
    monkeypatch.setattr(agent_main, "DISK_EVERY", 2.0)  # asked again soon if the link blinked
    asks = (PLATFORMS_COMMAND.encode(), DF_COMMAND.encode())
    r = Running(stand.agent(heartbeat=Heartbeat))  # the real beat: no blinks on a busy host
    try:
        until(lambda: stand.status() == AgentState.READY, 10, what="the agent ready")
        ready = time.monotonic()
        until(lambda: all(c in stand.server.commands for c in asks), 10, what="both asked")

        assert time.monotonic() - ready >= 0.9
    finally:
        r.agent.request_stop()
        assert r.ended(10)


def test_the_stop_event_ends_the_agent_with_stopped_and_no_threads_left(
    stand: Stand, caplog: pytest.LogCaptureFixture
) -> None:
    before = agent_threads()
    r = Running(stand.agent())
    until(lambda: stand.status() == AgentState.READY, 10, what="the agent ready")
    caplog.clear()
    caplog.set_level(logging.INFO, "pyd.agent")
    t0 = time.monotonic()
    r.agent.request_stop()  # what the SIGTERM handler does, and all it does
    assert r.ended(5)
    assert time.monotonic() - t0 < 2
    said = [rec.getMessage() for rec in caplog.records if rec.name == "pyd.agent"]
    assert said[0] == "stopping on request" and said[-1].startswith("closed in ")
    assert len(said) == 2, said  # nothing judged of a link closed on purpose
    assert (r.code, r.error) == (0, None)
    assert stand.status() == AgentState.STOPPED
    assert not stand.files.docker_sock.exists() and not stand.files.exec_sock.exists()
    assert until(lambda: agent_threads() == before, 2, what="the agent's threads ended")


def test_a_stop_while_the_guest_boots_ends_the_wait(stand: Stand) -> None:
    """A guest whose SSH never answers (a hung boot): the stop does not wait for the boot's
    timeout, and says stopped, not failed."""
    before = agent_threads()
    stand.proxy.cut(hold=True)
    r = Running(stand.agent())
    until(lambda: read_status(stand.files.agent_status), 5, what="a first status")
    r.agent.request_stop()
    until(lambda: stand.status() == AgentState.STOPPED, 1, what="stopped said at once")
    assert r.ended(agent_main.CLOSE_WAIT + 1)
    assert r.code == 0
    assert agent_threads() == before  # the boot's wait ended, not left behind


def test_an_exec_endpoint_someone_else_holds_is_a_warning_in_the_status(
    stand: Stand, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows: another process serves the exec pipe's name. Docker works and `pyd docker`
    goes over SSH; status says why instead of the agent's log alone."""

    class Taken:
        def __init__(self, *args: object) -> None:
            pass

        def start(self) -> None:
            raise PydError(r"something already serves \\.\pipe\pyd-t.exec")

        def close(self) -> None:
            pass

        def join(self, deadline: object) -> bool:
            return True

    monkeypatch.setattr(agent_main, "exec_server", Taken)
    r = Running(stand.agent())
    try:
        until(lambda: stand.status() == AgentState.READY, 10, what="the agent ready")
        status = read_status(stand.files.agent_status)
        assert status is not None and status.warnings == (
            r"pyd docker connects to the VM by itself: something already serves "
            r"\\.\pipe\pyd-t.exec",
        )
    finally:
        r.agent.request_stop()
        assert r.ended(10)


def test_nothing_overwrites_the_last_word(stand: Stand, running: Running) -> None:
    running.agent.request_stop()
    assert running.ended(5)
    running.agent._publish(lambda s: s.to(AgentState.READY))  # a part reporting late, while closing
    assert stand.status() == AgentState.STOPPED


# -- failed, crashed ----------------------------------------------------------------------


def test_a_vm_gone_while_booting_fails_with_the_reason(stand: Stand) -> None:
    stand.proxy.cut(hold=True)
    stand.vm[0] = VMState.STOPPED
    r = Running(stand.agent())
    assert r.ended(5)
    assert r.code == 1
    status = read_status(stand.files.agent_status)
    assert status is not None and status.state == AgentState.FAILED
    assert "the VM stopped while the agent waited" in status.error


def test_a_bug_in_the_agent_is_raised_and_leaves_no_last_word(stand: Stand) -> None:
    """The keeper restarts an agent that died without saying why: a traceback, and neither
    stopped nor failed in agent.json."""

    def broken() -> VMState:
        raise RuntimeError("a bug")

    stand.proxy.cut(hold=True)
    r = Running(Agent(stand.files, "t", "launch-1", broken, stand.session()))
    assert r.ended(5)
    assert isinstance(r.error, RuntimeError)
    assert stand.status() not in (AgentState.STOPPED, AgentState.FAILED)


# -- the link down ------------------------------------------------------------------------


def test_while_the_link_is_down_docker_clients_are_told_why_at_once(
    stand: Stand, running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand.proxy.cut()
    until(lambda: stand.status() == AgentState.RECONNECTING, 5, what="reconnecting published")
    status = read_status(stand.files.agent_status)
    assert status is not None and status.link_down_since > 0
    assert "the SSH link to the VM is down" in status.error
    until(lambda: running.agent.session.down_for() > agent_main.DOCKER_GRACE, 5)
    t0 = time.monotonic()
    reply = http_get(stand.files.docker_sock)
    assert time.monotonic() - t0 < 1
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert "the SSH link to the VM is down" in json.loads(body)["message"]
    with pytest.raises(PydError, match="the SSH link to the VM is down"):
        running.agent._exec_transport()  # `pyd docker` through the exec socket

    stand.proxy.restore()
    until(lambda: stand.status() == AgentState.READY, 5, what="ready again")
    status = read_status(stand.files.agent_status)
    assert status is not None and (status.error, status.link_down_since) == ("", 0.0)
    assert http_get(stand.files.docker_sock).startswith(b"HTTP/1.0 200")


def test_a_vm_gone_under_a_ready_agent_is_failed_until_stopped(
    stand: Stand, running: Running
) -> None:
    stand.vm[0] = VMState.STOPPED
    stand.proxy.cut()
    until(lambda: stand.status() == AgentState.FAILED, 5, what="failed published")
    reply = http_get(stand.files.docker_sock)
    assert b"the VM stopped unexpectedly" in reply
    assert running.thread.is_alive()  # it stays, saying so, until `pyd start` or `pyd stop`


def test_a_paused_vm_is_published_as_such_and_its_resume_as_ready(
    stand: Stand, running: Running
) -> None:
    stand.vm[0] = VMState.PAUSED
    stand.proxy.cut(hold=True)  # a paused guest's port accepts and never answers
    until(lambda: stand.status() == AgentState.RECONNECTING, 5, what="reconnecting published")
    status = read_status(stand.files.agent_status)
    assert status is not None and (status.vm, status.error) == ("paused", "the VM is paused")
    stand.vm[0] = VMState.RUNNING
    stand.proxy.restore()
    until(lambda: stand.status() == AgentState.READY, 5, what="ready again")
    status = read_status(stand.files.agent_status)
    assert status is not None and (status.vm, status.error) == ("running", "")


def test_a_vm_being_restored_is_waited_for_then_served(stand: Stand) -> None:
    """`pyd start` launches the agent as it begins a restore: the VM is not running yet, and
    the agent waits for it (where it would fail at once without the marker, as above)."""
    write_mark(stand.files.restoring, RestoreMark(done=False))
    stand.vm[0] = VMState.STOPPED
    stand.proxy.cut()
    r = Running(stand.agent())
    time.sleep(2.5)  # past the agent's first check of the VM, every ~2 s while it waits
    assert not r.ended(0) and stand.status() != AgentState.FAILED
    stand.vm[0] = VMState.RUNNING  # restored
    write_mark(stand.files.restoring, RestoreMark(done=True))
    stand.proxy.restore()
    until(lambda: stand.status() == AgentState.READY, 10, what="the agent ready")
    assert not stand.files.restoring.exists()  # read: a later agent's VM is a booted one
    r.agent.request_stop()
    assert r.ended(5)


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("engine_ready", [True, False])
def test_a_resume_of_a_vm_saved_with_its_engine_answering_is_ready_without_asking(
    tmp_path: Path, engine_ready: bool, late: bool
) -> None:
    """The engine ran on from the saved memory: the agent is ready once its link is (a warm
    start's 0.1-0.2 s under TCG). A save made before the engine answered is waited for: here
    an engine that never answers a ping.
    `late`: the restore was over before the agent came up (a fast one), as the marker says."""
    asked: list[str] = []

    def no_ping(chan: paramiko.Channel) -> None:
        with contextlib.suppress(OSError, EOFError):  # the agent stops, or cuts it
            first = chan.recv(4096)
            asked.append(first.split(b" HTTP", 1)[0].decode())
            if b"/_ping" in first:
                chan.recv(1)  # never answered: until the agent closes it
                return
            chan.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[]")
            chan.close()

    with _stand(tmp_path, no_ping) as stand:
        over = RestoreMark(done=True, engine_ready=engine_ready)
        write_mark(stand.files.restoring, over if late else RestoreMark(done=False))
        r = Running(stand.agent())
        if not late:
            time.sleep(0.3)  # the agent waits for the restore
            write_mark(stand.files.restoring, over)
        try:
            if engine_ready:
                until(lambda: stand.status() == AgentState.READY, 10, what="the agent ready")
                until(lambda: "GET /containers/json" in " ".join(asked), 5, what="ports follow")
                assert not any("/_ping" in a for a in asked)
            else:
                until(lambda: any("/_ping" in a for a in asked), 10, what="a ping")
                time.sleep(1.0)
                assert stand.status() != AgentState.READY
        finally:
            r.agent.request_stop()
            assert r.ended(10)


def test_a_channel_the_guest_refused_is_no_error_in_the_agents_log() -> None:
    """paramiko's ERROR for a refused channel (an older image has no DNS relay socket): the
    agent says what it means itself; paramiko's other errors stay."""

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("paramiko.transport", logging.ERROR, "", 0, message, None, None)

    refused = record("Secsh channel 1 open FAILED: open failed: Connect failed")
    assert not agent_main._unless_refused_channel(refused)
    assert agent_main._unless_refused_channel(record("Exception (client): Error reading banner"))
