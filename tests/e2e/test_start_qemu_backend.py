"""`backend = "qemu"`: the same lifecycle without libvirt, as on Windows and on Macs without
libvirt. Twice: QEMU as a daemon with a pidfile and a QMP socket (POSIX), and the Windows
path forced here (PYD_QEMU_LAUNCH=detached, PYD_QMP=tls): QEMU detached with its identity
recorded, its monitor on loopback TCP behind mutual TLS, which unauthenticated clients
cannot use and which powers the guest off; a guest deaf to the power button is killed after
the timeout, and pyd says so. (`pyd stop` of a running detached QEMU: test_mounts.py.)"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import stat
import time
from pathlib import Path

import pytest

from pyd.host.process_identity import ProcessIdentity, is_running, read_identity
from pyd.host.procs import end_process, pid_alive
from pyd.image.cache import CachedImage
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.qemu_process import QemuProcessBackend
from tests.e2e.backend_param import qmp
from tests.e2e.pydcli import PydEnv

NAME = "direct"
WIN_NAME = "directw"


def _qemu_pid(env: PydEnv) -> int:
    return int((env.home / "instances" / NAME / "qemu.pid").read_text())


def test_qemu_backend_starts_restarts_and_powers_off_cleanly(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    env.pyd("config", "set", "--create", "backend", "qemu", "-n", NAME)
    try:
        t0 = time.monotonic()
        env.pyd("start", "-n", NAME, "--no-context")
        started = time.monotonic() - t0
        st = env.status(NAME)
        assert (st["backend"], st["state"]) == ("qemu", "running")
        assert f"pyd-{NAME}" not in env.docker("context", "ls", "--format", "{{.Name}}").stdout
        host = st["docker_host"]
        assert env.docker("-H", host, "version", "--format", "{{.Server.Version}}").stdout.strip()
        first = _qemu_pid(env)

        env.pyd("restart", "-n", NAME)
        second = _qemu_pid(env)
        assert second != first and not pid_alive(first) and pid_alive(second)
        assert env.status(NAME)["state"] == "running"
        # QEMU's own files too (serial log, pidfile, QMP socket): the owner's alone.
        root = env.home / "instances" / NAME
        modes = {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}
        assert modes == {name: 0o700 if (root / name).is_dir() else 0o600 for name in modes}
        assert {"serial.log", "qemu.pid", "qmp.sock"} <= set(modes)

        t0 = time.monotonic()
        env.pyd("stop", "-n", NAME)
        stopped = time.monotonic() - t0
        assert stopped < 50, "the guest did not power off through QMP"
        assert not pid_alive(second)
        assert env.status(NAME)["state"] == "stopped"
        print(
            json.dumps({"daemonize_unix_start_s": round(started, 1), "stop_s": round(stopped, 1)})
        )
    finally:
        env.pyd("delete", "-f", "-n", NAME, check=False)
        pidfile = env.home / "instances" / NAME / "qemu.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path(pidfile).read_text()), signal.SIGKILL)
    assert not (env.home / "instances" / NAME).exists()


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def _identity(root: Path) -> ProcessIdentity:
    identity = read_identity(root / "qemu.proc")
    assert identity is not None, "no QEMU identity recorded"
    return identity


def _intruders_get_nothing(port: int, ca: Path) -> None:
    """Another local user's tries, without the client key: plain TCP QMP, then TLS with no
    client certificate. Neither sees a greeting; `quit` is not obeyed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n')
        with contextlib.suppress(OSError):
            assert b"QMP" not in s.recv(4096)
    context = ssl.create_default_context(cafile=str(ca))  # trusts QEMU, presents no cert
    got = b""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with raw, contextlib.suppress(OSError):  # the handshake fails, or the server hangs up
        s = context.wrap_socket(raw, server_hostname="127.0.0.1")
        s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n')
        got = s.recv(4096)
    assert b"QMP" not in got and b"return" not in got


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_windows_style_qemu_detached_with_tls_qmp(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    root = env.home / "instances" / WIN_NAME
    env.pyd("config", "set", "--create", "backend", "qemu", "-n", WIN_NAME)
    first: ProcessIdentity | None = None
    try:
        t0 = time.monotonic()
        env.pyd("start", "-n", WIN_NAME, "--no-context", PYD_QEMU_LAUNCH="detached", PYD_QMP="tls")
        started = time.monotonic() - t0
        st = env.status(WIN_NAME)
        assert (st["backend"], st["state"]) == ("qemu", "running")
        host = st["docker_host"]
        assert env.docker("-H", host, "version", "--format", "{{.Server.Version}}").stdout.strip()
        first = _identity(root)
        assert is_running(first)
        assert not (root / "qmp.sock").exists()  # the monitor is the TLS port, not a socket
        port = int((root / "qmp.port").read_text())
        _intruders_get_nothing(port, root / "qmp-tls" / "ca-cert.pem")
        assert is_running(first), "QEMU obeyed an unauthenticated client"
        # pyd's own client still gets in, and the guest still runs.
        assert qmp(env, WIN_NAME, "query-status")["return"]["status"] == "running"
        assert env.status(WIN_NAME)["state"] == "running"

        # A guest deaf to the power button (its acpid stopped): after the timeout QEMU is
        # killed, and pyd says so. The backend as `pyd stop` uses it, without its SSH
        # poweroff first.
        env.pyd("ssh", "-n", WIN_NAME, "--", "pkill -STOP acpid")
        backend = QemuProcessBackend(WIN_NAME, InstanceFiles(root))
        caplog.set_level(logging.WARNING, logger="pyd.vm")
        t0 = time.monotonic()
        backend.shutdown(timeout=2)
        forced = time.monotonic() - t0
        assert _warnings(caplog) == [
            f"pyd-{WIN_NAME} did not power off within 2 s after the power button: QEMU was killed"
        ]
        assert 2 <= forced < 15 and not is_running(first)
        assert not (root / "qemu.proc").exists()
        assert env.status(WIN_NAME)["state"] == "stopped"
        caplog.clear()

        env.pyd("restart", "-n", WIN_NAME, PYD_QEMU_LAUNCH="detached", PYD_QMP="tls")
        second = _identity(root)
        assert second != first and not is_running(first) and is_running(second)
        assert env.status(WIN_NAME)["state"] == "running"
        modes = _modes(root)
        assert modes == {name: 0o700 if (root / name).is_dir() else 0o600 for name in modes}
        tls = {"qmp-tls", *(f"qmp-tls/{f}" for f in (
            "ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
            "client-key.pem"))}  # fmt: skip
        assert {"serial.log", "qemu.proc", "qemu.log", "qmp.port", *tls} <= set(modes)

        # The power button over the TLS monitor alone (`pyd stop` asks over SSH first): the
        # guest powers off, QEMU exits, and its record goes with it.
        t0 = time.monotonic()
        backend.shutdown(timeout=60)
        stopped = time.monotonic() - t0
        assert _warnings(caplog) == [], "the guest did not power off through TLS QMP"
        assert not is_running(second) and not (root / "qemu.proc").exists()
        env.pyd("stop", "-n", WIN_NAME)  # no switches: the agent; the files say QEMU is gone
        assert env.status(WIN_NAME)["state"] == "stopped"
        times = {"detached_tls_start_s": started, "forced_s": forced, "powerdown_s": stopped}
        print(json.dumps({k: round(v, 1) for k, v in times.items()}))
    finally:
        env.pyd("delete", "-f", "-n", WIN_NAME, check=False)
        for identity in (first, read_identity(root / "qemu.proc")):
            if identity is not None:
                end_process(identity, timeout=5)
    assert not root.exists()
