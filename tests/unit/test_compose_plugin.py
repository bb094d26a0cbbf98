"""`pyd compose` with a host docker CLI that lacks the compose plugin (issue 20): the plugin is
looked for where the docker CLI looks, per OS, and without it the guest's compose runs."""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

import pytest

from pyd.cli.docker_launch import as_compose, use_host_cli
from pyd.guestdocker.compose_plugin import host_has_compose, plugin_candidates
from pyd.guestdocker.tools import COMPOSE, DOCKER
from tests.unit.test_guestdocker_cli import (
    Host,
    compose_plugin,
    docker_on_path,
    make_context,
    running,
    shown,
)


def _never() -> bool:
    raise AssertionError("pyd docker must not look for the compose plugin")


def test_docker_always_uses_the_host_cli_without_looking_for_plugins() -> None:
    assert use_host_cli(DOCKER, _never)


def test_compose_uses_the_host_cli_only_with_its_plugin() -> None:
    assert use_host_cli(COMPOSE, lambda: True)
    assert not use_host_cli(COMPOSE, lambda: False)


def test_linux_and_macos_look_in_the_config_dir_extra_dirs_then_the_system_dirs() -> None:
    config = '{"auths": {}, "cliPluginsExtraDirs": ["/opt/homebrew/lib/docker/cli-plugins"]}'
    for platform in ("linux", "darwin"):
        found = plugin_candidates(PurePosixPath("/home/u/.docker"), config, platform, {})
        assert found[:3] == [
            PurePosixPath("/home/u/.docker/cli-plugins/docker-compose"),
            PurePosixPath("/opt/homebrew/lib/docker/cli-plugins/docker-compose"),
            PurePosixPath("/usr/local/lib/docker/cli-plugins/docker-compose"),
        ]
        assert PurePosixPath("/usr/libexec/docker/cli-plugins/docker-compose") in found


def test_windows_looks_for_the_exe_under_programdata_and_program_files() -> None:
    env = {"ProgramData": r"C:\ProgramData", "ProgramFiles": r"C:\Program Files"}
    found = plugin_candidates(PureWindowsPath(r"C:\Users\u\.docker"), None, "win32", env)
    assert found == [
        PureWindowsPath(r"C:\Users\u\.docker\cli-plugins\docker-compose.exe"),
        PureWindowsPath(r"C:\ProgramData\Docker\cli-plugins\docker-compose.exe"),
        PureWindowsPath(r"C:\Program Files\Docker\cli-plugins\docker-compose.exe"),
    ]


@pytest.mark.parametrize("config", [None, "", "not json", "[1]", '{"cliPluginsExtraDirs": 3}'])
def test_a_missing_or_odd_config_json_adds_no_directories(config: str | None) -> None:
    found = plugin_candidates(PurePosixPath("/c"), config, "linux", {})
    assert found[0] == PurePosixPath("/c/cli-plugins/docker-compose")
    assert all(str(p).startswith(("/c/", "/usr/")) for p in found)


def _plugin(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    plugin = directory / "docker-compose"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    return plugin


@pytest.mark.skipif(os.name != "posix", reason="the execute bit is POSIX's")
def test_a_plugin_in_the_config_dir_or_an_extra_dir_is_found(tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    config.mkdir()
    assert not host_has_compose(config, "linux", {}) or _system_has_compose()
    extra = tmp_path / "brew" / "cli-plugins"
    _plugin(extra)
    (config / "config.json").write_text(f'{{"cliPluginsExtraDirs": ["{extra}"]}}')
    assert host_has_compose(config, "linux", {})
    (config / "config.json").unlink()
    assert host_has_compose(config, "linux", {}) == _system_has_compose()
    _plugin(config / "cli-plugins").chmod(0o644)  # not executable: docker cannot run it
    assert host_has_compose(config, "linux", {}) == _system_has_compose()
    (config / "cli-plugins" / "docker-compose").chmod(0o755)
    assert host_has_compose(config, "linux", {})


def _system_has_compose() -> bool:
    system = plugin_candidates(PurePosixPath("/nonexistent"), None, "linux", {})[1:]
    return any(os.access(PurePath(p), os.X_OK) for p in system)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    """As test_guestdocker_cli's: a home, and the test's DOCKER_CONFIG for make_context."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return Host(tmp_path, [])


def test_without_the_hosts_plugin_pyd_compose_takes_the_guest_path(host: Host) -> None:
    """Through the real `pyd` command and a stand-in host docker: with the plugin in its
    config directory, `docker compose` runs; without it, the guest's path (which here finds
    an instance that never started) instead of docker's "unknown command"."""
    docker_on_path(host)
    make_context("pyd-dev")
    lock = running(host, "dev")
    try:
        guest = host.pyd("compose", "-n", "dev", "up")
        compose_plugin(host)
        hosted = host.pyd("compose", "-n", "dev", "up")
    finally:
        lock.release()
    assert guest.returncode == 2 and shown(guest) == []
    assert "'dev' has never started" in guest.stderr
    assert hosted.returncode == 7 and shown(hosted) == ["--context", "pyd-dev", "compose", "up"]


def test_pyd_docker_compose_is_pyd_compose(host: Host) -> None:
    """`pyd docker compose ARGS` takes the same way: the guest's compose without the plugin."""
    docker_on_path(host)
    make_context("pyd-dev")
    lock = running(host, "dev")
    try:
        guest = host.pyd("docker", "-n", "dev", "compose", "ps")
        compose_plugin(host)
        hosted = host.pyd("docker", "-n", "dev", "compose", "ps")
        globals_first = host.pyd("docker", "-n", "dev", "--debug", "compose", "ps")
    finally:
        lock.release()
    assert guest.returncode == 2 and "'dev' has never started" in guest.stderr
    assert shown(hosted) == ["--context", "pyd-dev", "compose", "ps"]
    assert shown(globals_first) == ["--context", "pyd-dev", "--debug", "compose", "ps"]


def test_only_a_leading_compose_word_makes_a_docker_command_compose() -> None:
    assert as_compose(DOCKER, ("compose", "up", "-d")) == (COMPOSE, ("up", "-d"))
    assert as_compose(DOCKER, ("run", "compose")) == (DOCKER, ("run", "compose"))
    assert as_compose(COMPOSE, ("compose",)) == (COMPOSE, ("compose",))
