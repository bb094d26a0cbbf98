"""`pyd shim install|remove`: a `docker` on PATH that runs `pyd docker`, never shadowing,
overwriting or deleting a docker pyd did not write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from pyd.dockercli.context import ensure_context
from pyd.errors import PydError
from pyd.guestdocker.shim import (
    MARKER,
    find_docker,
    install_shim,
    is_shim,
    remove_shim,
    shim_text,
)

LAUNCHER = [sys.executable, "-m", "pyd"]
REAL_DOCKER = b"\x7fELF a real docker binary"


def _real_docker(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "docker"
    path.write_bytes(REAL_DOCKER)
    path.chmod(0o755)
    return path


def _path(*dirs: Path) -> str:
    return os.pathsep.join(str(d) for d in dirs)


def test_install_writes_an_executable_shim_on_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    done = install_shim(bin_dir, LAUNCHER, None, _path(bin_dir), "linux")
    assert done.path == bin_dir / "docker" and not done.replaced and done.on_path
    assert os.access(done.path, os.X_OK) and is_shim(done.path)
    assert done.path.read_text().startswith("#!/bin/sh\n")


def test_install_refuses_when_another_docker_is_on_path(tmp_path: Path) -> None:
    real = _real_docker(tmp_path / "usr" / "bin")
    bin_dir = tmp_path / "bin"
    for order in ((bin_dir, real.parent), (real.parent, bin_dir)):  # shadowing or shadowed
        with pytest.raises(PydError, match=f"a docker command already exists: {real}"):
            install_shim(bin_dir, LAUNCHER, None, _path(*order), "linux")
    assert not (bin_dir / "docker").exists()


def test_install_never_overwrites_a_file_that_is_not_a_shim(tmp_path: Path) -> None:
    real = _real_docker(tmp_path / "bin")  # not on PATH, but in the way
    with pytest.raises(PydError, match="is not a shim pyd wrote"):
        install_shim(real.parent, LAUNCHER, None, _path(tmp_path / "other"), "linux")
    assert real.read_bytes() == REAL_DOCKER


def test_install_never_follows_a_dangling_symlink(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PydError):
        install_shim(bin_dir, LAUNCHER, None, "", "linux")
    assert not (tmp_path / "nowhere").exists()


def test_install_again_updates_our_own_shim(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install_shim(bin_dir, LAUNCHER, None, _path(bin_dir), "linux")
    done = install_shim(bin_dir, LAUNCHER, "dev", _path(bin_dir), "linux")
    assert done.replaced and "docker -n dev --" in done.path.read_text()


def test_install_says_when_its_directory_is_not_on_path(tmp_path: Path) -> None:
    done = install_shim(tmp_path / "bin", LAUNCHER, None, _path(tmp_path / "x"), "linux")
    assert not done.on_path and done.path.exists()


def test_remove_deletes_only_our_shim(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    install_shim(bin_dir, LAUNCHER, None, "", "linux")
    assert remove_shim(bin_dir, "linux") == bin_dir / "docker"
    assert not (bin_dir / "docker").exists()
    assert remove_shim(bin_dir, "linux") is None  # nothing there: nothing to do


def test_remove_leaves_a_foreign_docker_alone(tmp_path: Path) -> None:
    real = _real_docker(tmp_path / "bin")
    with pytest.raises(PydError, match="is not a shim pyd wrote"):
        remove_shim(real.parent, "linux")
    assert real.read_bytes() == REAL_DOCKER


def test_finding_docker_passes_over_shims(tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    install_shim(shims, LAUNCHER, None, "", "linux")
    real = _real_docker(tmp_path / "usr")
    assert find_docker(_path(shims, real.parent)) == real
    assert find_docker(_path(shims)) is None
    assert find_docker(_path(shims), exclude_shims=False) == shims / "docker"


def test_the_windows_shim_is_a_cmd_file_passing_every_argument() -> None:
    text = shim_text(["C:\\Program Files\\Python\\python.exe", "-m", "pyd"], "dev", "win32")
    assert text.startswith("@echo off\r\n") and f"rem {MARKER}\r\n" in text
    assert '"C:\\Program Files\\Python\\python.exe" -m pyd docker -n dev -- %*\r\n' in text
    assert text.endswith("exit /b %ERRORLEVEL%\r\n")


# -- the shim at work, and the CLI ----------------------------------------------------------


def _env(tmp_path: Path, path: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": path,
        "PYD_HOME": str(tmp_path / "pyd-home"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "COLUMNS": "300",
    }


def test_the_shim_runs_pyd_docker_with_every_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shim -> pyd docker -> (a host docker that appeared later, standing in for the guest)."""
    shims = tmp_path / "shims"
    install_shim(shims, LAUNCHER, "dev", "", "linux")
    later = tmp_path / "later" / "docker"
    later.parent.mkdir()
    later.write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>" "$a"; done\n')
    later.chmod(0o755)
    instance = tmp_path / "pyd-home" / "instances" / "dev"
    instance.mkdir(parents=True)
    (instance / "config.toml").write_text("")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    ensure_context("pyd-dev", "unix:///x.sock", "", make_current=False)
    with FileLock(instance / "agent.lock"):  # as the running agent holds it
        r = subprocess.run(
            ["docker", "-n", "--help", "it's", ""],
            capture_output=True,
            text=True,
            env=_env(tmp_path, _path(shims, later.parent, Path("/usr/bin"), Path("/bin"))),
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "<--context><pyd-dev><-n><--help><it's><>"


def _pyd(tmp_path: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path, path),
        timeout=60,
    )


def test_cli_install_and_remove(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    r = _pyd(tmp_path, _path(bin_dir, Path("/usr/bin")), "shim", "install", "--dir", str(bin_dir))
    assert r.returncode == 0, r.stderr
    assert f"installed {bin_dir / 'docker'}" in r.stderr and "not on PATH" not in r.stderr
    r = _pyd(tmp_path, "/usr/bin", "shim", "remove", "--dir", str(bin_dir))
    assert r.returncode == 0 and f"removed {bin_dir / 'docker'}" in r.stderr


def test_cli_refusals_exit_nonzero_with_a_hint(tmp_path: Path) -> None:
    real = _real_docker(tmp_path / "usr")
    r = _pyd(tmp_path, _path(real.parent), "shim", "install", "--dir", str(tmp_path / "bin"))
    assert r.returncode == 1 and "already exists" in r.stderr and "hint:" in r.stderr
    r = _pyd(tmp_path, "/usr/bin", "shim", "remove", "--dir", str(real.parent))
    assert r.returncode == 1 and "not a shim pyd wrote" in r.stderr
    assert real.read_bytes() == REAL_DOCKER
