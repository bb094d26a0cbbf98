"""The agent's shares: one worker per share keeps it mounted in the guest over SSH.

With the system's ssh on a POSIX host a share reconnects (pyd.mounts.sshfs): the worker's
OpenSSH session binds the share's socket in the guest to a host socket whose every
connection gets its own SFTP server process (pyd.mounts.forward_link), and mounts sshfs as a
daemon there once; when the session ends (SSH dropped, the VM resumed) the mount and the
containers' binds of it stay, and the next session binds the socket again. A guest image
older than that is mounted the other way.

Otherwise the worker runs `sshfs -o slave` in the guest on an exec channel and serves SFTP on
the host end (pyd.mounts.sftp_host chooses the server and confines it to the share): with the
system's ssh (Windows), an OpenSSH session of its own piped straight to the server process
(pyd.mounts.openssh_link says why); else a channel of the agent's connection, on which the
built-in server answers in the agent, or a confined sftp-server's bytes are relayed. When the
session ends the mount ends with it, and the worker mounts again once SSH is back.

Meanwhile the share is "mounting". Config changes (`pyd mount add/rm`) start and stop
workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import paramiko

from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.mounts.binds import binds_on
from pyd.mounts.forward_link import ForwardedSession, ShareSocket
from pyd.mounts.openssh_link import OpenSSHEndpoint, OpenSSHLink
from pyd.mounts.sftp_host import ProcessStream, SftpServer, remote_path
from pyd.mounts.shares import Share
from pyd.mounts.sshfs import (
    MOUNTED,
    NO_CONNECTOR,
    access_options,
    attach_command,
    guest_socket,
    mount_command,
    unmount_command,
    wait_mounted_command,
)
from pyd.mounts.state import MountState, MountStatus
from pyd.relay.pump import Relay
from pyd.ssh.link_errors import LINK_ERRORS

_SHARE_ERRORS: tuple[type[Exception], ...] = (PydError, *LINK_ERRORS)

log = logging.getLogger("pyd.agent")

MOUNT_WAIT = 60.0  # sshfs start to mounted: a second or so under emulation, far more if busy
RETRY_FIRST, RETRY_MAX = 1.0, 10.0  # back-off between attempts that failed
SSH_WAIT = 5.0  # a worker asks for SSH this often while it is down (the supervisor reconnects)
UNMOUNT_WAIT = 30.0  # for `umount` of a removed share in the guest
UNMOUNT_SSH_WAIT = 1.0  # that unmount is best effort: it waits this little for SSH
STOP_WAIT = 10.0  # a removed share's worker gets this long to stop before the unmount
LINK_STOP_WAIT = 5.0  # an OpenSSH session's processes get this long to exit after close

RECONNECT_ENV = "PYD_SHARE_RECONNECT"

OpenTransport = Callable[[float], paramiko.Transport]
Report = Callable[[tuple[MountStatus, ...]], None]


class MountWorker:
    """Keeps one share mounted until closed: a thread owner (pyd.host.threads)."""

    def __init__(
        self,
        share: Share,
        transport: OpenTransport,
        server: SftpServer,
        changed: Callable[[], None],
        openssh: OpenSSHEndpoint | None = None,
        guest_up: bool = False,
    ) -> None:
        self.share = share
        self._transport = transport
        self._server = server.for_share(share.location)
        if self._server.note and not server.note:
            log.warning("share %s: %s; the built-in SFTP server serves it", share.location,
                        self._server.note)  # fmt: skip
        self._changed = changed
        self._openssh = openssh  # the system's ssh carries the share when there is one
        self._reconnecting = reconnects(openssh is not None, sys.platform, os.environ)
        self._socket: ShareSocket | None = None  # a reconnecting share's, made at first use
        # The guest runs already (restored from a save, or the agent restarted): a
        # reconnecting share's session needs nothing of the agent's connection, so its first
        # attempt runs alongside the agent's own SSH handshake rather than after it.
        self._early = guest_up and self._reconnecting
        self._guest_up = guest_up
        self.state = MountState.MOUNTING
        self.detail = "waiting for SSH"
        self._closed = threading.Event()
        self._session: paramiko.Channel | OpenSSHLink | ForwardedSession | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"mount {share.mount_point}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def kept(self) -> bool:
        """The guest's mount outlived the agent (pyd.mounts.sshfs, reconnect): a resumed
        guest's sshfs still has it, and an access waits until this share's new session
        lets sshfs connect again. False once the image proves unable (no connector)."""
        return self._guest_up and self._reconnecting

    def status(self) -> MountStatus:
        s = self.share
        return MountStatus(s.location, s.mount_point, s.writable, self.state, self.detail)

    def close(self) -> None:
        """Asks the worker to stop (no wait). A slave sshfs sees the end of its input and
        unmounts; a reconnecting one stays for the next agent (unmount() takes it away); a
        VM that is going away takes the mount with it."""
        self._closed.set()
        with self._lock:
            session = self._session
        if session is not None:
            session.close()

    def join(self, deadline: Deadline) -> bool:
        return join_threads([self._thread], deadline)

    def unmount(self) -> None:
        """Takes the mount away in the guest, for a share the user removed: after close and
        join, in case sshfs left it behind. Best effort: a guest out of reach is let be."""
        command = unmount_command(self.share.mount_point)
        with contextlib.suppress(*_SHARE_ERRORS):
            _exec(self._transport(UNMOUNT_SSH_WAIT), command, UNMOUNT_WAIT)

    def _set(self, state: MountState, detail: str = "") -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self._changed()

    def _run(self) -> None:
        try:
            self._keep_mounted()
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket.join(Deadline(LINK_STOP_WAIT))

    def _keep_mounted(self) -> None:
        delay = RETRY_FIRST
        while not self._closed.is_set():
            started = time.monotonic()
            try:
                transport = None if self._early else self._transport(SSH_WAIT)
            except PydError:
                self._closed.wait(1.0)
                continue
            self._early = False
            try:
                self._mount_and_serve(transport)
                problem = "the guest's sshfs stopped"
            except _SHARE_ERRORS as e:
                problem = e.message if isinstance(e, PydError) else str(e) or type(e).__name__
            if self._closed.is_set():
                return
            if self._ssh_up(transport):
                # SSH is up, so this attempt itself failed: say why, and back off.
                log.warning("share %s: %s", self.share.mount_point, problem)
                self._set(MountState.FAILED, problem)
                if time.monotonic() - started > 60:
                    delay = RETRY_FIRST  # it was up for a while: a fresh failure
                self._closed.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
            else:
                self._set(MountState.MOUNTING, "waiting for SSH")
                delay = RETRY_FIRST

    def _ssh_up(self, transport: paramiko.Transport | None) -> bool:
        """The agent's SSH is up now (`transport`: the one an attempt used, if any)."""
        if transport is None:
            try:
                transport = self._transport(0)
            except PydError:
                return False
        return bool(transport.is_active())

    def _mount_and_serve(self, transport: paramiko.Transport | None) -> None:
        """One mount: blocks while it lasts. Raises when it could not be made. `transport`:
        the agent's connection, None when not waited for (a reconnecting share needs none)."""
        self._set(MountState.MOUNTING, "")
        if self._reconnecting:
            self._attach()
            if self._reconnecting:
                return
        if transport is None:  # the guest's image cannot reconnect: mounted the slave way
            transport = self._transport(SSH_WAIT)
        share = self.share
        command = mount_command(
            remote_path(share.location, sys.platform),
            share.mount_point,
            share.writable,
            access_options(_host_euid()),
        )
        session: paramiko.Channel | OpenSSHLink
        if self._openssh is not None:
            session = OpenSSHLink(
                self._openssh.argv(command), self._server.argv(share.location, share.writable)
            )
        else:
            session = transport.open_session(timeout=30)
        with self._lock:
            if self._closed.is_set():  # close() came first: it cannot see this session
                session.close()
                return
            if isinstance(session, OpenSSHLink):
                session.start()
            self._session = session
        try:
            waiter = threading.Thread(
                target=self._await_mounted, args=(transport, session), daemon=True
            )
            if isinstance(session, OpenSSHLink):
                waiter.start()
                session.wait()
                why = session.ended()
            else:
                session.exec_command(command)
                waiter.start()
                self._serve(session)
                why = _ended(session)
            waiter.join(timeout=1)
            if not self._closed.is_set():
                raise PydError(why)
        finally:
            with self._lock:
                self._session = None
            session.close()
            if isinstance(session, OpenSSHLink):
                session.join(Deadline(LINK_STOP_WAIT))

    def _attach(self) -> None:
        """One session of a reconnecting share: blocks while it lasts; raises when it ends
        unasked. Clears _reconnecting when the guest image cannot (no connector)."""
        share = self.share
        assert self._openssh is not None
        if self._socket is None:
            self._socket = ShareSocket(self._server.argv(share.location, share.writable))
            self._socket.start()
        command = attach_command(
            remote_path(share.location, sys.platform),
            share.mount_point,
            share.writable,
            access_options(_host_euid()),
        )
        argv = self._openssh.forward_argv(
            command, guest_socket(share.mount_point), self._socket.path
        )
        session = ForwardedSession(argv)
        with self._lock:
            if self._closed.is_set():
                return
            session.start()
            self._session = session
        try:
            if session.readline() == MOUNTED and not self._closed.is_set():
                log.info("share %s mounted at %s", share.location, share.mount_point)
                self._set(MountState.MOUNTED)
            while session.readline() is not None:
                pass
            code = session.wait()
            if code == NO_CONNECTOR:
                log.warning(
                    "share %s: the guest image has no share connector (it predates this pyd): "
                    "mounted so that a dropped link or a resume ends it; `pyd upgrade` "
                    "brings the image that keeps it",
                    share.mount_point,
                )
                self._reconnecting = False
                return
            if not self._closed.is_set():
                raise PydError(session.ended())
        finally:
            with self._lock:
                self._session = None
            session.close()
            session.join(Deadline(LINK_STOP_WAIT))

    def _serve(self, chan: paramiko.Channel) -> None:
        share = self.share
        if self._server.builtin:
            from pyd.mounts.sftp_server import serve_sftp  # paramiko's SFTP classes: lazily

            serve_sftp(chan, share.location, share.writable)
        else:
            server = ProcessStream(self._server.argv(share.location, share.writable))
            Relay(server, chan, "sftp").run()

    def _await_mounted(
        self, transport: paramiko.Transport, session: paramiko.Channel | OpenSSHLink
    ) -> None:
        try:
            code = _exec(transport, wait_mounted_command(self.share.mount_point, MOUNT_WAIT))
        except _SHARE_ERRORS:
            return  # the connection went; the worker's own session ends too
        ended = not session.running() if isinstance(session, OpenSSHLink) else session.closed
        if ended or self._closed.is_set():
            return
        if code == 0:
            log.info("share %s mounted at %s", self.share.location, self.share.mount_point)
            self._set(MountState.MOUNTED)
        else:
            self._set(MountState.FAILED, f"not mounted after {MOUNT_WAIT:.0f} s")
            session.close()


def _serves(worker: MountWorker) -> bool:
    return worker.state == MountState.MOUNTED or (
        worker.kept and worker.state == MountState.MOUNTING
    )


def reconnects(openssh: bool, platform: str, env: Mapping[str, str]) -> bool:
    """Whether a share reconnects (pyd.mounts.sshfs): it needs the system's ssh for the
    socket forward, and a host with Unix sockets that a server process can take as its
    stdio (not Windows). PYD_SHARE_RECONNECT=no mounts the slave way: faster on small files
    (one process fewer on each request's way in the guest), but a dropped link or a resume
    leaves containers' binds dead."""
    return openssh and platform != "win32" and env.get(RECONNECT_ENV, "").strip() != "no"


def _host_euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _ended(chan: paramiko.Channel) -> str:
    """Why the guest's side of a mount ended: sshfs's exit status and last words."""
    err = b""
    with contextlib.suppress(*LINK_ERRORS):
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(4096)
    code = chan.exit_status if chan.exit_status_ready() else None
    text = " ".join(err.decode(errors="replace").split())[-300:]
    how = f"sshfs exited with status {code}" if code is not None else "the SFTP stream ended"
    return f"{how}: {text}" if text else how


def _exec(transport: paramiko.Transport, command: str, timeout: float = MOUNT_WAIT + 30) -> int:
    chan = transport.open_session(timeout=30)
    try:
        chan.settimeout(timeout)
        chan.exec_command(command)
        return int(chan.recv_exit_status())
    finally:
        chan.close()


class MountManager:
    """The workers for the configured shares: a thread owner (pyd.host.threads)."""

    def __init__(
        self,
        transport: OpenTransport,
        server: SftpServer,
        report: Report,
        openssh: OpenSSHEndpoint | None = None,
        guest_up: bool = False,
    ) -> None:
        self._transport = transport
        self._server = server
        self._report = report
        self._openssh = openssh
        self._guest_up = guest_up  # MountWorker's: the guest runs before the agent's SSH is up
        self._workers: dict[Share, MountWorker] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self._lock = threading.RLock()
        self._closed = False
        self._stopping: list[MountWorker] = []  # closed by close(), joined by join()
        if server.note:
            log.warning("%s; the built-in SFTP server serves the shares instead", server.note)
        over = f"{openssh.ssh} sessions" if openssh else "the agent's SSH"
        log.info("shares are served by %s over %s", server.describe(), over)

    def start(self) -> None:
        """Nothing runs yet: set_shares starts a worker for each share."""

    def set_shares(self, shares: Iterable[Share]) -> None:
        """Starts a worker for each new share; stops those of shares no longer wanted and
        unmounts them in the guest (blocks meanwhile)."""
        wanted = list(shares)
        with self._lock:
            if self._closed:
                return
            gone = [w for s, w in self._workers.items() if s not in wanted]
            for worker in gone:
                del self._workers[worker.share]
            for share in wanted:
                if share not in self._workers:
                    worker = MountWorker(
                        share,
                        self._transport,
                        self._server,
                        self._publish,
                        self._openssh,
                        self._guest_up,
                    )
                    self._workers[share] = worker
                    worker.start()
        for worker in gone:
            log.info("share %s removed; unmounting", worker.share.mount_point)
            worker.close()
        deadline = Deadline(STOP_WAIT)
        for worker in gone:
            worker.join(deadline)
            worker.unmount()
        self._publish()

    def kept(self) -> set[str]:
        """Mount points whose guest mount outlived the agent (MountWorker.kept)."""
        with self._lock:
            return {s.mount_point for s, w in self._workers.items() if w.kept}

    def check_containers(self, containers: list[Mapping[str, Any]]) -> None:
        """Logs, once per container and share, a running container that bind-mounts a path of
        a share that is not mounted: it sees the guest's empty directory, not the host's."""
        with self._lock:  # a kept mount being connected again serves (its accesses wait)
            down = [w.status() for w in self._workers.values() if not _serves(w)]
        found = binds_on(containers, [s.mount_point for s in down])
        self._warned &= set(found)  # one whose share came back may warn again when it goes
        for name, source, share in found:
            if (name, source, share) in self._warned:
                continue
            self._warned.add((name, source, share))
            why = next((s.detail for s in down if s.mount_point == share), "") or "not mounted"
            log.error(
                "container %s uses %s, but the share %s is not mounted (%s): it sees an empty "
                "directory; restart the container once `pyd mount ls` shows the share mounted",
                name,
                source,
                share,
                why,
            )

    def close(self) -> None:
        """Stops every worker (no wait), leaving the mounts to the VM's shutdown; no share
        is set after this."""
        with self._lock:
            self._closed = True
            self._stopping += self._workers.values()
            self._workers = {}
            stopping = list(self._stopping)
        for worker in stopping:
            worker.close()

    def join(self, deadline: Deadline) -> bool:
        with self._lock:
            stopping = list(self._stopping)
        return all([worker.join(deadline) for worker in stopping])

    def _publish(self) -> None:
        with self._lock:
            report = tuple(w.status() for w in self._workers.values())
        self._report(report)
