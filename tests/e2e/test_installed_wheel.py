"""The released wheel works without the source tree (issue 20): packaging/build-release builds
it, pipx installs it into a fresh location, and from a directory outside the checkout that copy
runs `pyd version`, `pyd doctor` and a start -> docker run -> stop cycle, with its own PYD_HOME;
a `uv tool install` of the same wheel answers too. The cached guest image (the `image` fixture)
is reused: the recipe inside the wheel must hash as the checkout's, which `pyd version --json`
shows as `current`. One boot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image, remove_domain

REPO = Path(__file__).resolve().parents[2]
NAME = "wheel"
DOMAIN = f"pyd-{NAME}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, built by packaging/build-release."""
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [str(REPO / "packaging" / "build-release"), str(dist)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # build-release lists the wheel's contents: the shipped recipe is in it.
    assert "pyd/_data/guest-image/build" in built.stdout
    [found] = dist.glob("pyd-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `pyd` command of a pipx install of the wheel into a fresh location."""
    work = tmp_path_factory.mktemp("pipx")
    env = {
        **_clean_env(),
        "PIPX_HOME": str(work / "home"),
        "PIPX_BIN_DIR": str(work / "bin"),
        "PIPX_MAN_DIR": str(work / "man"),
    }
    _install(
        [sys.executable, "-m", "pipx", "install", "--python", sys.executable, str(wheel)],
        work,
        env,
    )
    return work / "bin" / "pyd"


def _install(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would lead Python to the checkout."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DOCKER_HOST", "DOCKER_CONTEXT"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[tuple[Path, PydEnv]]:
    """A working directory outside the checkout, and a PYD_HOME + DOCKER_CONFIG of its own
    (PYD_HOME in a directory every user may enter, as test_start's)."""
    top = Path(tempfile.mkdtemp(prefix="pyd-e2e-"))
    top.chmod(0o755)
    cwd = top / "cwd"
    cwd.mkdir()
    (top / "docker-config").mkdir()
    yield cwd, PydEnv(top / "home", top / "docker-config")
    shutil.rmtree(top, ignore_errors=True)


def _run(
    pyd: Path, cwd: Path, env: PydEnv, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(pyd), *args],
        cwd=cwd,
        env={**_clean_env(), **env.env()},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_installed_pyd_runs_without_the_checkout(
    image: CachedImage, installed: Path, elsewhere: tuple[Path, PydEnv]
) -> None:
    cwd, env = elsewhere
    assert not cwd.is_relative_to(REPO)

    # The installed copy's package and data are its own, not the checkout's.
    python = installed.resolve().parent / "python"
    where = subprocess.run(
        [str(python), "-c", "import pyd, pyd.resources as r; "
         "print(pyd.__file__); print(r.data_dir('guest-image'))"],
        cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(where) == 2
    for path in where:
        assert not Path(path).is_relative_to(REPO), f"{path} is in the checkout"

    r = _run(installed, cwd, env, "version")
    assert r.returncode == 0 and r.stdout.startswith("pyd "), r.stderr
    r = _run(installed, cwd, env, "version", "--json")
    assert r.returncode == 0, r.stderr
    images = {i["key"]: i for i in json.loads(r.stdout)["images"]}
    assert images.get(image.key, {}).get("current") is True, (
        f"the wheel's recipe does not name the cached image {image.key}: {sorted(images)}"
    )
    r = _run(installed, cwd, env, "doctor", "-n", NAME)
    assert r.returncode == 0, r.stdout + r.stderr

    try:
        r = _run(installed, cwd, env, "start", "-n", NAME, "--cpus", "2", "--memory", "2GiB",
                 "--disk", "8GiB")  # fmt: skip
        assert r.returncode == 0 and "is running" in r.stderr, r.stderr
        # The instance's host agent runs the installed copy too.
        status = json.loads(_run(installed, cwd, env, "status", "--json", "-n", NAME).stdout)
        assert status["state"] == "running", status

        build_busybox_image(env, cwd, "pyd-wheel-busybox")
        out = env.docker("run", "--rm", "pyd-wheel-busybox", "echo", "from the wheel")
        assert out.stdout.strip() == "from the wheel"

        r = _run(installed, cwd, env, "stop", "-n", NAME)
        assert r.returncode == 0, r.stderr
        status = json.loads(_run(installed, cwd, env, "status", "--json", "-n", NAME).stdout)
        assert status["state"] == "stopped", status
    finally:
        _run(installed, cwd, env, "delete", "-f", "-n", NAME)
        remove_domain(DOMAIN)


def test_uv_tool_install_runs_without_the_checkout(
    image: CachedImage, wheel: Path, elsewhere: tuple[Path, PydEnv], tmp_path: Path
) -> None:
    """`uv tool install` of the same wheel: the copy answers and finds its data (no boot:
    the pipx copy's test above runs the VM)."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed (pip install uv, in pyproject's test extra)")
    cwd, env = elsewhere
    _install(
        [uv, "tool", "install", "--python", sys.executable, str(wheel)],
        tmp_path,
        {
            **_clean_env(),
            "UV_TOOL_DIR": str(tmp_path / "tools"),
            "UV_TOOL_BIN_DIR": str(tmp_path / "bin"),
            "UV_PYTHON_DOWNLOADS": "never",
        },
    )
    pyd = tmp_path / "bin" / "pyd"
    r = _run(pyd, cwd, env, "version", "--json")
    assert r.returncode == 0, r.stderr
    images = {i["key"]: i for i in json.loads(r.stdout)["images"]}
    assert images.get(image.key, {}).get("current") is True, sorted(images)
    r = _run(pyd, cwd, env, "doctor", "-n", NAME)
    assert r.returncode == 0, r.stdout + r.stderr
