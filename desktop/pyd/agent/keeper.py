"""The agent's keeper: `python -m pyd.agent.keeper DIR NAME TOKEN`, what `pyd start`
launches detached. It runs the host agent (`python -m pyd.agent DIR NAME TOKEN`) as its
child and starts it again when it dies without saying why (a signal, a traceback), so that
Docker, ports and shares come back without the user; a crash loop gives up and says so.

A separate process, not a thread of the agent: SIGKILL, the OOM killer or a crash in C
code end a process with every thread in it, and only another process sees that. The
keeper imports almost nothing (no paramiko, no SSH) and does nothing but wait, so it has
little to fail on. It exits when the agent ends on purpose: asked to stop, the VM gone,
or a failure the agent explained; the agent's last word in agent.json (state stopped or
failed) tells those from a crash.

`pyd stop` asks the keeper by SIGTERM (POSIX) or by the stop.request file it watches
(Windows, which has no signals to pass on; tests force it anywhere); either way the keeper
passes the request on as a word on the agent's stdin, which wakes the agent at once.

Once an agent has run a few seconds, the keeper starts a standby: Python up and the agent's
modules imported, waiting for a word on its stdin; a restart then skips that part, for one
idle process's memory.

The restart policy (RestartPolicy, death_cause) is pure; `main` is the side effects.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pyd.agent.status_file import AgentState, AgentStatus, read_status, write_status
from pyd.host.atomicfile import write_atomic
from pyd.host.detached import hidden_child
from pyd.host.process_identity import identify
from pyd.instance.files import InstanceFiles

CRASH_LIMIT = 5  # this many crashes ...
CRASH_WINDOW = 60.0  # ... within this many seconds: give up
FIRST_DELAY = 0.0  # the first restart at once: Docker back within 2 s
BACKOFF_BASE, BACKOFF_MAX = 0.5, 5.0  # later ones 0.5, 1, 2 ... s apart
POLL = 0.05  # how often the keeper looks at its child, its stop flag and stop.request
# Once the agent was asked to stop: `pyd stop` waits for the keeper, and a short poll for
# the few moments the agent takes to end costs nothing while it idles.
STOPPING_POLL = 0.005
# The keeper's word on the agent's stdin that asks it to stop (agent/main.py listens).
STOP_WORD = b"s"


@dataclass
class RestartPolicy:
    """Pure: given the time of each crash, whether to restart and after how long."""

    limit: int = CRASH_LIMIT
    window: float = CRASH_WINDOW
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_MAX
    crashes: list[float] = field(default_factory=list)

    def crashed(self, now: float) -> float | None:
        """Records a crash at `now` (monotonic seconds); the delay before the restart, or
        None to give up (`limit` crashes within `window`)."""
        self.crashes = [t for t in self.crashes if now - t < self.window] + [now]
        n = len(self.crashes)
        if n >= self.limit:
            return None
        if n == 1:
            return FIRST_DELAY
        return min(self.base * 2.0 ** (n - 2), self.cap)


def death_cause(returncode: int, platform: str) -> str:
    """How the agent ended, in words for `pyd status`: POSIX reports a signal as a negative
    code; Windows has no signals, only exit codes (TerminateProcess sets one)."""
    if returncode < 0 and platform != "win32":
        return f"signal {-returncode}"
    return f"exit code {returncode}"


def ended_on_purpose(last: AgentStatus | None, token: str, since: float) -> bool:
    """Pure: the agent left its reason in agent.json before it exited (stopped on request
    or because the VM is gone, or failed with an error for the user): restarting would not
    help. A status from an earlier agent (older than `since`, wall clock) does not count."""
    return (
        last is not None
        and last.launch == token
        and last.updated >= since
        and last.state in (AgentState.STOPPED, AgentState.FAILED)
    )


def was_ready(last: AgentStatus | None, token: str) -> bool:
    """Pure: the agent had served Docker (ready, or reconnecting since) when it died."""
    return (
        last is not None
        and last.launch == token
        and last.state in (AgentState.READY, AgentState.RECONNECTING)
    )


@dataclass(frozen=True)
class KeeperStatus:
    """keeper.json: what `pyd status` says about restarts."""

    pid: int
    agent_pid: int = 0
    restarts: int = 0
    last_cause: str = ""  # "signal 9", "exit code 1"
    last_at: float = 0.0  # wall clock of the last restart
    gave_up: bool = False
    crashes: int = 0  # within the window, when it gave up
    launch: str = ""
    started: float = 0.0  # the keeper's start time (process_identity); 0: an older keeper


_NEWER_FIELDS = ("started",)  # a keeper.json from an older keeper lacks them


def read_keeper_status(path: Path) -> KeeperStatus | None:
    try:
        data = json.loads(path.read_text())
        fields = KeeperStatus.__dataclass_fields__
        status = KeeperStatus(**{k: data[k] for k in fields if k in data or k not in _NEWER_FIELDS})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(status.pid, int) or not isinstance(status.started, (int, float)):
        return None
    return status


def gave_up_status(
    last: AgentStatus | None, token: str, crashes: int, window: float
) -> AgentStatus:
    """Pure: the agent.json the keeper leaves when it gives up, for `pyd start` (which may be
    waiting) and `pyd status`."""
    base = last if last is not None else AgentStatus(AgentState.FAILED, 0, launch=token)
    return replace(base, launch=token).to(
        AgentState.FAILED,
        f"the host agent crashed {crashes} times within {window:.0f} s; gave up restarting it",
        "see `pyd logs` for why; `pyd start` starts it again",
    )


# A standby agent: Python started and the agent's modules (paramiko, cryptography) imported,
# waiting for the keeper's word on stdin: a restart, which must bring Docker back within 2 s,
# skips starting Python and importing them.
# Anything but the word (the keeper gone: end of file) and it exits.
# Set for an agent the keeper starts in place of one that was ready (pyd.agent.main reads it):
# the VM ran and its engine answered moments ago, so it serves Docker as soon as SSH is up.
RESTARTED_ENV = "PYD_AGENT_RESTARTED"
# The standby's words: "r" go, in place of an agent that was ready; "g" go, from the start.
_STANDBY = (
    "import os, sys\n"
    "from pyd.agent.main import main\n"
    "word = os.read(0, 1)\n"  # unbuffered: the stop word that may follow is the agent's
    "if word not in (b'r', b'g'):\n"
    "    os._exit(0)\n"  # nothing to save: no interpreter teardown for `pyd stop` to wait on
    "if word == b'r':\n"
    f"    os.environ['{RESTARTED_ENV}'] = '1'\n"
    "from pyd.agent.main import exit_now\n"
    "exit_now(main(sys.argv[1:]))\n"
)
STANDBY_AFTER = 5.0  # an agent up this long gets a standby: not while it competes for the CPU


class Keeper:
    def __init__(
        self,
        files: InstanceFiles,
        name: str,
        token: str,
        argv: list[str] | None = None,
        standby_argv: list[str] | None = None,
        standby_after: float = STANDBY_AFTER,
    ) -> None:
        self.files = files
        if argv is None:
            args = [str(files.root), name, token]
            argv = [sys.executable, "-m", "pyd.agent", *args]
            standby_argv = [sys.executable, "-c", _STANDBY, *args]
        self.argv = argv
        self.standby_argv = standby_argv  # None: no standby
        self.standby_after = standby_after
        self.standby: subprocess.Popen[bytes] | None = None
        self.token = token
        self.policy = RestartPolicy()
        me = identify(os.getpid())
        self.status = KeeperStatus(os.getpid(), launch=token, started=me.started if me else 0.0)
        self.stopping = False

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: the wait loop passes it on and exits once the agent has."""
        self.stopping = True

    def _stop_requested(self) -> bool:
        """A signal said so, `pyd stop` left stop.request, or the instance directory is
        gone (deleted under a keeper that its `pyd delete` did not find: nobody would ever
        ask it to stop). Two stats per poll."""
        if not self.stopping and (self.files.stop_request.exists() or not self.files.root.is_dir()):
            self.stopping = True
        return self.stopping

    def _publish(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]
        write_atomic(
            self.files.keeper_status,
            json.dumps(asdict(self.status), indent=2) + "\n",
            new_mode=0o600,
        )

    def _say(self, message: str) -> None:
        now = time.time()  # as the agent's log lines: milliseconds after a comma
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
        )
        print(f"{stamp} INFO pyd.keeper: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self._drop_standby()

    def _start_agent(self, restart: bool) -> subprocess.Popen[bytes]:
        """The standby, told to go, when there is a live one; else a new agent."""
        standby, self.standby = self.standby, None
        if standby is not None and standby.poll() is None and standby.stdin is not None:
            try:
                standby.stdin.write(b"r" if restart else b"g")
                standby.stdin.flush()  # kept open: the stop word goes the same way
                return standby
            except OSError:  # it died just now
                standby.wait()
        # stdout/stderr are inherited: agent.log, as the keeper's own. stdin: the stop word.
        flags = hidden_child(sys.platform)
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            close_fds=True,
            creationflags=flags.creationflags,
            start_new_session=flags.start_new_session,
            env=_restarted_env() if restart else None,
        )

    def _prepare_standby(self) -> None:
        if self.standby is not None and self.standby.poll() is not None:
            self.standby = None  # it died while waiting: the next restart starts afresh
        if self.standby is None and self.standby_argv:
            flags = hidden_child(sys.platform)
            self.standby = subprocess.Popen(
                self.standby_argv,
                stdin=subprocess.PIPE,
                close_fds=True,
                creationflags=flags.creationflags,
                start_new_session=flags.start_new_session,
            )

    def _release_standby(self) -> None:
        """Tells the standby to exit (end of file on its stdin), without waiting for it."""
        if self.standby is not None and self.standby.stdin is not None:
            with contextlib.suppress(OSError):
                self.standby.stdin.close()

    def _drop_standby(self) -> None:
        self._release_standby()
        standby, self.standby = self.standby, None
        if standby is None:
            return
        try:
            standby.wait(timeout=5)
        except subprocess.TimeoutExpired:
            standby.kill()
            standby.wait()

    def _run(self) -> int:
        self._publish()
        restart = False  # in place of an agent that was ready
        while not self._stop_requested():
            since = time.time() - 1  # the agent's clock stamps; a second of slack
            child = self._start_agent(restart)
            self._publish(agent_pid=child.pid)
            code = self._wait(child)
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()
            if self._stop_requested():
                break
            last = read_status(self.files.agent_status)
            # One that died while booting (a `pyd start` still waits) starts from the start.
            restart = was_ready(last, self.token)
            if ended_on_purpose(last, self.token, since):
                self._say(f"the agent exited ({last.state if last else '?'}); keeper done")
                return 0
            cause = death_cause(code, sys.platform)
            delay = self.policy.crashed(time.monotonic())
            if delay is None:
                crashes = len(self.policy.crashes)
                window = self.policy.window
                self._say(
                    f"the agent died ({cause}), {crashes} times within {window:.0f} s: giving up"
                )
                write_status(
                    self.files.agent_status,
                    gave_up_status(last, self.token, crashes, window),
                )
                self._publish(gave_up=True, crashes=crashes, last_cause=cause)
                return 1
            self._say(f"the agent died ({cause}); starting it again in {delay:.1f} s")
            self._sleep(delay)
            self._publish(restarts=self.status.restarts + 1, last_cause=cause, last_at=time.time())
        self._say("stopped on request")
        return 0

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        """The child's exit code; forwards a stop request to it once. Short polls, not one
        wait(): a request may come at any moment, even before the child existed."""
        forwarded = False
        standby_at = time.monotonic() + self.standby_after
        while True:
            code = child.poll()
            if code is not None:
                return code
            if self._stop_requested() and not forwarded:
                forwarded = True
                _ask_to_stop(child)
                # It ends while the agent does, not after: `pyd stop` waits for both.
                self._release_standby()
            elif not self.stopping and time.monotonic() >= standby_at:
                standby_at = time.monotonic() + 1  # and again should the standby die
                self._prepare_standby()
            time.sleep(STOPPING_POLL if forwarded else POLL)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop_requested() and time.monotonic() < end:
            time.sleep(POLL)


def _ask_to_stop(child: subprocess.Popen[bytes]) -> None:
    """The stop word on the agent's stdin: the same on every OS (Windows has no SIGTERM to
    pass on: its send_signal is TerminateProcess, no cleanup), and it wakes the agent at
    once. An agent that no longer reads is gone or going; `pyd stop` kills it after its
    timeout."""
    if child.stdin is None:
        return
    with contextlib.suppress(OSError):  # it died just now
        child.stdin.write(STOP_WORD)
        child.stdin.flush()


def _restarted_env() -> dict[str, str]:
    return {**os.environ, RESTARTED_ENV: "1"}


def main(argv: list[str]) -> int:
    from filelock import FileLock, Timeout

    files = InstanceFiles(Path(argv[0]))
    name, token = argv[1], argv[2] if len(argv) > 2 else ""
    lock = FileLock(str(files.keeper_lock), mode=0o600)  # the owner's alone
    try:
        lock.acquire(timeout=5)  # `pyd status` and `pyd stop` probe it: one keeper at a time
    except Timeout:
        print("another keeper already runs for this instance", file=sys.stderr)
        return 1
    try:
        keeper = Keeper(files, name, token)
        signal.signal(signal.SIGTERM, lambda *_: keeper.request_stop())
        signal.signal(signal.SIGINT, lambda *_: keeper.request_stop())
        if sys.platform != "win32":
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return keeper.run()
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
