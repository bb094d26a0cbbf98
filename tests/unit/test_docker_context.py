"""The docker context pyd writes, checked with the real docker CLI (no engine needed)."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pyd.dockercli.context import (
    context_meta,
    current_context,
    ensure_context,
    meta_dir_name,
    remove_context,
)
from pyd.errors import PydError

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")

HOST = "unix:///run/user/1000/pyd/default/sock/docker.sock"
# Valid base64 ("u:p"): the docker CLI ignores a config.json whose auths it cannot decode.
USER_CONFIG = {"auths": {"registry.example": {"auth": "dTpw"}}, "psFormat": "table {{.ID}}"}


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated DOCKER_CONFIG; the shell's DOCKER_HOST/DOCKER_CONTEXT would override it."""
    path = tmp_path / "docker-config"
    path.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    return path


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr  # e.g. config.json unreadable
    return result.stdout.strip()


def _contexts() -> dict[str, dict[str, Any]]:
    lines = _docker("context", "ls", "--format", "{{json .}}").splitlines()
    return {c["Name"]: c for c in map(json.loads, lines)}


def _inspect(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_docker("context", "inspect", name))[0]
    return result


def _with_user_setup(docker_config: Path) -> Path:
    """A config.json with credentials and a context made by the docker CLI itself."""
    config = docker_config / "config.json"
    config.write_text(json.dumps(USER_CONFIG))
    config.chmod(0o600)
    _docker("context", "create", "remote", "--docker", "host=tcp://192.0.2.1:2376")
    return config


# --- pure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("description", ["pyd instance default", ""])
def test_meta_matches_what_the_docker_cli_writes(docker_config: Path, description: str) -> None:
    _docker("context", "create", "pyd", "--description", description, "--docker", f"host={HOST}")
    meta = docker_config / "contexts" / "meta" / meta_dir_name("pyd") / "meta.json"
    assert json.loads(meta.read_text()) == context_meta("pyd", HOST, description)


# --- create, update, use --------------------------------------------------------------------


def test_ensure_creates_a_context_docker_uses(docker_config: Path) -> None:
    ensure_context("pyd", HOST, "pyd instance default", make_current=True)
    context = _contexts()["pyd"]
    assert context["DockerEndpoint"] == HOST
    assert context["Description"] == "pyd instance default"
    assert context["Current"] is True
    assert _docker("context", "show") == "pyd" == current_context()
    inspected = _inspect("pyd")
    assert inspected["Endpoints"]["docker"] == {"Host": HOST, "SkipTLSVerify": False}
    assert inspected["Storage"]["MetadataPath"].endswith(meta_dir_name("pyd"))


def test_new_config_json_is_private(docker_config: Path) -> None:
    ensure_context("pyd", HOST, "", make_current=True)
    config = docker_config / "config.json"
    assert json.loads(config.read_text()) == {"currentContext": "pyd"}
    assert config.stat().st_mode & 0o777 == 0o600


def test_ensure_without_make_current_leaves_the_current_context(docker_config: Path) -> None:
    _docker("context", "create", "remote", "--docker", "host=tcp://192.0.2.1:2376")
    _docker("context", "use", "remote")
    before = (docker_config / "config.json").read_bytes()
    ensure_context("pyd-dev", HOST, "", make_current=False)
    assert _docker("context", "show") == "remote"
    assert (docker_config / "config.json").read_bytes() == before
    assert _contexts()["pyd-dev"]["DockerEndpoint"] == HOST


def test_ensure_updates_the_endpoint_in_place(docker_config: Path) -> None:
    ensure_context("pyd", HOST, "old", make_current=False)
    new_host = "unix:///home/u/.local/share/pyd/default/sock/docker.sock"
    ensure_context("pyd", new_host, "new", make_current=False)
    assert (_contexts()["pyd"]["DockerEndpoint"], _contexts()["pyd"]["Description"]) == (
        new_host,
        "new",
    )
    assert len(list((docker_config / "contexts" / "meta").iterdir())) == 1


def test_ensure_and_remove_keep_other_contexts_and_settings(docker_config: Path) -> None:
    config = _with_user_setup(docker_config)
    remote = _inspect("remote")

    ensure_context("pyd", HOST, "", make_current=True)
    assert json.loads(config.read_text()) == {**USER_CONFIG, "currentContext": "pyd"}
    assert list(json.loads(config.read_text())) == ["auths", "psFormat", "currentContext"]
    assert config.stat().st_mode & 0o777 == 0o600
    assert _inspect("remote") == remote

    remove_context("pyd")
    assert json.loads(config.read_text()) == USER_CONFIG
    assert set(_contexts()) == {"default", "remote"}
    assert _inspect("remote") == remote


def test_removing_the_current_context_falls_back_to_default(docker_config: Path) -> None:
    _with_user_setup(docker_config)
    ensure_context("pyd", HOST, "", make_current=True)
    remove_context("pyd")
    assert _docker("context", "show") == "default" == current_context()
    assert "pyd" not in _contexts()
    assert not (docker_config / "contexts" / "meta" / meta_dir_name("pyd")).exists()


def test_removing_another_context_keeps_the_current_one(docker_config: Path) -> None:
    _with_user_setup(docker_config)
    ensure_context("pyd-dev", HOST, "", make_current=False)
    _docker("context", "use", "remote")
    remove_context("pyd-dev")
    assert _docker("context", "show") == "remote"
    assert set(_contexts()) == {"default", "remote"}


def test_remove_also_drops_tls_material_and_is_idempotent(docker_config: Path) -> None:
    ensure_context("pyd", HOST, "", make_current=False)
    tls = docker_config / "contexts" / "tls" / meta_dir_name("pyd") / "docker"
    tls.mkdir(parents=True)
    (tls / "ca.pem").write_text("stale")
    remove_context("pyd")
    assert not tls.parent.exists()
    remove_context("pyd")  # already gone: nothing to do, no error
    assert _docker("context", "show") == "default"


def test_a_symlinked_config_json_stays_a_symlink(docker_config: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles-docker.json"
    real.write_text(json.dumps(USER_CONFIG))
    (docker_config / "config.json").symlink_to(real)
    ensure_context("pyd", HOST, "", make_current=True)
    assert (docker_config / "config.json").is_symlink()
    assert json.loads(real.read_text())["currentContext"] == "pyd"
    assert _docker("context", "show") == "pyd"


def test_an_empty_config_json_counts_as_no_settings(docker_config: Path) -> None:
    (docker_config / "config.json").write_text("")
    assert current_context() == "default"
    ensure_context("pyd", HOST, "", make_current=True)
    assert _docker("context", "show") == "pyd"


def test_a_corrupted_config_json_is_reported_and_left_alone(docker_config: Path) -> None:
    config = docker_config / "config.json"
    config.write_text('{"auths": {')
    with pytest.raises(PydError) as e:
        ensure_context("pyd", HOST, "", make_current=True)
    assert e.value.exit_code == 1 and str(config) in e.value.message
    assert "currentContext" in e.value.hint
    assert config.read_text() == '{"auths": {'


@pytest.mark.parametrize("name", ["default", "x", "-pyd", "pyd dev"])
def test_names_docker_would_refuse_are_programming_errors(docker_config: Path, name: str) -> None:
    with pytest.raises(ValueError):
        ensure_context(name, HOST, "", make_current=True)
    with pytest.raises(ValueError):
        remove_context(name)
    assert not (docker_config / "contexts").exists()


def test_without_docker_config_the_context_goes_to_home_dot_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    ensure_context("pyd", HOST, "", make_current=True)
    assert (tmp_path / ".docker" / "contexts" / "meta" / meta_dir_name("pyd")).is_dir()
    assert _docker("context", "show") == "pyd"
