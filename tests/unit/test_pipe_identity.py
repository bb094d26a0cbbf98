r"""`pyd docker` on Windows uses the agent's exec pipe only when the agent serves it (pyd
issue 17): whoever else took the name `\\.\pipe\pyd-NAME.exec` gets neither the command nor
its stdin, and the command goes over SSH with a warning. The Windows calls (CreateFile with
SQOS flags, GetNamedPipeServerProcessId) are agent_link's thin edge; what decides runs here."""

from __future__ import annotations

import os
from pathlib import Path, PurePath

import pytest

from pyd.guestdocker import agent_link
from pyd.guestdocker.exec_protocol import exec_endpoint
from pyd.guestdocker.pipe_identity import (
    PIPE_CLIENT_SQOS,
    agent_pid_record,
    exec_pipe_instance,
    pipe_server_trusted,
    recorded_agent_pid,
    untrusted_pipe_warning,
)
from pyd.host.process_identity import ProcessIdentity, identify, write_identity

PIPE = r"\\.\pipe\pyd-dev.exec"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYD_HOME", str(tmp_path))
    return tmp_path


def _record(home: Path, identity: ProcessIdentity, name: str = "dev") -> Path:
    path = home / "instances" / name / "agent.pid"
    path.parent.mkdir(parents=True)
    write_identity(path, identity)
    return path


def _me() -> ProcessIdentity:
    me = identify(os.getpid())
    assert me is not None
    return me


class _Conn:
    closed = False

    def recv(self, bufsize: int, /) -> bytes:
        return b""

    def sendall(self, data: bytes, /) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_the_client_opens_the_pipe_for_identification_only() -> None:
    # SECURITY_SQOS_PRESENT, and the level in bits 16-17: 1 is SecurityIdentification
    # (2, SecurityImpersonation, is what a client without SQOS flags grants).
    assert PIPE_CLIENT_SQOS & 0x00100000
    assert (PIPE_CLIENT_SQOS >> 16) & 0b11 == 1


@pytest.mark.parametrize("name", ["pyd", "dev", "build-2"])
def test_an_exec_pipe_names_its_instance(name: str) -> None:
    pipe = exec_endpoint("win32", name, PurePath("unused")).address
    assert exec_pipe_instance(pipe) == name


@pytest.mark.parametrize(
    "pipe",
    [r"\\.\pipe\pyd-dev", r"\\.\pipe\docker_engine", r"\\.\pipe\pyd-.exec", "/tmp/exec.sock"],
)
def test_other_pipes_name_no_instance(pipe: str) -> None:
    assert exec_pipe_instance(pipe) is None


def test_the_agents_record_is_the_instances_agent_pid(home: Path) -> None:
    assert agent_pid_record(PIPE) == home / "instances" / "dev" / "agent.pid"
    assert agent_pid_record(r"\\.\pipe\pyd-Not_A_Name.exec") is None


def test_the_recorded_pid_counts_only_while_that_process_runs(home: Path) -> None:
    me = _me()
    assert recorded_agent_pid(_record(home, me)) == os.getpid()
    # The same pid, started at another time: the agent died and the pid was reused.
    reused = _record(home, ProcessIdentity(me.pid, me.started - 1000), "other")
    assert recorded_agent_pid(reused) is None
    assert recorded_agent_pid(home / "missing" / "agent.pid") is None


@pytest.mark.parametrize(
    ("server", "agent", "trusted"),
    [(42, 42, True), (43, 42, False), (None, 42, False), (42, None, False), (None, None, False)],
)
def test_only_the_recorded_agent_is_trusted(
    server: int | None, agent: int | None, trusted: bool
) -> None:
    assert pipe_server_trusted(server, agent) is trusted


def test_the_warning_names_the_other_process_and_the_fallback() -> None:
    text = untrusted_pipe_warning(PIPE, 4242, 77)
    assert "pid 4242" in text and "pid 77" in text and PIPE in text and "SSH" in text
    assert "4242" in untrusted_pipe_warning(PIPE, 4242, None)
    for line in (text, untrusted_pipe_warning(PIPE, None, 77)):
        assert "\n" not in line and line.startswith("pyd: warning:")


def test_the_pipe_is_used_when_the_agent_serves_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(home, _me())
    conn = _Conn()
    assert agent_link._served_by_agent(conn, PIPE, os.getpid()) is conn
    assert not conn.closed
    assert capsys.readouterr().err == ""


def test_a_pipe_served_by_another_process_is_closed_and_ssh_used(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(home, _me())
    conn = _Conn()
    stranger = os.getppid()
    assert agent_link._served_by_agent(conn, PIPE, stranger) is None
    assert conn.closed
    err = capsys.readouterr().err
    assert f"served by another process (pid {stranger})" in err and "over SSH" in err


@pytest.mark.parametrize("server", [1234, None])
def test_without_a_running_agent_recorded_the_pipe_is_not_used(
    home: Path, capsys: pytest.CaptureFixture[str], server: int | None
) -> None:
    conn = _Conn()
    assert agent_link._served_by_agent(conn, PIPE, server) is None
    assert conn.closed
    assert "over SSH" in capsys.readouterr().err
