"""Every file name inside an instance directory, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OS_DISK = "os.qcow2"  # overlay on the image's read-only rootfs.qcow2
DATA_DISK = "data.qcow2"  # Docker's state; survives OS disk replacement
SEED_ISO = "seed.iso"
SERIAL_LOG = "serial.log"
QEMU_PID = "qemu.pid"
QMP_SOCK = "qmp.sock"  # direct-QEMU backend: clean poweroff via QMP
QEMU_PROC = "qemu.proc"  # direct QEMU started detached (Windows): its pid + start time
QEMU_LOG = "qemu.log"  # detached QEMU's own output (its errors)
QMP_PORT = "qmp.port"  # QMP over loopback TLS (Windows): the port
QMP_TLS = "qmp-tls"  # its CA, server and client certificates and keys
QEMU_ARGV = "qemu.argv.json"  # direct QEMU's command line at boot: a resume starts the same
CLIENT_KEY = "ssh/id_ed25519"
HOST_KEY = "ssh/host_ed25519"
KNOWN_HOSTS = "ssh/known_hosts"  # the pinned guest key, for the system ssh (`pyd ssh`)
CONFIG = "config.toml"  # the user's settings (`pyd config`)
STATE = "state.json"  # what pyd chose at first start: SSH port, image
ARCH = "arch"  # the guest arch asked at the first start (state.json waits for the boot)
START_LOCK = "start.lock"  # one start/stop/delete at a time
AGENT_PID = "agent.pid"
AGENT_LOG = "agent.log"
AGENT_STATUS = "agent.json"  # the agent's status, read by `pyd start` and `pyd status`
AGENT_LOCK = "agent.lock"  # held by the running agent: at most one per instance
KEEPER_STATUS = "keeper.json"  # the agent's keeper (agent/keeper.py): pid, restarts
KEEPER_LOCK = "keeper.lock"  # held by the running keeper
STOP_REQUEST = "stop.request"  # `pyd stop` asks keeper and agent to stop (Windows has no SIGTERM)
DOCKER_SOCK = "sock/docker.sock"  # in its own 0700 directory
EXEC_SOCK = "sock/exec.sock"  # `pyd docker` commands run by the agent (agent/exec_server.py)
SUSPEND_SAVE = "suspend.save"  # `pyd suspend`: the VM's memory and device state
SUSPEND_RECORD = "suspend.json"  # what it was booted with, its disks (instance/saved_state.py)
SUSPEND_FAILED = "suspend.save.failed"  # a save that must not be restored, kept aside
# While `pyd start` restores a save, the agent it launched already waits for the VM (the
# lifecycle/agent_proc.py launch around a restore): the VM may not run yet.
RESTORING = "restoring"


class _File:
    """A path inside the instance directory, as a typed read-only attribute."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, files: InstanceFiles, owner: type | None = None) -> Path:
        return files.root / self.name


@dataclass(frozen=True)
class InstanceFiles:
    root: Path

    os_disk = _File(OS_DISK)
    data_disk = _File(DATA_DISK)
    seed_iso = _File(SEED_ISO)
    serial_log = _File(SERIAL_LOG)
    qemu_pid = _File(QEMU_PID)
    qmp_sock = _File(QMP_SOCK)
    qemu_proc = _File(QEMU_PROC)
    qemu_log = _File(QEMU_LOG)
    qmp_port = _File(QMP_PORT)
    qmp_tls = _File(QMP_TLS)
    qemu_argv = _File(QEMU_ARGV)
    client_key = _File(CLIENT_KEY)
    host_key = _File(HOST_KEY)
    known_hosts = _File(KNOWN_HOSTS)
    config = _File(CONFIG)
    state = _File(STATE)
    arch = _File(ARCH)
    start_lock = _File(START_LOCK)
    agent_pid = _File(AGENT_PID)
    agent_log = _File(AGENT_LOG)
    agent_status = _File(AGENT_STATUS)
    agent_lock = _File(AGENT_LOCK)
    keeper_status = _File(KEEPER_STATUS)
    keeper_lock = _File(KEEPER_LOCK)
    stop_request = _File(STOP_REQUEST)
    docker_sock = _File(DOCKER_SOCK)
    exec_sock = _File(EXEC_SOCK)
    suspend_save = _File(SUSPEND_SAVE)
    suspend_record = _File(SUSPEND_RECORD)
    suspend_failed = _File(SUSPEND_FAILED)
    restoring = _File(RESTORING)
