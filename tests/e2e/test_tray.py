"""`pyd tray` against a real instance (issue 20, desktop presence): under Xvfb with trayer as
the tray host, the icon docks and shows the instance running (its pixels, green, in a
screenshot of the tray); a click on the icon runs its default item (the instance's logs,
opened with a stand-in xdg-open); the menu's Stop, driven through the running tray
(`pyd tray --invoke NAME/stop`, the same path as the menu's callback), stops the instance and
the icon turns grey; Quit ends the tray. Skipped only where Xvfb is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from pyd.tray.icons import COLOURS
from pyd.tray.model import IconKind
from tests.e2e.pydcli import PydEnv
from tests.e2e.xdesktop import TRAY, Desktop, click, count_colour, have_xvfb, xdesktop
from tests.unit.polling import until

pytestmark = pytest.mark.skipif(
    not have_xvfb(), reason="Xvfb is not installed (apt-get install xvfb)"
)

NAME = "traye2e"
ICON_PIXELS = 100  # of the icon's colour in the tray strip: the 64 px disc scaled to the slot


@dataclass(frozen=True)
class Setup:
    env: PydEnv
    desktop: Desktop
    work: Path
    opened: Path  # what the stand-in xdg-open was asked to open

    def tray_env(self) -> dict[str, str]:
        return self.env.env(**self.desktop.env(), PATH=f"{self.work / 'bin'}:{os.environ['PATH']}")


@pytest.fixture(scope="module")
def setup(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("tray")
    opened = work / "opened"
    (work / "bin").mkdir()
    opener = work / "bin" / "xdg-open"
    opener.write_text(f'#!/bin/sh\necho "$@" >> {opened}\n')
    opener.chmod(0o755)
    home = Path(tempfile.mkdtemp(prefix="pyd-e2e-tray-"))
    env = PydEnv(home / "home", tmp_path_factory.mktemp("docker-config"))
    try:
        with xdesktop(work) as desktop:
            env.pyd("start", "-n", NAME, "--cpus", "1", "--memory", "1GiB", timeout=900)
            yield Setup(env, desktop, work, opened)
    finally:
        env.pyd("delete", "-f", "-n", NAME, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _title(s: Setup) -> str:
    found = s.desktop.window_titled("pyd:")
    return found[0] if found else ""


def _pixels(s: Setup, kind: IconKind, shot: str) -> int:
    return count_colour(s.desktop.screenshot(s.work / shot), COLOURS[kind], TRAY)


def test_tray_shows_the_instance_and_stop_stops_it(setup: Setup) -> None:
    s = setup
    tray = subprocess.Popen(
        [sys.executable, "-m", "pyd", "tray"], env=s.tray_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        until(lambda: _title(s) == f"pyd: {NAME} running", 30, 0.2, "the tray's title")
        # The icon is docked in the tray host and green; nothing of another kind is drawn.
        running = until(lambda: _pixels(s, IconKind.RUNNING, "running.png") >= ICON_PIXELS,
                        10, 0.2, "the green icon in the tray")  # fmt: skip
        assert running
        assert _pixels(s, IconKind.STOPPED, "running.png") == 0

        # A click on the icon: its default item opens the instance's log.
        found = s.desktop.window_titled("pyd:")
        assert found is not None
        click(s.desktop, found[1])
        agent_log = s.env.home / "instances" / NAME / "agent.log"
        until(lambda: s.opened.exists() and str(agent_log) in s.opened.read_text(), 10, 0.1,
              "xdg-open of the agent log")  # fmt: skip

        # Stop, through the running tray's menu path.
        r = s.env.pyd("tray", "--invoke", f"{NAME}/stop")
        assert r.returncode == 0
        until(lambda: _title(s) == f"pyd: {NAME} stopping...", 10, 0.05, "stopping... in the title")
        until(lambda: _title(s) == f"pyd: {NAME} stopped", 180, 0.5, "the tray sees it stopped")
        assert s.env.status(NAME)["state"] == "stopped"
        until(lambda: _pixels(s, IconKind.STOPPED, "stopped.png") >= ICON_PIXELS // 2, 10, 0.2,
              "the grey icon")  # fmt: skip
        assert _pixels(s, IconKind.RUNNING, "stopped.png") == 0
        log = (s.env.home / "tray" / "tray.log").read_text()
        assert f"$ pyd stop -n {NAME}" in log and "(exit 0)" in log

        # Stop is disabled now: asking again is refused by the menu model, not run.
        s.env.pyd("tray", "--invoke", f"{NAME}/stop")
        until(lambda: "no such enabled item" in (s.env.home / "tray" / "tray.log").read_text(),
              10, 0.1, "the refusal")  # fmt: skip
        assert log.count("$ pyd stop") == 1

        s.env.pyd("tray", "--invoke", "quit")
        assert tray.wait(15) == 0
    finally:
        if tray.poll() is None:
            tray.kill()
        out, err = tray.communicate()
        print(out, err)


def test_a_second_tray_and_an_invoke_without_one_are_refused(setup: Setup) -> None:
    s = setup
    r = s.env.pyd("tray", "--invoke", f"{NAME}/start", check=False)
    assert r.returncode == 2 and "no pyd tray is running" in r.stderr
