"""`pyd compose` on a host whose docker CLI has no compose plugin (issue 20, found by trying
pyd as a new user would): it used to fail with "unknown command: docker compose"; the guest's
compose runs the project instead (real libvirtd + QEMU under TCG).

The host's docker CLI stays on PATH, with a DOCKER_CONFIG of its own holding only pyd's
context: the test first shows that this docker CLI really has no compose plugin."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image, wait_mounted

NAME = "composefb"
IMAGE = "pyd-e2e-composefb-busybox"
PROJECT = "pydcomposefb"


@dataclass(frozen=True)
class Setup:
    env: PydEnv
    share: Path
    outside: Path


@pytest.fixture(scope="module")
def setup(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    share = tmp_path_factory.mktemp("cf-share")
    outside = tmp_path_factory.mktemp("cf-outside")
    try:
        e.pyd("start", "-n", NAME, timeout=900)
        e.pyd("mount", "add", str(share), "-n", NAME)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        wait_mounted(e, NAME, share, seconds=120)
        yield Setup(e, share, outside)
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _compose(
    s: Setup, cwd: Path, *args: str, command: tuple[str, ...] = ("compose",)
) -> subprocess.CompletedProcess[str]:
    """`pyd compose -n NAME ARGS` typed in `cwd`, with the host's docker CLI on PATH."""
    env = s.env.env(COMPOSE_PROJECT_NAME=PROJECT, PWD=str(cwd))
    return subprocess.run(
        [sys.executable, "-m", "pyd", *command[:1], "-n", NAME, *command[1:], *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False,
    )  # fmt: skip


def test_the_host_docker_cli_here_has_no_compose_plugin(setup: Setup) -> None:
    """What makes the rest of this module real: `docker compose` fails with this config."""
    r = setup.env.docker("compose", "version", check=False)
    assert r.returncode != 0
    assert "unknown command" in r.stderr and "compose" in r.stderr


def test_compose_up_ps_down_run_in_the_guest(setup: Setup) -> None:
    project = setup.share / "project"
    project.mkdir()
    (project / "marker.txt").write_text("seen-through-the-share\n")
    (project / "compose.yaml").write_text(
        "services:\n"
        "  idle:\n"
        f"    image: {IMAGE}\n"
        '    command: ["sh", "-c", "cat /src/marker.txt; exec sleep 600"]\n'
        "    volumes:\n"
        "      - .:/src\n"
    )
    try:
        up = _compose(setup, project, "up", "-d")
        assert up.returncode == 0, up.stderr
        assert "unknown command" not in up.stderr
        ps = _compose(setup, project, "ps", "--format", "{{.Name}} {{.State}}")
        assert ps.returncode == 0, ps.stderr
        assert f"{PROJECT}-idle-1 running" in ps.stdout
        # `pyd docker compose` is `pyd compose`.
        also = _compose(setup, project, "ps", "-q", command=("docker", "compose"))
        assert also.returncode == 0 and len(also.stdout.split()) == 1, also.stderr
        logs = _until_logged(setup, project, "seen-through-the-share")
        assert "seen-through-the-share" in logs  # `.` was the shared project directory
    finally:
        down = _compose(setup, project, "down", "-t", "0")
    assert down.returncode == 0, down.stderr
    after = _compose(setup, project, "ps", "-a", "--format", "{{.Name}}")
    assert after.returncode == 0 and after.stdout.strip() == ""


def _until_logged(s: Setup, project: Path, text: str, seconds: float = 60) -> str:
    end = time.monotonic() + seconds
    while True:
        logs = _compose(s, project, "logs", "--no-color")
        if text in logs.stdout or time.monotonic() > end:
            return logs.stdout + logs.stderr
        time.sleep(1)


def test_outside_every_share_compose_says_which_directories_are_shared(setup: Setup) -> None:
    (setup.outside / "compose.yaml").write_text(f"services:\n  x:\n    image: {IMAGE}\n")
    r = _compose(setup, setup.outside, "up", "-d")
    assert r.returncode == 2
    assert f"the current directory {setup.outside} is not shared" in r.stderr
    assert str(setup.share) in r.stderr  # the shares are named
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    assert "unknown command" not in r.stderr
