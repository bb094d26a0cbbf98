"""One real instance for a module of fault tests (tests/e2e/test_faults_*.py): started with
a share and a Docker volume that each hold a file written before any fault, so that every
test can show that nothing was lost; and the polling every fault test times itself with."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.e2e.pydcli import PydEnv, build_busybox_image

BEFORE = "written before the faults\n"  # in the share's before.txt and the volume's


def until(what: str, check: Callable[[], bool], seconds: float, step: float = 0.05) -> float:
    """Seconds until `check()` holds (a check that raises has not held yet); fails after
    `seconds`."""
    t0 = time.monotonic()
    while True:
        with contextlib.suppress(OSError, AssertionError, ValueError, KeyError):
            if check():
                return time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(step)


@dataclass(frozen=True)
class FaultInstance:
    env: PydEnv
    name: str
    share: Path
    image: str  # a busybox image built in the instance

    @property
    def root(self) -> Path:
        return self.env.home / "instances" / self.name

    @property
    def domain(self) -> str:
        return f"pyd-{self.name}"

    def status(self) -> dict[str, Any]:
        r = self.env.pyd("status", "--json", "-n", self.name, check=False)
        data: dict[str, Any] = json.loads(r.stdout)
        return data

    def agent(self) -> dict[str, Any]:
        """The agent's status file itself: cheap enough to poll often on two cores."""
        data: dict[str, Any] = json.loads((self.root / "agent.json").read_text())
        return data

    def keeper(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "keeper.json").read_text())
        return data

    def qemu_pid(self) -> int:
        return int(Path(f"/run/libvirt/qemu/{self.domain}.pid").read_text().strip())

    def share_mounted(self) -> bool:
        mounts = {m["location"]: m["state"] for m in self.status()["mounts"]}
        return mounts.get(str(self.share)) == "mounted"

    def assert_data_intact(self) -> None:
        """The volume's file and the share's file written before the faults, read back by a
        container once the share is mounted again."""
        until("the share mounted", self.share_mounted, 120, 0.2)
        read = self.env.docker(
            "run", "--rm", "-v", "keep:/v", "-v", f"{self.share}:/s", self.image,
            "cat", "/v/before.txt", "/s/before.txt",
        ).stdout  # fmt: skip
        assert read == BEFORE * 2


@contextmanager
def fault_instance(
    name: str, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultInstance]:
    """A started instance (libvirt, 2 GiB) with its share mounted and the files written;
    deleted afterwards, whatever the tests did to it."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    share = tmp_path_factory.mktemp("share")
    (share / "before.txt").write_text(BEFORE)
    try:
        env.pyd("start", "-n", name, "--memory", "2GiB")
        env.pyd("mount", "add", str(share), "-n", name)
        build_busybox_image(env, tmp_path_factory.mktemp("bb"), image)
        env.docker("volume", "create", "keep")
        env.docker(
            "run", "--rm", "-v", "keep:/v", image, "sh", "-c",
            f"printf '{BEFORE.strip()}\\n' > /v/before.txt && sync",
        )  # fmt: skip
        it = FaultInstance(env, name, share, image)
        until("the share mounted", it.share_mounted, 120, 0.2)
        yield it
    finally:
        env.pyd("delete", "-f", "-n", name, check=False)
