"""`backend = "qemu"`: the same lifecycle without libvirt (QEMU as a daemon with a pidfile
and a QMP socket), as on Windows and on Macs without libvirt."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from pyd.host.procs import pid_alive
from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv

NAME = "direct"


def _qemu_pid(env: PydEnv) -> int:
    return int((env.home / "instances" / NAME / "qemu.pid").read_text())


def test_qemu_backend_starts_restarts_and_powers_off_cleanly(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    env.pyd("config", "set", "--create", "backend", "qemu", "-n", NAME)
    try:
        env.pyd("start", "-n", NAME, "--no-context")
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
        assert time.monotonic() - t0 < 50, "the guest did not power off through QMP"
        assert not pid_alive(second)
        assert env.status(NAME)["state"] == "stopped"
    finally:
        env.pyd("delete", "-f", "-n", NAME, check=False)
        pidfile = env.home / "instances" / NAME / "qemu.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path(pidfile).read_text()), signal.SIGKILL)
    assert not (env.home / "instances" / NAME).exists()
