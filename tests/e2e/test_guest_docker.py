"""`pyd docker` through the guest's docker CLI on a host without one (real libvirtd + QEMU
under TCG). The `pyd` processes get a PATH that provably holds no `docker`, so pyd takes the
guest path by itself; a few checks run with the host's docker CLI present and `--via-guest`,
which must behave the same. One instance for the module, with a temporary directory shared
next to the default share (the home directory)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image
from tests.rss import rss_growth

NAME = "guestdocker"
IMAGE = "pyd-e2e-guestdocker-busybox"
# The two docker CLIs differ: which one answered shows which path pyd took.
GUEST_CLIENT = "{{.Client.Version}}"


@dataclass(frozen=True)
class Setup:
    env: PydEnv
    share: Path  # shared with `pyd mount add`, at the same path in the guest
    outside: Path  # in no share
    no_docker_path: str  # PATH for pyd without any docker on it
    guest_version: str  # the guest's docker CLI version
    tools: Path


@dataclass(frozen=True)
class Result:
    code: int
    out: bytes
    err: bytes


def _no_docker_path(bin_dir: Path) -> str:
    """A PATH with only the commands a shim and pyd need: no docker anywhere on it."""
    bin_dir.mkdir()
    for tool in ("sh", "env", "cat"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    path = str(bin_dir)
    assert shutil.which("docker", path=path) is None
    return path


@pytest.fixture(scope="module")
def setup(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    share = tmp_path_factory.mktemp("gd-share")
    outside = tmp_path_factory.mktemp("gd-outside")
    tools = tmp_path_factory.mktemp("gd-tools")
    try:
        e.pyd("start", "-n", NAME, timeout=900)
        e.pyd("mount", "add", str(share), "-n", NAME)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        _wait_mounted(e, share)
        version = e.pyd("ssh", "-n", NAME, "--", f"docker version --format '{GUEST_CLIENT}'")
        yield Setup(
            e, share, outside, _no_docker_path(tools / "bin"), version.stdout.strip(), tools
        )
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _wait_mounted(env: PydEnv, location: Path, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while True:
        status = env.status(NAME)
        states = {m["location"]: m["state"] for m in status["mounts"]}
        if states.get(str(location)) == "mounted":
            return
        assert time.monotonic() < end, f"{location} not mounted after {seconds} s: {states}"
        time.sleep(0.5)


def pyd_docker(
    s: Setup,
    *args: str,
    cwd: Path | None = None,
    stdin: bytes | Path = b"",
    host_docker: bool = False,
    command: str = "docker",
    timeout: float = 600,
    **extra: str,
) -> Result:
    """`pyd docker -n NAME ARGS` (or `pyd compose`) as a user would type it in `cwd` (the
    share by default), without docker on PATH unless `host_docker`."""
    env = s.env.env(**extra)
    if not host_docker:
        env["PATH"] = s.no_docker_path
    directory = cwd or s.share
    env["PWD"] = str(directory)
    argv = [sys.executable, "-m", "pyd", command, "-n", NAME, *args]
    if isinstance(stdin, Path):
        with stdin.open("rb") as f:
            r = subprocess.run(
                argv, stdin=f, capture_output=True, cwd=directory, env=env, timeout=timeout
            )
    else:
        r = subprocess.run(
            argv, input=stdin, capture_output=True, cwd=directory, env=env, timeout=timeout
        )
    return Result(r.returncode, r.stdout, r.stderr)


def _ok(r: Result) -> Result:
    assert r.code == 0, r.err.decode(errors="replace")
    return r


# -- which docker runs --------------------------------------------------------------------


def test_without_docker_on_path_the_guests_cli_runs(setup: Setup) -> None:
    host = subprocess.run(["docker", "version", "--format", GUEST_CLIENT], capture_output=True,
                          text=True, env=setup.env.env(), check=True).stdout.strip()  # fmt: skip
    assert setup.guest_version != host, "the two CLIs must differ for this test to tell"
    r = _ok(pyd_docker(setup, "version", "--format", GUEST_CLIENT))
    assert r.out.decode().strip() == setup.guest_version
    forced = _ok(pyd_docker(setup, "--via-guest", "version", "--format", GUEST_CLIENT,
                            host_docker=True))  # fmt: skip
    assert forced.out.decode().strip() == setup.guest_version
    local = _ok(pyd_docker(setup, "version", "--format", GUEST_CLIENT, host_docker=True))
    assert local.out.decode().strip() == host


def _agent_commands(s: Setup, framed: bool = False) -> int:
    """How many `pyd docker` commands the instance's agent has run (its log says); with
    `framed`, those whose streams came as frames."""
    log = (s.env.home / "instances" / NAME / "agent.log").read_text()
    return log.count("exec socket: a docker command ended") if not framed else len(
        re.findall(r"exec socket: a docker command ended with .* \(framed\)", log)
    )


# The ways a `pyd docker` client hands its streams to the agent: its descriptors, or frames
# (PYD_EXEC_FRAMED=1 forces what Windows does); the same tests pass both ways.
WAYS = ["fds", "framed"]


@contextlib.contextmanager
def counted(s: Setup, way: str, n: int) -> Iterator[dict[str, str]]:
    """The environment for `way`; the block must have run `n` commands through the agent
    that way."""
    before = _agent_commands(s, framed=True), _agent_commands(s)
    yield {"PYD_EXEC_FRAMED": "1"} if way == "framed" else {}
    want = (before[0] + (n if way == "framed" else 0), before[1] + n)
    end = time.monotonic() + 15  # the agent logs a command's end just after its client's
    while (got := (_agent_commands(s, framed=True), _agent_commands(s))) != want:
        assert time.monotonic() < end, f"agent commands (framed, all): {got}, not {want}"
        time.sleep(0.1)


def test_commands_run_on_the_agents_connection_and_without_it(setup: Setup) -> None:
    """The agent runs the command (no new SSH connection); with its exec socket gone (an
    agent from an older pyd, or Windows), pyd connects by itself with the same results."""
    script = "echo out; echo err >&2; cat; exit 3"
    before = _agent_commands(setup)
    through_agent = pyd_docker(setup, "run", "-i", "--rm", IMAGE, "sh", "-c", script, stdin=b"in")
    assert _agent_commands(setup) == before + 1
    sock = setup.env.home / "instances" / NAME / "sock" / "exec.sock"
    sock.rename(sock.with_name("exec.sock.away"))
    try:
        own = pyd_docker(setup, "run", "-i", "--rm", IMAGE, "sh", "-c", script, stdin=b"in")
    finally:
        sock.with_name("exec.sock.away").rename(sock)
    assert _agent_commands(setup) == before + 1
    for r in (through_agent, own):
        assert (r.code, r.out, r.err) == (3, b"out\nin", b"err\n")
    # Through the agent, pyd makes no SSH connection: it does not even import paramiko.
    env = setup.env.env(PATH=setup.no_docker_path, PWD=str(setup.share))
    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "pyd", "docker", "-n", NAME,
                            "version"], capture_output=True, text=True, env=env,
                           cwd=setup.share, timeout=600)  # fmt: skip
    assert timed.returncode == 0, timed.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in timed.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "pyd.guestdocker.agent_link" in imported
    assert not {"paramiko", "pyd.guestdocker.run", "pyd.guestdocker.direct"} & imported


def test_concurrent_commands_keep_their_own_streams_and_codes(setup: Setup) -> None:
    """Eight at once on the agent's one connection (sshd's MaxSessions is raised for it)."""
    env = setup.env.env(PATH=setup.no_docker_path, PWD=str(setup.share))
    procs = {}
    for n in range(1, 9):
        script = f"cat; echo out-{n}; echo err-{n} >&2; exit {n}"
        argv = [sys.executable, "-m", "pyd", "docker", "-n", NAME, "run", "-i", "--rm", IMAGE,
                "sh", "-c", script]  # fmt: skip
        procs[n] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, cwd=setup.share)  # fmt: skip
    for n, proc in procs.items():
        out, err = proc.communicate(f"in-{n}\n".encode(), timeout=600)
        assert (proc.returncode, out, err) == (n, f"in-{n}\nout-{n}\n".encode(),
                                               f"err-{n}\n".encode())  # fmt: skip


# The pids of the guest's docker CLI processes (without relying on procps in the image).
GUEST_CLIS = (
    'for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = docker ] && echo "${p#/proc/}"; '
    "done; true"
)


def test_a_killed_pyd_docker_takes_the_guests_cli_with_it(setup: Setup) -> None:
    """`kill -9` of pyd: the guest's docker CLI goes too, as a local one would have; the
    container carries on, as it would with a local CLI killed."""
    env = setup.env.env(PATH=setup.no_docker_path, PWD=str(setup.share))
    name = "pyd-e2e-killed-client"
    argv = [sys.executable, "-m", "pyd", "docker", "-n", NAME, "run", "-i", "--rm", "--name",
            name, IMAGE, "sh", "-c", "echo started; exec sleep 600"]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            cwd=setup.share)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        proc.kill()
        proc.wait(60)
        assert proc.stdout.read() == b""  # and the output ends: the agent let go of it too
        deadline = time.monotonic() + 60
        while True:
            clis = setup.env.pyd("ssh", "-n", NAME, "--", GUEST_CLIS).stdout
            if not clis.strip():
                break
            assert time.monotonic() < deadline, f"the guest's docker CLI still runs: {clis}"
            time.sleep(1)
        running = _ok(pyd_docker(setup, "ps", "--filter", f"name={name}", "--format",
                                 "{{.Names}}"))  # fmt: skip
        assert running.out == f"{name}\n".encode()
    finally:
        proc.kill()
        pyd_docker(setup, "rm", "-f", name)


# -- exit codes, streams, stdin -------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("code", [0, 3])
def test_the_exit_code_and_both_streams_come_back_apart(setup: Setup, code: int, way: str) -> None:
    script = f"echo to-stdout; echo to-stderr >&2; exit {code}"
    with counted(setup, way, 2) as env:
        r = pyd_docker(setup, "run", "--rm", IMAGE, "sh", "-c", script, **env)
        assert (r.code, r.out, r.err) == (code, b"to-stdout\n", b"to-stderr\n")
        forced = pyd_docker(setup, "--via-guest", "run", "--rm", IMAGE, "sh", "-c", script,
                            host_docker=True, **env)  # fmt: skip
        assert (forced.code, forced.out, forced.err) == (r.code, r.out, r.err)


def test_dockers_own_failure_is_125(setup: Setup) -> None:
    r = pyd_docker(setup, "run", "--rm", "--no-such-flag", IMAGE, "true")
    assert r.code == 125
    assert r.out == b""
    assert b"unknown flag: --no-such-flag" in r.err
    forced = pyd_docker(setup, "--via-guest", "run", "--rm", "--no-such-flag", IMAGE, "true",
                        host_docker=True)  # fmt: skip
    assert (forced.code, forced.out, forced.err) == (r.code, r.out, r.err)


@pytest.mark.parametrize("way", WAYS)
def test_stdin_is_piped_to_the_container_and_ends(setup: Setup, way: str) -> None:
    with counted(setup, way, 1) as env:
        r = pyd_docker(setup, "run", "-i", "--rm", IMAGE, "sh", "-c", "cat; echo after-eof >&2",
                       stdin=b"line one\nline two\n", **env)  # fmt: skip
    assert (r.code, r.out, r.err) == (0, b"line one\nline two\n", b"after-eof\n")


def test_save_then_load_from_stdin(setup: Setup, tmp_path: Path) -> None:
    copy = f"{IMAGE}-loaded"
    _ok(pyd_docker(setup, "tag", IMAGE, copy))
    saved = _ok(pyd_docker(setup, "save", copy))
    assert saved.out[257:262] == b"ustar"  # a tar archive, byte-exact on stdout
    (tmp_path / "img.tar").write_bytes(saved.out)
    _ok(pyd_docker(setup, "rmi", copy))
    assert pyd_docker(setup, "image", "inspect", copy).code == 1
    loaded = _ok(pyd_docker(setup, "load", stdin=tmp_path / "img.tar"))
    assert f"Loaded image: {copy}:latest" in loaded.out.decode()
    _ok(pyd_docker(setup, "image", "inspect", copy))


@pytest.mark.parametrize("way", WAYS)
def test_50_mb_of_random_bytes_round_trip_through_stdin_and_stdout(
    setup: Setup, tmp_path: Path, way: str
) -> None:
    data = os.urandom(50 * 1024 * 1024)
    (tmp_path / "blob").write_bytes(data)
    grew: list[int] = []
    with counted(setup, way, 1) as env, rss_growth(_agent(setup), grew):
        r = pyd_docker(setup, "run", "-i", "--rm", IMAGE, "cat", stdin=tmp_path / "blob",
                       timeout=900, **env)  # fmt: skip
    assert r.code == 0, r.err
    # Streamed, not gathered: the agent holds a few buffers of it at a time.
    print(f"agent RSS growth during 50 MB ({way}): {grew[0] / 2**20:.1f} MiB")
    assert grew[0] < 32 * 2**20
    assert len(r.out) == len(data)
    assert hashlib.sha256(r.out).hexdigest() == hashlib.sha256(data).hexdigest()


def _agent(s: Setup) -> psutil.Process:
    root = str(s.env.home / "instances" / NAME)
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if "pyd.agent" in cmdline and root in cmdline:
            return p
    raise AssertionError(f"no agent runs for {root}")


# -- a terminal ---------------------------------------------------------------------------


class Terminal:
    """`pyd docker ARGS` on a pseudo-terminal, as in a terminal window: the PTY is its
    controlling terminal, so resizing it sends pyd SIGWINCH as a real one does."""

    def __init__(
        self, s: Setup, args: list[str], rows: int, columns: int, way: str = "fds"
    ) -> None:
        env = s.env.env(PATH=s.no_docker_path, PWD=str(s.share), TERM="xterm")
        if way == "framed":
            env["PYD_EXEC_FRAMED"] = "1"
        argv = [sys.executable, "-m", "pyd", "docker", "-n", NAME, *args]
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal before pyd reads it
            try:
                _set_size(0, rows, columns)
                os.chdir(s.share)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.shown = b""

    def read_until(self, text: bytes, start: int = 0, timeout: float = 60) -> int:
        """Reads until `text` shows up after offset `start`; returns the offset after it."""
        end = time.monotonic() + timeout
        while text not in self.shown[start:]:
            left = end - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"{text!r} not shown in {timeout} s: {self.shown[-800:]!r}")
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                data = b""
            if not data:
                raise AssertionError(f"the terminal closed before {text!r}: {self.shown!r}")
            self.shown += data
        return self.shown.index(text, start) + len(text)

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, rows: int, columns: int) -> None:
        _set_size(self.fd, rows, columns)

    def wait(self, timeout: float = 60) -> int:
        """pyd's exit code; what it still shows is read meanwhile."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):  # EIO: pyd has closed the terminal
                    self.shown += os.read(self.fd, 4096)
        raise AssertionError(f"pyd still runs after {timeout} s: {self.shown[-800:]!r}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def _set_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


@pytest.fixture
def terminal_for(setup: Setup) -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for t in made:
        t.close()


@pytest.mark.parametrize("way", WAYS)
def test_it_typed_input_window_size_ctrl_c_and_exit_code(
    setup: Setup, terminal_for: list[Terminal], way: str
) -> None:
    with counted(setup, way, 1):
        _typed_input_window_size_ctrl_c_and_exit_code(setup, terminal_for, way)


def _typed_input_window_size_ctrl_c_and_exit_code(
    setup: Setup, terminal_for: list[Terminal], way: str
) -> None:
    t = Terminal(setup, ["run", "-it", "--rm", IMAGE, "sh"], rows=30, columns=100, way=way)
    terminal_for.append(t)
    pos = t.read_until(b"# ", timeout=120)
    # Typed input reaches the container's shell (the arithmetic proves it ran there) and
    # the container's terminal has the size of this one.
    t.type(b"echo typed-$((6*7)) size-$(stty size | tr ' ' x)\r")
    pos = t.read_until(b"typed-42 size-30x100", pos)
    # A window change reaches the container. The docker CLI in the guest can miss a SIGWINCH
    # that comes while it is still starting (it listens for it only after `start` returns,
    # which takes a while under emulation): then the next change is the one to see.
    seen = None
    for rows, columns in ((40, 120), (41, 121), (42, 122)):
        t.resize(rows, columns)
        want = f"size-{rows}x{columns}".encode()
        deadline = time.monotonic() + 15
        while seen is None and time.monotonic() < deadline:
            t.type(b"echo size-$(stty size | tr ' ' x)\r")
            pos = t.read_until(b"size-", pos)  # the echo of the line typed
            try:
                pos = t.read_until(want, pos, timeout=3)
                seen = (rows, columns)
            except AssertionError:
                pass
        if seen is not None:
            break
    assert seen is not None, f"no window change reached the container: {t.shown[-800:]!r}"
    # Ctrl-C interrupts what runs in the container (the rest of the line never runs) and the
    # container's shell carries on.
    t.type(b"sleep 600; echo $((40+2))-not-interrupted\r")
    pos = t.read_until(b"not-interrupted\r\n", pos)  # the echo of the line typed
    time.sleep(2)
    t.type(b"\x03")
    t.type(b"echo back-$((1+1))\r")
    after = t.read_until(b"back-2", pos, timeout=60)
    assert b"42-not-interrupted" not in t.shown[pos:after]
    t.type(b"exit 5\r")
    assert t.wait() == 5


@pytest.mark.parametrize("way", WAYS)
def test_ctrl_c_stops_the_container(setup: Setup, terminal_for: list[Terminal], way: str) -> None:
    """`--init`: the container's first process is docker-init, which passes SIGINT on (a
    plain `sleep` as PID 1 would ignore it, with any docker)."""
    with counted(setup, way, 1):
        t = Terminal(setup, ["run", "-it", "--rm", "--init", IMAGE, "sh", "-c",
                             "echo started-$((2*3)); exec sleep 600"], rows=24, columns=80,
                     way=way)  # fmt: skip
        terminal_for.append(t)
        t.read_until(b"started-6", timeout=120)
        time.sleep(1)
        t.type(b"\x03")
        assert t.wait(timeout=60) == 128 + signal.SIGINT


# -- files through the shares -----------------------------------------------------------


def test_build_dot_from_a_shared_directory(setup: Setup) -> None:
    ctx = setup.share / "build ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("from the host's build context\n")
    (ctx / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY hello.txt /hello.txt\n")
    tag = f"{IMAGE}-built"
    _ok(pyd_docker(setup, "build", "-q", "-t", tag, ".", cwd=ctx, timeout=900))
    r = _ok(pyd_docker(setup, "run", "--rm", tag, "cat", "/hello.txt"))
    assert r.out == b"from the host's build context\n"


def test_bind_mounts_of_pwd_and_dot_see_host_files(setup: Setup) -> None:
    work = setup.share / "project"
    work.mkdir()
    (work / "data.txt").write_text("host file\n")
    r = _ok(pyd_docker(setup, "run", "--rm", "-v", f"{work}:/src", IMAGE, "cat", "/src/data.txt",
                       cwd=work))  # fmt: skip  # "$PWD":/src as the shell expands it
    assert r.out == b"host file\n"
    r = _ok(pyd_docker(setup, "run", "--rm", "-v", ".:/src", IMAGE, "sh", "-c",
                       "cat /src/data.txt && echo written > /src/back.txt", cwd=work))  # fmt: skip
    assert r.out == b"host file\n"
    assert (work / "back.txt").read_text() == "written\n"


def test_outside_every_share_a_clear_error_for_commands_that_need_files(setup: Setup) -> None:
    (setup.outside / "Dockerfile").write_text(f"FROM {IMAGE}\n")
    r = pyd_docker(setup, "build", ".", cwd=setup.outside)
    err = r.err.decode()
    assert r.code == 2, err
    assert r.out == b""
    assert f"the current directory {setup.outside} is not shared" in err
    assert str(Path.home()) in err and str(setup.share) in err  # the shares, listed
    assert f"pyd mount add {setup.outside} -n {NAME}" in err  # how to add one
    assert "Traceback" not in err
    # A command that reads no files there runs anyway.
    r = _ok(pyd_docker(setup, "version", "--format", GUEST_CLIENT, cwd=setup.outside))
    assert r.out.decode().strip() == setup.guest_version


def test_docker_variables_pass_through_but_not_docker_host(setup: Setup) -> None:
    r = _ok(pyd_docker(setup, "version", "--format", "{{.Client.APIVersion}}",
                       DOCKER_API_VERSION="1.43", DOCKER_HOST="tcp://127.0.0.1:9"))  # fmt: skip
    assert r.out == b"1.43\n"


# -- compose --------------------------------------------------------------------------------


def test_compose_runs_a_project_from_the_shared_directory(setup: Setup) -> None:
    """The guest image carries the compose plugin (the guest's "no compose" message is
    unit-tested). A project in the share, bind-mounting `.`, with a variable passed along."""
    project = setup.share / "compose-project"
    project.mkdir()
    (project / "input.txt").write_text("from-the-host\n")
    (project / "compose.yaml").write_text(
        "services:\n"
        "  hello:\n"
        f"    image: {IMAGE}\n"
        '    command: ["sh", "-c", "echo compose-$$((6*7)) $$GREETING; cat /src/input.txt"]\n'
        "    environment:\n"
        "      GREETING: ${PYD_E2E_GREETING:-unset}\n"
        "    volumes:\n"
        "      - .:/src\n"
    )
    version = _ok(pyd_docker(setup, "version", "--short", command="compose", cwd=project))
    assert version.out.strip()
    named = {"COMPOSE_PROJECT_NAME": "pyde2e", "PYD_E2E_GREETING": "x"}
    try:
        up = _ok(pyd_docker(setup, "up", command="compose", cwd=project, **named))
        shown = up.out.decode()
        assert "compose-42 unset" in shown  # PYD_* is not DOCKER_* or COMPOSE_*: not passed
        assert "from-the-host" in shown
        made = _ok(pyd_docker(setup, "ps", "-a", "--filter", "label=com.docker.compose.project",
                              "--format", "{{.Names}}"))  # fmt: skip
        assert made.out == b"pyde2e-hello-1\n"  # COMPOSE_PROJECT_NAME was
    finally:
        _ok(pyd_docker(setup, "down", command="compose", cwd=project, **named))


# -- the shim ---------------------------------------------------------------------------


def _pyd(s: Setup, *args: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyd", *args], capture_output=True, text=True,
                          env=s.env.env(PATH=path), timeout=120)  # fmt: skip


def test_the_shim_runs_pyd_docker_and_removes_only_itself(setup: Setup) -> None:
    shim_dir = setup.tools / "shim"
    path = f"{shim_dir}{os.pathsep}{setup.no_docker_path}"
    r = _pyd(setup, "shim", "install", "--dir", str(shim_dir), "-n", NAME, path=path)
    assert r.returncode == 0, r.stderr
    shim = shim_dir / "docker"
    assert shutil.which("docker", path=path) == str(shim)
    ran = subprocess.run(["docker", "version", "--format", GUEST_CLIENT], capture_output=True,
                         text=True, env=setup.env.env(PATH=path), cwd=setup.share,
                         timeout=300)  # fmt: skip
    assert (ran.returncode, ran.stdout.strip()) == (0, setup.guest_version), ran.stderr
    ran = subprocess.run(["docker", "run", "--rm", IMAGE, "sh", "-c", "exit 3"],
                         env=setup.env.env(PATH=path), cwd=setup.share, timeout=300)  # fmt: skip
    assert ran.returncode == 3
    r = _pyd(setup, "shim", "remove", "--dir", str(shim_dir), path=path)
    assert r.returncode == 0, r.stderr
    assert not shim.exists()


def test_the_shim_is_refused_where_another_docker_is_on_path(setup: Setup) -> None:
    host_docker = shutil.which("docker")
    assert host_docker is not None
    shim_dir = setup.tools / "refused"
    path = f"{shim_dir}{os.pathsep}{Path(host_docker).parent}{os.pathsep}{setup.no_docker_path}"
    r = _pyd(setup, "shim", "install", "--dir", str(shim_dir), path=path)
    assert r.returncode == 1
    assert f"a docker command already exists: {host_docker}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (shim_dir / "docker").exists()


def test_the_shim_never_overwrites_or_removes_a_docker_it_did_not_write(setup: Setup) -> None:
    other_dir = setup.tools / "other"
    other_dir.mkdir()
    other = other_dir / "docker"
    text = "#!/bin/sh\necho some other docker\n"
    other.write_text(text)
    other.chmod(0o755)
    r = _pyd(setup, "shim", "install", "--dir", str(other_dir), path=setup.no_docker_path)
    assert r.returncode == 1
    assert f"{other} exists and is not a shim pyd wrote" in r.stderr
    r = _pyd(setup, "shim", "remove", "--dir", str(other_dir), path=setup.no_docker_path)
    assert r.returncode == 1
    assert f"{other} is not a shim pyd wrote" in r.stderr
    assert "Traceback" not in r.stderr
    assert other.read_text() == text
