"""The guest's command line for `pyd docker`, run here by the shells a guest may log root in
with (dash, bash, busybox sh), and the host environment it carries."""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyd.guestdocker.remote import (
    NOT_PASSED,
    GuestCommand,
    PidLine,
    command_line,
    kill_command,
    passed_env,
)
from pyd.guestdocker.tools import COMPOSE
from tests.unit.polling import until

SHELLS = [
    s
    for s in (["/bin/dash"], ["/bin/bash"], ["/usr/bin/busybox", "sh"], ["/bin/busybox", "sh"])
    if os.path.exists(s[0])
]
PRINT_ARGV = "import os, sys; sys.stdout.buffer.write(b'\\0'.join(map(os.fsencode, sys.argv[1:])))"


def _guest_shell(shell: list[str], line: bytes, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    """Runs `line` as sshd would, `SHELL -c LINE`, with a `docker` that runs its arguments."""
    (tmp / "docker").write_text('#!/bin/sh\nexec "$@"\n')
    (tmp / "docker").chmod(0o755)
    env = {"PATH": f"{tmp}:{os.environ['PATH']}", "HOME": str(tmp)}
    return subprocess.run([*shell, "-c", line], capture_output=True, env=env, timeout=30)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
@pytest.mark.parametrize("report_pid", [False, True])
def test_each_argument_and_variable_reaches_docker_byte_for_byte(
    shell: list[str], report_pid: bool, tmp_path: Path
) -> None:
    args = ["", " a b ", "it's", 'say "hi"', "line\nbreak", "é", "-n", "$(id)", "\\", "*"]
    args.append(os.fsdecode(b"\xff\x80 not utf-8"))
    env = (("DOCKER_Q", 'it\'s "$HOME"\n'), ("COMPOSE_E", ""))
    show = PRINT_ARGV + "; sys.stdout.buffer.write(b'|' + os.environb[b'DOCKER_Q'])"
    line = command_line(
        GuestCommand(str(tmp_path), (sys.executable, "-c", show, *args), env), report_pid
    )
    r = _guest_shell(shell, line, tmp_path)
    assert r.returncode == 0, r.stderr
    argv, _, q = r.stdout.partition(b"|")
    assert argv.split(b"\0") == [os.fsencode(a) for a in args]
    assert q == b'it\'s "$HOME"\n'
    pid_line = PidLine()
    assert pid_line.feed(r.stderr) + pid_line.rest() == b""
    assert (pid_line.pid is not None) is report_pid


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_the_exit_code_is_dockers_and_a_signal_is_128_plus_n(
    shell: list[str], tmp_path: Path
) -> None:
    for script, code in (("exit 3", 3), ("exit 125", 125), ("kill -INT $$", 130)):
        line = command_line(GuestCommand("/", ("sh", "-c", script)), report_pid=False)
        assert _guest_shell(shell, line, tmp_path).returncode == code, script


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_the_kill_line_reaches_the_whole_process_group(shell: list[str], tmp_path: Path) -> None:
    """What a forwarded Ctrl-C runs: the guest's shell and docker both get the signal, and
    the shell (which traps it) reports how docker ended."""
    trapped = tmp_path / "trapped"
    script = f"trap 'exit 42' INT; : > {trapped}; while :; do sleep 0.05; done"
    line = command_line(GuestCommand("/", ("sh", "-c", script)), report_pid=True)
    (tmp_path / "docker").write_text('#!/bin/sh\nexec "$@"\n')
    (tmp_path / "docker").chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    guest = subprocess.Popen(
        [*shell, "-c", line], stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        assert guest.stderr is not None
        pid_line = PidLine()
        while not pid_line.done:
            pid_line.feed(guest.stderr.readline())
        assert pid_line.pid == guest.pid  # the shell leads docker's process group
        until(trapped.exists, 10, what="docker's `sh` setting its trap")
        subprocess.run([*shell, "-c", kill_command("INT", guest.pid)], check=True, timeout=10)
        assert guest.wait(10) == 42
    finally:
        if guest.poll() is None:
            guest.kill()


def test_compose_needs_no_extra_process_to_find_the_plugin(tmp_path: Path) -> None:
    line = command_line(GuestCommand("/", ("up",), tool=COMPOSE), report_pid=False)
    plugins = tmp_path / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").write_text("#!/bin/sh\n")
    (plugins / "docker-compose").chmod(0o755)
    (tmp_path / "compose").write_text('#!/bin/sh\necho "compose $*"\n')
    (tmp_path / "compose").chmod(0o755)
    r = _guest_shell([shutil.which("sh") or "/bin/sh"], line, tmp_path)
    assert (r.returncode, r.stdout) == (0, b"compose up\n")


# -- the environment ------------------------------------------------------------------------


def test_docker_and_compose_variables_pass_except_those_naming_another_engine() -> None:
    passed = {"DOCKER_BUILDKIT": "1", "DOCKER_API_VERSION": "1.45", "COMPOSE_PROFILES": "dev"}
    others = {"HOME": "/home/me", "PATH": "/usr/bin", "MY_DOCKER_X": "no", "DOCKER-X": "bad"}
    env = {**passed, **others, **dict.fromkeys(NOT_PASSED, "tcp://elsewhere:2376")}
    assert passed_env(env, "linux") == tuple(sorted(passed.items()))
    assert {"DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH"} <= NOT_PASSED


def test_windows_compose_file_lists_become_guest_paths() -> None:
    env = {"COMPOSE_FILE": "C:\\p\\a.yaml;.\\b.yaml", "COMPOSE_PATH_SEPARATOR": ";"}
    assert passed_env(env, "win32") == (("COMPOSE_FILE", "/c/p/a.yaml:./b.yaml"),)
    assert passed_env(env, "linux") == tuple(sorted(env.items()))


# -- the pid line ----------------------------------------------------------------------------


def test_the_pid_line_is_taken_out_however_the_bytes_arrive() -> None:
    stream = b"bashrc says hi\npyd-pid=4242\nreal error\n"
    for size in (1, 3, 7, len(stream)):
        pid_line = PidLine()
        shown = b"".join(pid_line.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        assert (shown + pid_line.rest(), pid_line.pid) == (b"bashrc says hi\nreal error\n", 4242)


def test_without_a_pid_line_stderr_passes_unchanged() -> None:
    pid_line = PidLine()
    data = b"pyd-pid=12x\nno newline at the end"
    assert pid_line.feed(data) + pid_line.rest() == data
    assert pid_line.pid is None


# -- a hangup with a terminal ----------------------------------------------------------------


def _gone(pid: int) -> bool:
    """Whether process `pid` ended (or is a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _pid_in(path: Path) -> int:
    """The pid written to `path`, 0 until its line is complete."""
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_a_hangup_of_the_terminal_ends_docker_too(shell: list[str], tmp_path: Path) -> None:
    """sshd closes the guest's PTY when the session ends early (the host's terminal closed):
    only the session leader, the guest's shell, gets SIGHUP from the kernel. Found on a real
    guest: a shell trapping HUP left `docker run -it` and its container running for ever."""
    pid_file = tmp_path / "docker.pid"
    script = f"echo $$ > {pid_file}; exec sleep 300"  # docker, standing in
    line = command_line(GuestCommand("/", ("sh", "-c", script)), report_pid=False, terminal=True)
    (tmp_path / "docker").write_text('#!/bin/sh\nexec "$@"\n')
    (tmp_path / "docker").chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    pid, master = pty.fork()  # as sshd: the shell leads a session on the PTY
    if pid == 0:
        os.execve(shell[0], [*shell, "-c", line], env)
    docker_pid = 0
    try:
        docker_pid = until(lambda: _pid_in(pid_file), 10, what="docker starting")
        os.close(master)  # the session ends: the PTY hangs up
        master = -1
        until(lambda: _gone(docker_pid), 10, what="docker ending with its terminal's hangup")
    finally:
        if master >= 0:
            os.close(master)
        for p in (pid, docker_pid):
            with contextlib.suppress(OSError):
                if p:
                    os.kill(p, signal.SIGKILL)
        os.waitpid(pid, 0)
