"""What `pyd autostart` registers, run as a login would run it after a crash took the machine
down (issue 20; real libvirtd + QEMU under TCG): the keeper, the agent and its standby killed
with SIGKILL and the VM destroyed, their pid, status and socket files left behind. The systemd
unit's ExecStart, with only its Environment= lines and HOME (systemd's bare environment),
brings the instance back, and a container runs: no clean-up step of its own is needed."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pyd.autostart.job import make_job
from pyd.autostart.render import render_unit
from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image

NAME = "autostartrc"
IMAGE = "pyd-e2e-autostart-busybox"


def unit_command(unit: str) -> tuple[list[str], dict[str, str]]:
    """ExecStart's words and the Environment= values, as systemd reads them (the paths
    here hold none of `%` and `$`, which systemd's quoting doubles and a shell's does not)."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "Environment":
            name, _, val = shlex.split(value)[0].partition("=")
            env[name] = val
    return argv, env


def _crash(root: Path, domain: str) -> list[int]:
    """SIGKILL to every pyd process of the instance (keeper, agent, standby), then the VM
    destroyed as a power cut would end it. Their files stay."""
    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if str(root) in cmdline and any("pyd" in w for w in cmdline[:4]):
            os.kill(proc.info["pid"], signal.SIGKILL)
            killed.append(proc.info["pid"])
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", domain],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return killed


def test_the_login_command_brings_a_crashed_instance_back(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    root = e.home / "instances" / NAME
    try:
        e.pyd("start", "-n", NAME, timeout=900)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        killed = _crash(root, f"pyd-{NAME}")
        assert len(killed) >= 2, killed  # at least the keeper and the agent
        left = {p.name for p in root.iterdir()}
        assert {"agent.json", "keeper.json"} <= left, left  # stale, as after a crash
        assert json.loads((root / "agent.json").read_text())["state"] != "stopped"

        unit = render_unit(make_job(NAME, sys.executable, e.env()))
        argv, unit_env = unit_command(unit)
        assert argv == [sys.executable, "-m", "pyd", "start", "-n", NAME]
        assert unit_env["PYD_HOME"] == str(e.home)
        bare = {**unit_env, "HOME": os.environ["HOME"]}
        r = subprocess.run(argv, capture_output=True, text=True, env=bare, timeout=900)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr

        assert e.status(NAME)["state"] == "running"
        out = e.docker("run", "--rm", IMAGE, "echo", "back-after-the-crash").stdout
        assert out == "back-after-the-crash\n"
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)
