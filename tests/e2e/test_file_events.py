"""File-change events reach containers (issue 19): a container runs `inotifyd` (busybox's
output; tests/e2e/inotifyd.c, as Debian's busybox lacks the applet) on a shared directory it
bind-mounts; each host change (modify, create, delete, rename) is an event there within 2 s,
nothing comes while nothing changes, and `file_events = false` in the share's [[mounts]]
table stops them."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_busybox_image, build_static_tool_image

NAME = "fileevents"
BASE = "pyd-e2e-fileevents-busybox"
IMAGE = "pyd-e2e-fileevents-inotifyd"  # BASE with tests/e2e/inotifyd.c built static
SEEN_WITHIN = 2.0


class Events:
    """inotifyd's lines, read as they come from `docker logs -f`."""

    def __init__(self, env: PydEnv, container: str) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            ["docker", "logs", "-f", container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env.env(),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def count(self) -> int:
        with self._lock:
            return len(self.lines)

    def wait_more(self, than: int, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.count() > than:
                return True
            time.sleep(0.05)
        return self.count() > than

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fe") / "project"
    d.mkdir()
    (d / "app.js").write_text("v0")
    return d


@pytest.fixture(scope="module")
def env(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory, share: Path
) -> Iterator[PydEnv]:
    e = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    try:
        e.pyd("start", "-n", NAME)
        e.pyd("mount", "add", str(share), "-n", NAME)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), BASE)
        build_static_tool_image(e, tmp_path_factory.mktemp("inotifyd"), "inotifyd", BASE, IMAGE)
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


@pytest.fixture(scope="module")
def events(env: PydEnv, share: Path) -> Iterator[Events]:
    env.docker("run", "-d", "--name", "watcher", "-v", f"{share}:/w", IMAGE, "inotifyd", "-", "/w")
    seen = Events(env, "watcher")
    time.sleep(3)  # the agent sees the container start and watches its bind
    try:
        yield seen
    finally:
        seen.close()
        env.docker("rm", "-f", "watcher", check=False)


def _config(env: PydEnv) -> Path:
    return env.home / "instances" / NAME / "config.toml"


def _set_file_events(env: PydEnv, share: Path, on: bool) -> None:
    path = _config(env)
    doc = tomlkit.parse(path.read_text())
    for table in doc["mounts"]:  # type: ignore[union-attr]
        if table["location"] == str(share):
            table["file_events"] = on
    path.write_text(tomlkit.dumps(doc))
    time.sleep(2)  # the agent follows config.toml every second


@pytest.mark.parametrize("change", ["modify", "create", "delete", "rename"])
def test_each_host_change_is_an_inotify_event_in_the_container(
    events: Events, share: Path, change: str
) -> None:
    before = events.count()
    if change == "modify":
        (share / "app.js").write_text(f"v{time.time()}")
    elif change == "create":
        (share / "new.js").write_text("new")
    elif change == "delete":
        (share / "new.js").unlink()
    else:
        (share / "app.js").rename(share / "app2.js")
        (share / "app2.js").rename(share / "app.js")
    assert events.wait_more(before, SEEN_WITHIN), f"no event for {change} in {SEEN_WITHIN} s"


def test_no_event_storm_while_nothing_changes(events: Events, share: Path) -> None:
    (share / "app.js").write_text("quiet")
    time.sleep(2)
    before = events.count()
    time.sleep(10)
    assert events.count() == before, events.lines[before:]


def test_switched_off_the_share_gets_no_events(env: PydEnv, events: Events, share: Path) -> None:
    _set_file_events(env, share, False)
    try:
        before = events.count()
        (share / "app.js").write_text("off")
        assert not events.wait_more(before, 3)
    finally:
        _set_file_events(env, share, True)
    before = events.count()
    (share / "app.js").write_text("on again")
    assert events.wait_more(before, SEEN_WITHIN)
