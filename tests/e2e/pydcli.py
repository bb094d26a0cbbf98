"""Running the real `pyd` command against a temporary PYD_HOME and DOCKER_CONFIG."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class PydEnv:
    home: Path
    docker_config: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYD_HOME=str(self.home), DOCKER_CONFIG=str(self.docker_config), **extra)
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_CONTEXT", None)
        return env

    def pyd(
        self, *args: str, timeout: float = 600, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "pyd", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(**extra),
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"pyd {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
        return r

    def docker(
        self, *args: str, input: str | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=self.env(DOCKER_BUILDKIT="0"),
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
        return r

    def status(self, name: str = "default") -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.pyd("status", "--json", "-n", name).stdout)
        return data


def wait_mounted(env: PydEnv, name: str, share: Path, seconds: float = 90) -> None:
    """Until `pyd mount ls` says the share at host path `share` is mounted."""
    end = time.monotonic() + seconds
    while True:
        rows = json.loads(env.pyd("mount", "ls", "-n", name, "--json").stdout)
        if any(r["location"] == str(share) and r["state"] == "mounted" for r in rows):
            return
        assert time.monotonic() < end, f"{share} not mounted after {seconds} s"
        time.sleep(0.5)


def build_busybox_image(env: PydEnv, workdir: Path, tag: str) -> None:
    """A FROM-scratch image from Debian's busybox-static, built through pyd's engine:
    no registry needed."""
    shutil.copy("/bin/busybox", workdir / "busybox")
    (workdir / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    env.docker("build", "-q", "-t", tag, str(workdir))


@contextlib.contextmanager
def busybox_instance(
    factory: pytest.TempPathFactory, name: str, image: str, *start: str
) -> Iterator[PydEnv]:
    """A started instance of its own (PYD_HOME and docker config in `factory`'s directories)
    with the busybox image `image` built; deleted after. `start`: more `pyd start` options."""
    e = PydEnv(factory.mktemp("pyd-home"), factory.mktemp("docker-config"))
    try:
        e.pyd("start", "-n", name, *start)
        build_busybox_image(e, factory.mktemp("bb"), image)
        yield e
    finally:
        e.pyd("delete", "-f", "-n", name, check=False)


def build_static_tool_image(env: PydEnv, workdir: Path, tool: str, base: str, tag: str) -> None:
    """`base` with tests/e2e/TOOL.c built static as /bin/TOOL (a test's own small program
    where Debian's busybox-static has none)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail(f"no C compiler for tests/e2e/{tool}.c (apt-get install gcc libc6-dev)")
    source = Path(__file__).with_name(f"{tool}.c")
    subprocess.run([cc, "-static", "-O2", "-o", str(workdir / tool), str(source)], check=True)
    (workdir / "Dockerfile").write_text(f"FROM {base}\nCOPY {tool} /bin/{tool}\n")
    env.docker("build", "-q", "-t", tag, str(workdir))


def cut_agent_ssh(env: PydEnv, name: str = "default", first: str = "") -> None:
    """Kills the guest side of every SSH connection but the one running this command:
    the agent's connection drops as it would when a laptop sleeps. `first`: a command run
    just before, in the same shell."""
    kill_others = (
        'me=$(cut -d" " -f4 /proc/$PPID/stat); '
        'for p in $(pgrep -f "[s]shd-session: root .priv."); do [ "$p" = "$me" ] || kill $p; done'
    )
    env.pyd("ssh", "-n", name, "--", first + kill_others)


def fetch(url: str, deadline: float = 10) -> bytes:
    """GET through a published port, retrying while its forward comes up (the tests check
    correctness; bench/ measures the delay)."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return bytes(r.read())
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def remove_domain(name: str) -> bool:
    """Destroys and undefines libvirt domain `name` (qemu:///system) if it exists: what a
    test's cleanup does when `pyd delete` could not; whether there was one."""
    import libvirt  # only the libvirt tests need it

    conn = libvirt.open("qemu:///system")
    try:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return False
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        return True
    finally:
        conn.close()


def leftover_test_domains(basetemp: Path) -> list[str]:
    """pyd domains that an earlier, killed test run left defined and shut off on this host's
    libvirtd: their disks lie in a test temp tree (pyd-e2e-*, pytest-of-*) that is not this
    session's. A run killed mid-module (a CI job cut off) leaves them, and a later run's
    tests then meet a domain they refuse to touch. Running domains are never listed: they
    may belong to a test run that is still going."""
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        found = []
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            if not dom.name().startswith("pyd-"):
                continue
            sources = re.findall(r"<source (?:file|path)='([^']+)'", dom.XMLDesc(0))
            if sources and all(_in_old_test_tree(Path(s), basetemp) for s in sources):
                found.append(dom.name())
        return found
    finally:
        conn.close()


def _in_old_test_tree(path: Path, basetemp: Path) -> bool:
    tmp = Path(tempfile.gettempdir())
    if path.is_relative_to(basetemp) or not path.is_relative_to(tmp):
        return False
    top = path.relative_to(tmp).parts[0]
    return top.startswith(("pyd-e2e-", "pytest-of-"))
