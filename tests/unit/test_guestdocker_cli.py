"""`pyd docker` and `pyd compose` through the real `pyd` command (a subprocess): docker's
arguments pass untouched, the host's docker CLI is used when there is one (a stand-in that
prints what it was given), and the guest path's checks come before any connection. No VM."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from pyd.agent.status_file import AgentState, AgentStatus, write_status
from pyd.dockercli.context import ensure_context
from pyd.guestdocker.shim import shim_text
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.instance.state import InstanceState, save_state

# Prints each argument on a line of its own, then exits 7: what the host docker was given.
FAKE_DOCKER = '#!/bin/sh\nfor a in "$@"; do printf \'<%s>\\n\' "$a"; done\nexit 7\n'
SYSTEM_PATH = "/usr/bin:/bin"  # no docker here (this machine's is in /usr/local/bin)


@dataclass
class Host:
    tmp: Path
    path: list[str]  # PATH entries before SYSTEM_PATH

    @property
    def pyd_home(self) -> Path:
        return self.tmp / "pyd-home"

    def files(self, name: str = "default") -> InstanceFiles:
        return InstanceFiles(self.pyd_home / "instances" / name)

    def pyd(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PYD_HOME": str(self.pyd_home),
            "DOCKER_CONFIG": str(self.tmp / "docker-config"),
            "HOME": str(self.tmp / "home"),
            "PATH": os.pathsep.join([*self.path, SYSTEM_PATH]),
            "PYTHONPATH": os.pathsep.join(sys.path),
            "COLUMNS": "300",
        }
        env.pop("PWD", None)
        return subprocess.run(
            [sys.executable, "-m", "pyd", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd or self.tmp / "home",
            timeout=60,
        )

    def executable(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        return path


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # for make_context
    return Host(tmp_path, [])


def running(host: Host, name: str = "default") -> FileLock:
    """An instance whose agent seems to run: its config exists and agent.lock is held (by
    this process, as the agent holds it)."""
    files = host.files(name)
    files.root.mkdir(parents=True, exist_ok=True)
    files.config.write_text("")
    lock = FileLock(files.agent_lock)
    lock.acquire()
    return lock


def docker_on_path(host: Host) -> Path:
    fake = host.executable(host.tmp / "hostbin" / "docker", FAKE_DOCKER)
    host.path.append(str(fake.parent))
    return fake


def compose_plugin(host: Host) -> Path:
    """The host docker CLI's compose plugin, in its config directory (without one, `pyd
    compose` runs the guest's compose: test_compose_plugin)."""
    return host.executable(host.tmp / "docker-config" / "cli-plugins" / "docker-compose", "")


def make_context(name: str) -> None:
    """Context `name` in the test's DOCKER_CONFIG, as `pyd start` makes it."""
    ensure_context(name, "unix:///pyd/docker.sock", "test", make_current=False)


def shown(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[1:-1] for line in r.stdout.splitlines()]


ODD = ["--help", "-n", "x", "--name", "--", "it's", "two words", "", "-"]


# -- the host's docker CLI --------------------------------------------------------------------


def test_the_host_docker_gets_pyds_context_and_every_argument_as_typed(host: Host) -> None:
    docker_on_path(host)
    make_context("pyd")
    lock = running(host)
    try:
        r = host.pyd("docker", *ODD)
    finally:
        lock.release()
    assert r.returncode == 7, r.stderr  # docker's own exit code
    assert shown(r) == ["--context", "pyd", *ODD]
    assert r.stderr == ""


def test_pyd_options_before_docker_args_choose_the_instance(host: Host) -> None:
    docker_on_path(host)
    compose_plugin(host)
    make_context("pyd-dev")
    lock = running(host, "dev")
    try:
        r = host.pyd("compose", "-n", "dev", "--", "-n", "up", "--help")
    finally:
        lock.release()
    assert shown(r) == ["--context", "pyd-dev", "compose", "-n", "up", "--help"]


def test_without_pyds_context_the_agents_endpoint_is_used(host: Host) -> None:
    docker_on_path(host)
    lock = running(host)
    files = host.files()
    write_status(
        files.agent_status, AgentStatus(AgentState.READY, 1, docker_host="unix:///x/docker.sock")
    )
    try:
        r = host.pyd("docker", "ps")
    finally:
        lock.release()
    assert shown(r) == ["--host", "unix:///x/docker.sock", "ps"]


def test_a_stopped_instance_is_reported_before_anything_runs(host: Host) -> None:
    docker_on_path(host)
    host.files().root.mkdir(parents=True)
    host.files().config.write_text("")
    r = host.pyd("docker", "ps")
    assert r.returncode == 1 and r.stdout == ""
    assert "instance 'default' is not running" in r.stderr and "pyd start" in r.stderr


def test_a_missing_instance_is_a_usage_error(host: Host) -> None:
    r = host.pyd("docker", "-n", "ghost", "ps")
    assert r.returncode == 2 and "pyd start -n ghost" in r.stderr


# -- the guest's docker CLI -------------------------------------------------------------------


def guest_ready(host: Host) -> FileLock:
    """Started once (state.json), agent running, nothing listening on its SSH port."""
    lock = running(host)
    instance_keys(host.files())  # made at the first start, before state.json
    save_state(host.files().state, InstanceState(ssh_port=1, image_key="k", accel="tcg"))
    return lock


def test_via_guest_passes_over_a_host_docker(host: Host) -> None:
    docker_on_path(host)
    lock = guest_ready(host)
    try:
        r = host.pyd("docker", "--via-guest", "ps")
    finally:
        lock.release()
    assert r.stdout == "" and r.returncode == 1
    assert "cannot reach the guest of 'default' over SSH on 127.0.0.1:1" in r.stderr


def test_a_shim_on_path_is_not_taken_for_a_host_docker(host: Host) -> None:
    shim = shim_text([sys.executable, "-m", "pyd"], None, "linux")
    host.path.append(str(host.executable(host.tmp / "shimbin" / "docker", shim).parent))
    lock = guest_ready(host)
    try:
        r = host.pyd("docker", "ps")
    finally:
        lock.release()
    assert r.returncode == 1 and "cannot reach the guest" in r.stderr


def test_outside_every_share_a_build_is_refused_with_the_shares_listed(host: Host) -> None:
    elsewhere = host.tmp / "elsewhere"
    elsewhere.mkdir()
    lock = guest_ready(host)
    try:
        r = host.pyd("docker", "build", "-t", "x", ".", cwd=elsewhere)
    finally:
        lock.release()
    assert r.returncode == 2, r.stderr
    assert f"the current directory {elsewhere} is not shared" in r.stderr
    assert f"{host.tmp / 'home'} (at {host.tmp / 'home'}, writable)" in r.stderr  # the default
    assert f"pyd mount add {elsewhere}" in r.stderr
    assert "Traceback" not in r.stderr


def test_outside_every_share_a_command_without_files_still_runs(host: Host) -> None:
    elsewhere = host.tmp / "elsewhere"
    elsewhere.mkdir()
    lock = guest_ready(host)
    try:
        r = host.pyd("docker", "ps", cwd=elsewhere)
    finally:
        lock.release()
    assert r.returncode == 1 and "cannot reach the guest" in r.stderr  # got as far as SSH


def test_pyd_help_lists_the_new_commands(host: Host) -> None:
    r = host.pyd("--help")
    assert r.returncode == 0
    for command in ("docker", "compose", "shim"):
        assert f" {command} " in r.stdout
