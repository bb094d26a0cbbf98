"""The host agent process: `python -m pyd.agent DIR`. Started detached by `pyd start`, under
its keeper; stopped by the keeper's word on stdin (what `pyd stop` asks the keeper for), by
SIGTERM, or, with no keeper left, by stop.request. It reports through agent.json."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import paramiko
import psutil
from filelock import FileLock, Timeout

from pyd.agent.clock import ClockKeeper
from pyd.agent.disk_usage import guest_disk_usage
from pyd.agent.exec_server import exec_server
from pyd.agent.health import gone, verdict
from pyd.agent.keeper import RESTARTED_ENV, STOP_WORD
from pyd.agent.session import SSHDown, SSHSession
from pyd.agent.status_file import AgentState, AgentStatus
from pyd.agent.status_file import write_status as _write_status
from pyd.config.settings import InstanceConfig
from pyd.config.store import load_config
from pyd.dns.service import HostDns, for_guest
from pyd.engine.api import GUEST_DOCKER_SOCKET
from pyd.engine.ping import wait_for_engine
from pyd.errors import PydError
from pyd.fileevents.service import FileEvents
from pyd.guestdocker.exec_protocol import exec_endpoint
from pyd.guestdocker.platforms import BINFMT_WAIT, parse_platforms
from pyd.guestdocker.platforms import COMMAND as PLATFORMS_COMMAND
from pyd.host.atomicfile import write_atomic
from pyd.host.private_files import write_private_text
from pyd.host.process_identity import identify, write_identity
from pyd.host.threads import Deadline, ThreadOwner, close_all, join_threads
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.instance.saved_state import read_mark
from pyd.instance.state import load_state
from pyd.mounts.openssh_link import find_endpoint
from pyd.mounts.sftp_host import SftpServer, choose_server
from pyd.mounts.state import MountState
from pyd.mounts.worker import MountManager
from pyd.ports.container_watch import ContainerWatch
from pyd.ports.forwards import Forward
from pyd.ports.manager import PortManager
from pyd.ports.udp_listener import open_udp_relay
from pyd.relay.endpoint import docker_endpoint, make_docker_forward
from pyd.ssh.connect import SSHTarget
from pyd.ssh.direct_tcpip import open_direct_tcpip
from pyd.ssh.link_errors import LINK_ERRORS
from pyd.ssh.openssh import known_hosts_line
from pyd.ssh.streamlocal import open_streamlocal
from pyd.vm.backends.base import VMState

log = logging.getLogger("pyd.agent")

Part = TypeVar("Part", bound=ThreadOwner)

BOOT_TIMEOUT = 300.0  # QEMU start to engine answer: far longer under software emulation
RECONNECT_WAIT = 30.0  # how long a port or exec connection waits for SSH to come back
# Once ready, a Docker connection waits for a reconnect only this long after the link was
# found dead: a blip (sshd restarted, one dropped connection) is bridged, while in a real
# outage every call is answered at once (the CLI makes up to five requests per command).
DOCKER_GRACE = 1.5
# A forwarded connection waits this long for the guest's side: a burst under emulation can take
# the guest many seconds to accept. A dead link does not make it wait (the heartbeat closes it).
CHANNEL_OPEN_WAIT = 60.0
TICK = 0.5  # the supervisor's period
# While SSH is down the VM's state is asked this often: after QEMU dies, libvirt takes a
# moment to report it, and the user should learn it within 2 s.
TICK_DOWN = 0.2
DISK_EVERY = 30.0  # the data disk's use is asked this often (seconds)
# The first questions for `pyd status` alone (platforms, disk use: each a process in the guest)
# wait this long after ready: a just-resumed guest under TCG is busy translating its code
# afresh, and the user's first docker command, which follows ready at once, comes first.
STATUS_ASKS_AFTER = 3.0
RESTORE_POLL = 0.01  # how often the agent looks whether `pyd start`'s restore is over
MOUNTS_WAIT = 60.0  # `pyd start` waits this long for the shares (slower under emulation)


CLOSE_WAIT = 5.0  # stopping: every part's threads get this long, together (pyd stop waits 10)
STOP_POLL = 0.5  # the main thread's wait for the stop event is timed: Windows runs a Ctrl+C
# handler only once a wait returns


class AgentStopped(BaseException):
    """Raised in the agent's thread when it finds the stop event set, to unwind whatever it
    was doing (BaseException: no `except Exception` on the way may swallow it)."""


class Agent:
    def __init__(
        self,
        files: InstanceFiles,
        name: str,
        launch: str,
        vm_state: Callable[[], VMState | None],
        session: SSHSession,
    ) -> None:
        self.files = files
        self.name = name
        self.vm_state = vm_state  # as the VM's backend tells it; None when it cannot
        self.session = session  # not connected yet
        self.stop = threading.Event()  # the signal handler sets it; so does the end of _body
        self._wake = threading.Event()  # the link went down or came back: look now
        self._ready = False
        self._vm: VMState | None = None  # what the supervisor last saw of the VM
        self._fatal: PydError | None = None  # from the SSH keeper: the agent must fail
        self._health_lock = threading.Lock()  # the supervisor and the SSH keeper both judge
        self.status = AgentStatus(AgentState.STARTING, os.getpid(), launch=launch)
        self._status_lock = threading.Lock()
        self._last_word = False  # stopped or failed is published: nothing may overwrite it
        self.ports: PortManager | None = None
        self.mounts: MountManager | None = None
        self.file_events: FileEvents | None = None
        self.host_dns: HostDns | None = None  # the guest's DNS through this host's resolver
        self.clock: ClockKeeper | None = None  # keeps the guest's clock on the host's
        self._parts: list[ThreadOwner] = []  # what serves: closed on the way out
        self._parts_lock = threading.Lock()
        self._closing = False  # no part may start once set
        self._config_seen = 0
        self._disk_thread: threading.Thread | None = None
        self._platforms_thread: threading.Thread | None = None
        self._thread = threading.Thread(target=self._body, name="pyd-agent", daemon=True)
        self._ended = False  # _body returned by itself (not for a stop request)
        self._crash: BaseException | None = None  # a bug in _body: re-raised by run()
        self._code = 0

    def _publish(
        self, change: Callable[[AgentStatus], AgentStatus], last_word: bool = False
    ) -> None:
        """Status changes come from several threads: one at a time. The last word (stopped
        or failed: what the keeper reads once this process is gone) is not overwritten by
        whatever a part still reports while it closes."""
        with self._status_lock:
            if self._last_word:
                return
            self._last_word = last_word
            self.status = change(self.status)
            _write_status(self.files.agent_status, self.status)

    def _check_stop(self) -> None:
        """Between and inside the startup's waits: unwinds the agent's thread once stopping."""
        if self.stop.is_set():
            raise AgentStopped()

    def _phase(self, name: str, step: Callable[[], None]) -> None:
        self._check_stop()
        self._publish(lambda s: s.begin(name))
        t0 = time.monotonic()
        step()
        self._publish(lambda s: s.finish(time.monotonic() - t0))
        log.info("%s done in %.2f s", name, time.monotonic() - t0)

    def _link_wait(self, ready_wait: float) -> float:
        """How long a new connection may wait for the SSH link: none once the VM is gone."""
        if gone(self._vm):
            return 0.0
        return ready_wait if self._ready else RECONNECT_WAIT

    def _docker_wait(self) -> float:
        return self._link_wait(max(0.0, DOCKER_GRACE - self.session.down_for()))

    def _open_docker_channel(self) -> paramiko.Channel:
        transport = self.session.transport(self._docker_wait())
        return open_streamlocal(transport, GUEST_DOCKER_SOCKET, timeout=CHANNEL_OPEN_WAIT)

    def _exec_transport(self) -> paramiko.Transport:
        """For `pyd docker` through the exec socket: like a Docker connection, told at once
        (and why) while the link is down."""
        try:
            return self.session.transport(self._docker_wait())
        except SSHDown:
            said = verdict(self._vm, self.session.down_reason)
            if said.docker:
                raise PydError(said.docker.removeprefix("pyd: "), hint=said.hint) from None
            raise

    def _docker_unreachable(self, error: Exception) -> str:
        """What a Docker client is told when its connection gets no channel to the engine."""
        said = verdict(self._vm, self.session.down_reason).docker
        detail = error.message if isinstance(error, PydError) else str(error)
        return said or f"pyd: the Docker engine in the VM cannot be reached: {detail}"

    def run(self) -> int:
        """The agent works in a thread of its own; this (main) thread only waits for the stop
        event, which the signal handler sets, then closes everything. So a stop never has to
        interrupt what the agent waits on (a boot, a reconnect): it closes what that waits on."""
        self.start()
        while not self.stop.wait(STOP_POLL):
            if self.files.stop_request.exists():  # no keeper to pass it on (it was killed)
                self.request_stop()
        if not self._ended:  # else it ended by itself, and said why unless it crashed
            log.info("stopping on request")
            self._publish(lambda s: s.to(AgentState.STOPPED), last_word=True)
        t0 = time.monotonic()
        self._close_parts()
        log.info("closed in %.2f s", time.monotonic() - t0)
        if self._crash is not None:
            raise self._crash  # a bug: a traceback and no last word, so the keeper restarts it
        return self._code

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Asks the agent's thread to end: the stop event, and a wake for the supervisor."""
        self.stop.set()
        self._wake.set()

    def join(self, deadline: Deadline) -> bool:
        asking = (self._thread, self._disk_thread, self._platforms_thread)
        return join_threads([t for t in asking if t], deadline)

    def _body(self) -> None:
        try:
            self._run()
        except AgentStopped:
            pass
        except PydError as e:
            if not self.stop.is_set():  # else a consequence of closing, not a failure
                log.error("%s", e.message)
                error = e
                self._publish(
                    lambda s: s.to(AgentState.FAILED, error.message, error.hint), last_word=True
                )
                self._code = 1
        except BaseException as e:
            self._crash = e
        finally:
            self._ended = not self.stop.is_set()
            self.stop.set()

    def _adopt(self, part: Part) -> Part:
        """Registers `part` (not started yet) to be closed on the way out; once that has
        begun, unwinds the agent's thread instead."""
        with self._parts_lock:
            if self._closing:
                raise AgentStopped()
            self._parts.append(part)
        return part

    def _close_parts(self) -> None:
        with self._parts_lock:
            self._closing = True
            parts = self._parts[::-1]  # the last started first
        # The agent's thread, the parts, then the link: a part told to stop before its link
        # goes takes the link's end for the stop it is, not for a failure to report; and
        # whatever waits for the link (a share's worker, a connection) stops waiting at once,
        # since all close first (none waits), then all are waited for.
        owners: list[ThreadOwner] = [self, *parts, self.session]
        if not close_all(owners, CLOSE_WAIT):
            late = [type(o).__name__ for o in owners if not o.join(Deadline(0))]
            log.warning("still running after %.0f s: %s", CLOSE_WAIT, ", ".join(late))

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: only sets the event the main thread waits on."""
        self.stop.set()

    def _run(self) -> int:
        deadline = time.monotonic() + BOOT_TIMEOUT
        # Chosen while the VM boots or is restored (it runs a probe process): off a warm
        # start's critical path.
        server = choose_server(sys.platform, os.environ)
        # A VM restored from its save, or one whose agent the keeper restarts, runs its
        # sshd already: the first try is a handshake, not a probe.
        restarted = os.environ.get(RESTARTED_ENV) == "1"
        resumed = self._await_restore()
        up = resumed is not None or restarted
        # The engine answered moments ago (a restart), or at the save this VM runs on from.
        engine_known = restarted or bool(resumed)
        cfg = load_config(self.files.config)
        self._config_seen = _mtime(self.files.config)
        if up:  # the shares' own SSH sessions connect alongside the agent's
            self._start_mounts(cfg, server, guest_up=True)
        self._phase("ssh", lambda: self.session.connect(deadline, self._check_vm, guest_up=up))
        self._check_stop()
        self.session.keep(
            self._link_down,
            self._link_up,
            self._link_fatal,
            lambda: self._check_health(probe=False),
        )
        self.clock = self._adopt(ClockKeeper(self.session))  # syncs now: a fresh boot or resume
        self.clock.start()
        self.host_dns = self._adopt(for_guest(self.session.transport, cfg.host_dns))
        self.host_dns.start()
        if not up:
            self._start_mounts(cfg, server)  # they mount while the engine starts
        if not engine_known:
            engine = partial(wait_for_engine, self.session.transport, deadline, self._check_stop)
            self._phase("engine", engine)
        # Once the engine answers: a resumed VM's containers answer on their published ports
        # while the shares still mount (~1 s sooner after a resume).
        self._start_ports(cfg)
        if not restarted:
            # `docker run -v "$PWD":/src` right after `pyd start` must see the host's files.
            self._phase("shares", self._wait_for_mounts)
        # else the keeper's restart of a dead agent, Docker back within 2 s: the engine answered
        # moments ago, and the dead agent's share sessions (ssh and SFTP server processes of
        # their own) serve the old mounts until the new ones replace them.
        forward = make_docker_forward(
            self.name,
            self.files.docker_sock,
            self._open_docker_channel,
            unreachable=self._docker_unreachable,
        )
        self._adopt(forward).start()
        self._start_exec_socket()
        host = docker_endpoint(self.name, self.files.docker_sock, sys.platform)
        self._ready = True
        self._vm = VMState.RUNNING
        running = VMState.RUNNING.value
        log.info("ready: %s", host)  # before it is published: whoever sees ready has the line
        self._publish(lambda s: replace(s.to(AgentState.READY), docker_host=host, vm=running))
        self._ask_platforms()
        return self._supervise()

    def _start_exec_socket(self) -> None:
        """`pyd docker` commands on this connection (a Unix socket, or a named pipe on
        Windows; see exec_server). Without it they still work, each on a connection of its
        own: a failure here is logged only."""
        endpoint = exec_endpoint(sys.platform, self.name, self.files.root)
        server = self._adopt(exec_server(endpoint, self._exec_transport))
        try:
            server.start()
        except PydError as e:  # e.g. another process holds the exec pipe's name (Windows)
            said = f"pyd docker connects to the VM by itself: {e.message}"
            log.warning("%s", said)
            self._publish(lambda s: replace(s, warnings=(*s.warnings, said)))

    def _start_mounts(
        self, cfg: InstanceConfig, server: SftpServer, guest_up: bool = False
    ) -> None:
        """`guest_up`: the guest runs already, its SSH may not (MountWorker's)."""
        target = self.session.target
        files = self.files
        write_atomic(files.known_hosts, known_hosts_line(target.port, target.host_public_key))
        self.mounts = self._adopt(
            MountManager(
                self.session.transport,
                server,
                lambda report: self._publish(lambda s: replace(s, mounts=report)),
                find_endpoint(target.port, files.client_key, files.known_hosts, os.environ),
                guest_up,
            )
        )
        self.mounts.start()
        self.mounts.set_shares(cfg.mounts)
        self.file_events = self._adopt(FileEvents(self.session.transport, sys.platform))
        self.file_events.start()
        self.file_events.set_shares(cfg.mounts, cfg.file_events_off)

    def _wait_for_mounts(self) -> None:
        """Until every share is mounted or has failed (reported, not fatal). Not for a share
        whose mount the guest kept (a resume): an access to it waits by itself until the share
        is connected again, so ready need not (~0.4 s sooner under TCG)."""
        deadline = time.monotonic() + MOUNTS_WAIT
        while any(
            m.state == MountState.MOUNTING and m.mount_point not in self._kept_mounts()
            for m in self.status.mounts
        ):
            self._check_stop()
            if time.monotonic() > deadline:
                log.warning("shares still not mounted after %.0f s; going on", MOUNTS_WAIT)
                return
            self.stop.wait(0.05)

    def _kept_mounts(self) -> set[str]:
        return self.mounts.kept() if self.mounts is not None else set()

    def _start_ports(self, cfg: InstanceConfig) -> None:
        """Published container ports and manual forwards follow the engine and config.toml."""
        self.ports = self._adopt(
            PortManager(
                self._open_tcp,
                cfg.ports_bind,
                cfg.port_forwards,
                lambda report: self._publish(lambda s: replace(s, ports=report)),
                open_udp=self._open_udp,
            )
        )
        self.ports.start()  # manual ones open now
        self._adopt(ContainerWatch(self._open_docker_channel, self._containers_changed)).start()

    def _containers_changed(self, containers: list[Mapping[str, Any]]) -> None:
        if self.ports is not None:
            self.ports.set_containers(containers)
        if self.mounts is not None:
            self.mounts.check_containers(containers)
        if self.file_events is not None:
            self.file_events.set_containers(containers)

    def _open_tcp(self, forward: Forward, origin: tuple[str, int]) -> paramiko.Channel:
        transport = self.session.transport(self._link_wait(RECONNECT_WAIT))
        # A burst of connections under emulation can take the guest many seconds to accept;
        # a client waiting that long is better served late than refused.
        guest = (forward.guest_ip, forward.guest_port)
        return open_direct_tcpip(transport, guest, origin, timeout=CHANNEL_OPEN_WAIT)

    def _open_udp(self, forward: Forward) -> paramiko.Channel:
        transport = self.session.transport(self._link_wait(RECONNECT_WAIT))
        return open_udp_relay(transport, forward, timeout=CHANNEL_OPEN_WAIT)

    def _follow_config(self) -> None:
        """`pyd port add/rm`, `pyd mount add/rm` and `pyd config set ports.bind` edit
        config.toml; apply them."""
        seen = _mtime(self.files.config)
        if seen == self._config_seen or self.ports is None or self.mounts is None:
            return
        self._config_seen = seen
        try:
            cfg = load_config(self.files.config)
        except PydError as e:
            log.error("config.toml changed but cannot be used: %s", e.message)
            return
        log.info("config.toml changed; applying port and share settings")
        self.ports.set_config(cfg.ports_bind, cfg.port_forwards)
        self.mounts.set_shares(cfg.mounts)
        if self.file_events is not None:
            self.file_events.set_shares(cfg.mounts, cfg.file_events_off)
        if self.host_dns is not None:
            self.host_dns.set_enabled(cfg.host_dns)

    def _await_restore(self) -> bool | None:
        """While `pyd start` restores the VM (it launched this agent first, so the two
        overlap): waits until the restore is over. None when there was none; else whether
        the engine answered when the VM was saved (`pyd start` says, in its marker). Not a
        connection attempt meanwhile: QEMU accepts one before the guest runs, and its SYN
        reaches the guest only at slirp's next retransmission, seconds later."""
        mark = read_mark(self.files.restoring, time.time())
        if mark is None:
            return None
        waited = time.monotonic()
        while mark is not None and not mark.done:
            self._check_stop()
            time.sleep(RESTORE_POLL)
            mark = read_mark(self.files.restoring, time.time())
        # On a warm start's critical path: up before the restore is over (the agent waited),
        # or not (0.00: the restore waited for the agent).
        log.info("the restore was over %.2f s after the agent was up", time.monotonic() - waited)
        if mark is None:  # it failed, and `pyd start` stops this agent; or it was killed
            return False
        self.files.restoring.unlink(missing_ok=True)  # read: a later agent's VM booted
        return mark.engine_ready

    def _check_vm(self) -> None:
        """While booting: raises when the VM is gone (a crashed boot fails at once), or when
        the agent is stopping."""
        self._check_stop()
        if gone(self.vm_state()):
            raise PydError(
                "the VM stopped while the agent waited for it",
                hint="see `pyd logs` (the guest console), then `pyd start`",
            )

    def _link_down(self, reason: str) -> None:
        self._wake.set()

    def _link_up(self, seconds: float) -> None:
        log.info("SSH back after %.1f s", seconds)
        if self.clock is not None:
            self.clock.request("SSH back")
        self._wake.set()

    def _link_fatal(self, error: PydError) -> None:
        self._fatal = error
        self._wake.set()

    def _supervise(self) -> int:
        """Follows config.toml, and what the SSH link and the VM say, until asked to stop.
        A VM that died stays reported (Docker clients are told to run `pyd start`) until
        `pyd start` or `pyd stop` replaces this agent."""
        last_config = last_ports = time.monotonic()
        last_disk = last_config - DISK_EVERY + STATUS_ASKS_AFTER
        while not self.stop.is_set():
            self._wake.wait(TICK_DOWN if self.session.down_reason else TICK)
            self._wake.clear()
            if self._fatal is not None:
                raise self._fatal
            self._check_health()
            now = time.monotonic()
            if now - last_config >= 1.0:
                last_config = now
                self._follow_config()
            if self.ports is not None and now - last_ports >= 5.0:
                last_ports = now
                self.ports.retry_failed()  # a port someone else held may be free now
            if now - last_disk >= DISK_EVERY:
                last_disk = now
                self._measure_disk()
        return 0

    def _measure_disk(self) -> None:
        """The data disk's use for `pyd status`, from a thread of its own: df through an
        emulated guest takes a moment, and the supervisor must not wait for it."""
        if self.session.down_reason or (self._disk_thread and self._disk_thread.is_alive()):
            return

        def measure() -> None:
            try:
                usage = guest_disk_usage(self.session.client(0))
            except (PydError, OSError):
                return
            if usage is not None:
                text = usage.describe()
                self._publish(lambda s: replace(s, data_disk=text))

        self._disk_thread = threading.Thread(target=measure, name="disk-usage", daemon=True)
        self._disk_thread.start()

    def _ask_platforms(self) -> None:
        """What the engine can run (native, and emulated through binfmt_misc) for `pyd
        status`, asked once: the guest registers its emulator at boot, beside dockerd, and the
        command waits for that. From a thread: the supervisor must not wait for it."""

        def ask() -> None:
            if self.stop.wait(STATUS_ASKS_AFTER):
                return
            try:
                client = self.session.client(RECONNECT_WAIT)  # asked once: over a blink
                _in, stdout, _err = client.exec_command(
                    PLATFORMS_COMMAND, timeout=BINFMT_WAIT + 15.0
                )
                found = parse_platforms(stdout.read().decode(errors="replace"))
            except PydError as e:
                self._platforms_unknown(e.message)
                return
            except LINK_ERRORS as e:
                self._platforms_unknown(str(e))
                return
            if found:
                self._publish(lambda s: replace(s, platforms=found))

        self._platforms_thread = threading.Thread(target=ask, name="pyd-platforms", daemon=True)
        self._platforms_thread.start()

    def _platforms_unknown(self, why: str) -> None:
        if not self.stop.is_set():  # stopping closes the link under the question
            log.info("platforms not known: %s", why)

    def _check_health(self, probe: bool = True) -> None:
        """The VM's state is asked only while the link is down: a live link proves it runs.
        QEMU's death closes the link's socket and its port at once, so a refused reconnect
        tells it (the SSH keeper calls this with `probe` False then): libvirtd, cleaning up
        after QEMU, keeps the domain's state locked for a second or two."""
        if not self._ready or self.stop.is_set():  # stopping: the link closes on purpose
            return
        down = self.session.down_reason
        vm: VMState | None
        if down and self.session.refused:
            vm = VMState.STOPPED  # QEMU's port is closed: it is gone, whatever its backend says
        elif down and probe:
            vm = self.vm_state()
            if vm is VMState.RUNNING and self.session.refused:
                vm = VMState.STOPPED
        elif down:
            return
        else:
            vm = VMState.RUNNING
        with self._health_lock:
            self._judge(down, vm)

    def _judge(self, down: str, vm: VMState | None) -> None:
        if vm is None:
            vm = self._vm  # cannot tell now: keep what was seen
        if down and vm is VMState.RUNNING and self._vm is VMState.PAUSED:
            self.session.retry_now()  # resumed: a fresh attempt gets through at once
        seen = verdict(vm, down)
        since = self.session.down_since
        status = self.status
        shown = vm.value if vm is not None else ""  # agent.json's "vm"
        self._vm = vm
        if (status.state, status.error, status.vm) == (seen.state, seen.error, shown):
            return
        if seen.state == AgentState.READY:
            log.info("ready again")
        else:
            log.warning("%s", seen.error)
        self._publish(
            lambda s: replace(
                s.to(seen.state, seen.error, seen.hint), vm=shown, link_down_since=since
            )
        )


def guest_session(files: InstanceFiles) -> SSHSession:
    """The session to the instance's guest: its SSH port and pinned host key."""
    state = load_state(files.state)
    if state is None:
        raise PydError(f"{files.state} is missing", hint="run `pyd start`")
    _client, host = instance_keys(files)
    return SSHSession(
        SSHTarget("127.0.0.1", state.ssh_port, "root", files.client_key, host.public_openssh)
    )


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _unless_refused_channel(record: logging.LogRecord) -> bool:
    """paramiko logs a channel the guest refused as an ERROR; the agent says what it means
    itself (e.g. an older image without the DNS relay's socket), so the line is left out."""
    said = record.getMessage()
    return not (said.startswith("Secsh channel") and "open FAILED" in said)


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    name = argv[1]
    launch = argv[2] if len(argv) > 2 else ""  # ties this process to its `pyd start`
    files = InstanceFiles(root)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    paramiko_log = logging.getLogger("paramiko")
    paramiko_log.setLevel(logging.WARNING)
    logging.getLogger("paramiko.transport").addFilter(_unless_refused_channel)
    _more_descriptors()
    # Interpreter and imports: part of a warm start's path to its SSH connection.
    log.info("agent process up in %.2f s", time.time() - psutil.Process().create_time())
    lock = FileLock(files.agent_lock, mode=0o600)
    try:
        # `pyd status` probes liveness by taking this lock for an instant.
        lock.acquire(timeout=5)
    except Timeout:
        log.error("another agent already runs for %s", root)
        return 1
    try:
        _record_pid(files)
        agent = Agent(files, name, launch, _vm_state_probe(name), guest_session(files))
        # The handlers only set an event: a handler runs between any two bytecodes of the main
        # thread, where anything it did could meet a lock that thread holds.
        signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
        signal.signal(signal.SIGINT, lambda *_: agent.request_stop())
        _listen_to_keeper(agent)
        return agent.run()
    finally:
        files.agent_pid.unlink(missing_ok=True)
        lock.release()


def exit_now(code: int) -> NoReturn:
    """Ends the agent's process once main() has returned: everything is closed and its last
    word written, and the interpreter's own teardown (every module and object, about 0.1 s
    with paramiko and cryptography loaded) is only time `pyd stop` waits for. The log and
    stdio are flushed first. A crash never comes here: it raises, with its traceback."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _record_pid(files: InstanceFiles) -> None:
    """agent.pid: pid and start time, so `pyd stop` never kills a process that got the pid
    after this one died."""
    me = identify(os.getpid())
    if me is None:  # cannot happen to a running process; a bare pid still reads
        write_private_text(files.agent_pid, f"{os.getpid()}\n")
    else:
        write_identity(files.agent_pid, me)


def _listen_to_keeper(agent: Agent) -> None:
    """The keeper's stop word on stdin (a pipe, after a standby's go word) wakes the agent at
    once, on every OS. End of file (the keeper killed) is not a request: the agent serves
    on. A terminal's stdin (run by hand) is left alone. os.read, not sys.stdin: nothing
    buffered, and no buffer's lock held by this daemon thread when Python exits."""
    try:
        if os.isatty(0):
            return
    except OSError:
        return

    def listen() -> None:
        try:
            while word := os.read(0, 1):
                if word == STOP_WORD:
                    agent.request_stop()
                    return
        except OSError:
            return

    threading.Thread(target=listen, name="pyd-keeper-word", daemon=True).start()


def _more_descriptors() -> None:
    """Every Docker API connection holds a descriptor: a thousand at once must not meet the
    usual soft limit of 1024 (the hard limit is the one that protects the system)."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the descriptor limit from %d: %s", soft, e)


def _vm_state_probe(name: str) -> Callable[[], VMState | None]:
    """The VM's state as its backend tells it, None when it cannot."""
    from pyd.vm.backends.choice import backend_for

    backends: list[Any] = []  # made on first use: libvirt's connection is kept and reused

    def probe() -> VMState | None:
        try:
            if not backends:
                backends.append(backend_for(name))
            state: VMState = backends[0].state()
            return state
        except Exception as e:  # a probe must not take the agent down
            log.debug("cannot tell the VM's state: %s", e)
            return None

    return probe
