"""One docker command in the guest over an SSH session ("exec" channel), as if it ran here.

- Exit code: the guest's shell reports docker's, 128+N when a signal ended it (remote.py).
- stdout and stderr: two streams, copied apart as raw bytes to the host's file descriptors.
- stdin: copied until it ends, then the channel's write side is shut (EOF in the guest), so
  `pyd docker load < img.tar` and `docker run -i` see the end. Not read when it is a
  terminal that is not used interactively (see below): the command sees EOF at once, like
  `ssh -n`, and nothing typed for the shell afterwards is swallowed.
- A terminal when stdin, stdout and stderr all are one (`pyd docker run -it ...` typed in a
  shell): a PTY in the guest with the host's TERM and size, the host terminal in raw mode
  (restored however the command ends), window changes (SIGWINCH) passed on. Ctrl-C and
  Ctrl-\\ reach the guest as bytes and its PTY makes them signals. A PTY has one output
  stream, so with any of the three redirected there is none: output stays byte-exact and
  stdout and stderr stay apart.
- Without a terminal, SIGINT, SIGQUIT, SIGTERM and SIGHUP received here are sent to docker's
  process group in the guest (a `kill` on a second channel: OpenSSH refuses "signal" requests
  for root sessions); a third Ctrl-C gives up waiting (exit 130). With one, SIGTERM or SIGHUP
  ends the session (the guest's PTY hangs up).

The same session runs in `pyd docker` itself (run_in_guest, on a connection of its own) and
in the host agent for a `pyd docker` client (GuestSession with held_by_client, on the agent's
connection, with the client's descriptors): the client then keeps the terminal and passes
its signals on (pyd.agent.exec_server).

One thread per direction with large reads (relay.pump.BUFSIZE): a large stream costs one
Python loop turn per read, not one per byte.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import paramiko

from pyd.errors import PydError
from pyd.guestdocker import terminal
from pyd.guestdocker.remote import GuestCommand, PidLine, command_line, kill_command
from pyd.guestdocker.streams import (
    FORWARDED_SIGNALS,
    INTERRUPTS_TO_GIVE_UP,
    HostStreams,
    signals_to,
    taken_signals,
)
from pyd.host.fd_io import daemon_thread, wait_for, write_all
from pyd.host.threads import Deadline, join_threads
from pyd.relay.pump import BUFSIZE, send_all
from pyd.ssh.link_errors import LINK_ERRORS

OPEN_TIMEOUT = 10.0
STDIN_STOP_WAIT = 1.0  # for the stdin copy to see the end (it only waits on stdin and a pipe)
HUNG_UP = 128 + 1  # a shell's code for SIGHUP (1 on every POSIX system)
_HANG_UP = -1  # hang_up(), queued with the signals
_RESIZE = -2  # resize(), likewise
# A shell's code for a process ended by SIGPIPE: what a local docker would get when the
# reader of its output goes away (`pyd docker save img | head -c 10`).
OUTPUT_CLOSED = 128 + 13

_CONNECTION_ERRORS = LINK_ERRORS

_SIGNAL_NAMES = {s: s.name[3:] for s in FORWARDED_SIGNALS}  # kill -s NAME
if sys.platform == "win32":
    _SIGNAL_NAMES[signal.SIGBREAK] = "TERM"


class GuestConnectionLost(PydError):
    """The session ended without docker's exit code: the connection or the guest went away."""


def run_in_guest(transport: paramiko.Transport, command: GuestCommand, streams: HostStreams) -> int:
    """Runs `command` in the guest through `transport`; returns docker's exit code.

    Signal handling needs the main thread; called from another one, signals are left to
    the caller. Raises GuestConnectionLost when no exit code came back."""
    interactive = streams.interactive()
    term = terminal.term_name(os.environ) if interactive else None
    return GuestSession(transport, command, streams, term, held_here(streams, interactive)).run()


# Who holds the host's terminal and takes the signals while the command runs: entered once
# the command has started, with the session's deliver().
HostSide = Callable[[Callable[[int], None]], AbstractContextManager[None]]


def held_here(streams: HostStreams, interactive: bool) -> HostSide:
    """This process: its terminal in raw mode (`interactive`) and its signals' handlers
    (main thread only) calling deliver()."""

    @contextlib.contextmanager
    def hold(deliver: Callable[[int], None]) -> Iterator[None]:
        raw = terminal.raw_mode(streams.stdin) if interactive else contextlib.nullcontext()
        polled = _polled_window(streams.stdout, deliver, interactive and POLL_WINDOW)
        with raw, signals_to(deliver, taken_signals(interactive)), polled:
            yield

    return hold


POLL_WINDOW = terminal.window_polled(sys.platform)


@contextlib.contextmanager
def _polled_window(fd: int, deliver: Callable[[int], None], wanted: bool) -> Iterator[None]:
    """The guest's PTY follows the terminal's size, looked at while the block runs."""
    if not wanted:
        yield
        return
    done = threading.Event()
    poller = daemon_thread(
        lambda: terminal.poll_window(lambda: terminal.size(fd), lambda _: deliver(_RESIZE), done),
        "pyd-docker-window",
    )
    try:
        yield
    finally:
        done.set()
        poller.join()


def held_by_client(started: Callable[[], None]) -> HostSide:
    """A `pyd docker` client of the agent, which holds both itself: `started()` tells it
    that the command runs; it passes the signals it receives to deliver(), and hang_up()
    ends the command once it has gone."""

    @contextlib.contextmanager
    def hold(_deliver: Callable[[int], None]) -> Iterator[None]:
        started()
        yield

    return hold


class GuestSession:
    """One docker command in the guest. With `term`, in a PTY announced as that terminal
    type; `host_side` holds the host's terminal and signals meanwhile."""

    def __init__(
        self,
        transport: paramiko.Transport,
        command: GuestCommand,
        streams: HostStreams,
        term: str | None,
        host_side: HostSide,
        window: Callable[[], tuple[int, int]] | None = None,
        stdin: QueuedStdin | None = None,
    ) -> None:
        self._transport = transport
        self._queued_stdin = stdin  # given instead of read from streams.stdin
        # The terminal's size: the one on stdout, or what a framed client of the agent said.
        self._window = window or (lambda: terminal.size(self._streams.stdout))
        self._host_side = host_side
        # Cleared while the client is stopped (Ctrl-Z): no output, no input, as with a
        # stopped ssh.
        self._flowing = threading.Event()
        self._flowing.set()
        self._command = command
        self._streams = streams
        self._term = term
        self._interactive = term is not None
        self._chan: paramiko.Channel | None = None
        # What signal handlers ask for: they may only queue (SimpleQueue.put is reentrant).
        self._signals_received: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ended_with: int | None = None  # our exit code when we ended the session
        self._failure: BaseException | None = None
        self._pid: int | None = None
        self._pid_read = threading.Event()
        self._interrupts = 0

    def deliver(self, signum: int) -> None:
        """Acts on `signum` as if this process had received it."""
        self._signals_received.put(signum)

    def resize(self) -> None:
        """The terminal's size changed (`window` says it): the guest's PTY follows."""
        self._signals_received.put(_RESIZE)

    def hang_up(self) -> None:
        """Ends the command for a client that has gone (killed, or the agent stopping).
        With a terminal, as a closed terminal would: the guest's PTY hangs up. Without one,
        as `kill -9` of a local docker CLI would: its process group in the guest is killed
        (closing the channel would leave it running until it next writes)."""
        with self._lock:
            started = self._chan is not None
            if not started and self._ended_with is None:
                self._ended_with = HUNG_UP
        if started:
            self._signals_received.put(_HANG_UP)

    def run(self) -> int:
        chan = self._transport.open_session(timeout=OPEN_TIMEOUT)
        with self._lock:
            self._chan = chan
            ended = self._ended_with is not None  # hung up before it started
        try:
            if ended:
                return self._ended_with or 0
            if self._term is not None:
                columns, rows = self._window()
                chan.get_pty(self._term, columns, rows)
            chan.exec_command(
                command_line(
                    self._command,
                    report_pid=not self._interactive,
                    terminal=self._interactive,
                )
            )
            with self._host_side(self.deliver):
                status = self._copy_until_exit(chan)
        finally:
            chan.close()
        if self._failure is not None:
            raise self._failure
        if self._ended_with is not None:
            return self._ended_with
        if status < 0:
            raise GuestConnectionLost(
                "the SSH session to the guest ended before docker did (no exit code came back)",
                hint="check the instance with `pyd status`; the command may have run or not",
            )
        return status

    # -- the streams ----------------------------------------------------------------------

    def _copy_until_exit(self, chan: paramiko.Channel) -> int:
        controller = daemon_thread(self._serve_signals, "pyd-docker-signals")
        stdout = daemon_thread(
            lambda: self._copy_out(chan.recv, self._streams.stdout), "pyd-docker-out"
        )
        stderr = daemon_thread(self._copy_err, "pyd-docker-err")
        feed = _StdinFeed(
            self._streams.stdin,
            chan,
            self._reads_stdin(),
            self._fail,
            self._flowing,
            self._queued_stdin,
        )
        feed.start()
        try:
            status: int = chan.recv_exit_status()  # also returns when the channel closes
            stdout.join()
            stderr.join()
        finally:
            chan.close()  # first: it also ends a stdin copy blocked on the guest's window
            feed.close()
            feed.join(Deadline(STDIN_STOP_WAIT))
            self._signals_received.put(None)
            controller.join()
        return status

    def _reads_stdin(self) -> bool:
        if self._queued_stdin is not None:
            return True  # its giver decides (a framed client sends a terminal's end only)
        return self._interactive or not os.isatty(self._streams.stdin)

    def _copy_out(self, recv: Callable[[int], bytes], fd: int) -> None:
        try:
            while data := recv(BUFSIZE):
                self._flowing.wait()
                write_all(fd, data)
        except OSError:
            self._end(OUTPUT_CLOSED)  # the host side stopped reading
        except BaseException as e:
            self._fail(e)

    def _copy_err(self) -> None:
        assert self._chan is not None
        recv = self._chan.recv_stderr
        if not self._interactive:
            try:
                self._skip_pid_line(recv)
            except OSError:
                self._end(OUTPUT_CLOSED)
                return
            except BaseException as e:
                self._fail(e)
                return
            finally:
                self._pid_read.set()
        self._copy_out(recv, self._streams.stderr)

    def _skip_pid_line(self, recv: Callable[[int], bytes]) -> None:
        """Copies stderr until the guest's shell has told its pid (see remote.py)."""
        search = PidLine()
        while not search.done:
            data = recv(BUFSIZE)
            if not data:
                write_all(self._streams.stderr, search.rest())
                return
            write_all(self._streams.stderr, search.feed(data))
            self._pid = search.pid

    # -- ending it, signals -------------------------------------------------------------

    def _end(self, code: int) -> None:
        """Ends the session now, with `code` as pyd's exit code (the first one wins)."""
        with self._lock:
            if self._ended_with is None:
                self._ended_with = code
        self._flowing.set()  # a paused copy would never see the end
        chan = self._chan
        if chan is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                chan.close()

    def _fail(self, e: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = e
        self._end(1)

    def _serve_signals(self) -> None:
        """Acts on the signals received, off the main thread: a handler runs between two
        bytecodes of whatever the main thread does, maybe while it holds a paramiko lock."""
        while (signum := self._signals_received.get()) is not None:
            try:
                self._handle_signal(signum)
            except _CONNECTION_ERRORS:
                pass  # the session is ending anyway
            except BaseException as e:
                self._fail(e)

    def _handle_signal(self, signum: int) -> None:
        chan = self._chan
        assert chan is not None
        if signum == _HANG_UP:
            if not self._interactive and self._pid_read.wait(OPEN_TIMEOUT) and self._pid:
                self._send_signal("KILL", self._pid)
            self._end(HUNG_UP)
            return
        if signum == _RESIZE or (sys.platform != "win32" and signum == signal.SIGWINCH):
            if self._interactive:
                chan.resize_pty(*self._window())
            return
        if sys.platform != "win32" and signum in (signal.SIGTSTP, signal.SIGCONT):
            # Only from a client of the agent (see pyd.guestdocker.agent_link); a stopped
            # process of our own stops its copying by itself.
            if signum == signal.SIGTSTP and self._ended_with is None:
                self._flowing.clear()
            else:
                self._flowing.set()
            return
        if self._interactive:
            self._end(128 + signum)  # the guest's PTY hangs up: SIGHUP there
            return
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts >= INTERRUPTS_TO_GIVE_UP:
                self._end(128 + signum)
                return
        self._pid_read.wait(OPEN_TIMEOUT)
        if self._pid is None:
            self._end(128 + signum)  # nothing to send it to: stop waiting, as ssh does
            return
        self._send_signal(_SIGNAL_NAMES.get(signal.Signals(signum), "TERM"), self._pid)

    def _send_signal(self, name: str, pgid: int) -> None:
        """`kill` docker's process group in the guest: what sshd's killpg would do for a
        "signal" request, which OpenSSH refuses for root ("session signalling requires
        privilege separation")."""
        chan = self._transport.open_session(timeout=OPEN_TIMEOUT)
        try:
            chan.exec_command(kill_command(name, pgid))
            chan.recv_exit_status()
        finally:
            chan.close()


class QueuedStdin:
    """A session's stdin given piece by piece instead of read from a descriptor: a framed
    client's, which the agent receives as frames (pyd.agent.exec_server). A read waits on a
    queue, which stop() wakes on every OS: a read from a pipe cannot be woken on Windows,
    and would outlast its command (and hold up the agent's end of it) until the client sent
    more. `taken(n)` is called as the session takes each piece (the client's credit)."""

    def __init__(self, taken: Callable[[int], None]) -> None:
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._taken = taken
        self._stopped = False

    def put(self, data: bytes) -> None:
        if data:
            self._pieces.put(data)

    def end(self) -> None:
        """No more input: the command reads its end after what came before."""
        self._pieces.put(b"")

    def stop(self) -> None:
        """The command has ended: a read waiting now or made later returns None."""
        self._pieces.put(None)

    def read(self) -> bytes | None:
        """The next piece, b"" at the end of input, None once stopped."""
        if self._stopped:
            return None
        data = self._pieces.get()
        if data is None:
            self._stopped = True
        elif data:
            self._taken(len(data))
        return data


class _StdinFeed:
    """Copies the host's stdin (or `queued` pieces) to the channel until it ends (then EOF to
    the guest), or only sends EOF when `reads` is False; input waits while `flowing` is
    clear. A ThreadOwner (pyd.host.threads): close() ends the copy when the command has
    ended: for a descriptor on POSIX through a pipe the reader also waits on, so that
    nothing typed afterwards is taken from the terminal; for `queued`, by stop(). A
    descriptor's reader on Windows (no waiting on pipes) is left behind, blocked, to end
    with the process: only `pyd docker` itself reads one there, the agent's sessions are
    queued. The wake pipe is closed by whichever of join() and the reader finishes last
    (the agent runs many commands: a reader stuck in a send must not leak it)."""

    def __init__(
        self,
        fd: int,
        chan: paramiko.Channel,
        reads: bool,
        fail: Callable[[BaseException], None],
        flowing: threading.Event,
        queued: QueuedStdin | None = None,
    ) -> None:
        self._fd = fd
        self._queued = queued
        self._chan = chan
        self._reads = reads
        self._fail = fail
        self._flowing = flowing
        self._wake: tuple[int, int] | None = None
        self._holders = 2  # join() and the reader
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self._reads:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                self._chan.shutdown_write()
            return
        if sys.platform != "win32" and self._queued is None:
            self._wake = os.pipe()
        self._thread = daemon_thread(self._copy, "pyd-docker-in")

    def _copy(self) -> None:
        try:
            while self._readable():
                data = os.read(self._fd, BUFSIZE) if self._queued is None else self._queued.read()
                if data is None:
                    return  # stopped: the command has ended
                if not data:
                    self._chan.shutdown_write()
                    return
                send_all(self._chan, data)
        except _CONNECTION_ERRORS:
            # The channel closed (the command ended first), or stdin failed (a terminal that
            # hung up): either way the guest gets no more input.
            with contextlib.suppress(*_CONNECTION_ERRORS):
                self._chan.shutdown_write()
        except BaseException as e:
            self._fail(e)
        finally:
            self._release()

    def _readable(self) -> bool:
        """Waits for input; False once stop() was called."""
        self._flowing.wait()
        if self._wake is None:
            return True
        return self._wake[0] not in wait_for([self._fd, self._wake[0]], [])

    def close(self) -> None:
        if self._queued is not None:
            self._queued.stop()
        elif self._wake is not None and self._thread is not None:
            os.write(self._wake[1], b"x")

    def join(self, deadline: Deadline) -> bool:
        if self._thread is None:
            return True
        if self._wake is None and self._queued is None:  # Windows: left behind (see above)
            return not self._thread.is_alive()
        ended = join_threads([self._thread], deadline)
        self._release()
        return ended

    def _release(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last and self._wake is not None:
            for fd in self._wake:
                os.close(fd)



