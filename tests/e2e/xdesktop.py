"""A throw-away X desktop for the tray's e2e test and bench: Xvfb on a display it picks
itself, trayer as the XEmbed tray host docked at the top-left corner, the tray icon's window
found by its title (pystray's xorg backend names the window after the icon's title) and the
screen read through Xlib."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from Xlib import X  # type: ignore[import-untyped]
from Xlib import display as xdisplay

WIDTH, HEIGHT = 320, 120  # the screen; the tray host is a 200x32 strip at its top-left
TRAY = (0, 0, 200, 32)


@dataclass(frozen=True)
class Desktop:
    display: str  # e.g. ":12"

    def env(self) -> dict[str, str]:
        return {"DISPLAY": self.display}

    def screenshot(self, path: Path | None = None) -> Image.Image:
        d = xdisplay.Display(self.display)
        try:
            raw = d.screen().root.get_image(0, 0, WIDTH, HEIGHT, X.ZPixmap, 0xFFFFFFFF)
            data = raw.data if isinstance(raw.data, bytes) else bytes(raw.data, "latin-1")
        finally:
            d.close()
        image = Image.frombytes("RGB", (WIDTH, HEIGHT), data, "raw", "BGRX")
        if path is not None:
            image.save(path)
        return image

    def window_titled(self, prefix: str) -> tuple[str, tuple[int, int]] | None:
        """The first window whose name starts with `prefix`: its name and its centre on
        screen, or None."""
        d = xdisplay.Display(self.display)
        try:
            root = d.screen().root
            for win in _walk(root):
                with contextlib.suppress(Exception):  # a window gone while walking
                    name = win.get_wm_name()
                    if isinstance(name, bytes):
                        name = name.decode(errors="replace")
                    if name and name.startswith(prefix):
                        geo = win.get_geometry()
                        at = win.translate_coords(root, 0, 0)
                        return name, (-at.x + geo.width // 2, -at.y + geo.height // 2)
        finally:
            d.close()
        return None


def _walk(win: Any) -> Iterator[Any]:
    yield win
    for child in win.query_tree().children:
        yield from _walk(child)


def count_colour(
    image: Image.Image, rgb: tuple[int, int, int], box: tuple[int, int, int, int]
) -> int:
    """Pixels of exactly `rgb` inside `box` (left, top, right, bottom)."""
    region = image.crop(box)
    colours = region.getcolors(region.width * region.height) or []
    return sum(n for n, colour in colours if colour == rgb)


def have_xvfb() -> bool:
    return shutil.which("Xvfb") is not None


@contextlib.contextmanager
def xdesktop(workdir: Path) -> Iterator[Desktop]:
    """Xvfb and trayer, both ended on exit. Xvfb writes the display it chose on a pipe."""
    if shutil.which("trayer") is None:
        raise RuntimeError("trayer (the tray host) is not installed: apt-get install trayer")
    left, top, right, bottom = TRAY
    with contextlib.ExitStack() as stack:
        xvfb_log = stack.enter_context(open(workdir / "xvfb.log", "wb"))
        trayer_log = stack.enter_context(open(workdir / "trayer.log", "wb"))
        read, write = os.pipe()
        xvfb = _started(
            stack,
            ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{WIDTH}x{HEIGHT}x24",
             "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=xvfb_log,
        )  # fmt: skip
        os.close(write)
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if not number:
            xvfb.wait(10)
            raise RuntimeError(f"Xvfb did not start: {(workdir / 'xvfb.log').read_text()}")
        desktop = Desktop(f":{number}")
        _started(
            stack,
            ["trayer", "--edge", "top", "--align", "left", "--widthtype", "pixel", "--width",
             str(right - left), "--heighttype", "pixel", "--height", str(bottom - top),
             "--SetDockType", "false", "--transparent", "false"],
            env={**os.environ, **desktop.env()}, stdout=subprocess.DEVNULL, stderr=trayer_log,
        )  # fmt: skip
        _await(lambda: desktop.window_titled("panel") is not None, 20, "trayer's window")
        yield desktop


def _started(stack: contextlib.ExitStack, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """A process that `stack` ends (terminate, then kill) when it closes."""
    proc = subprocess.Popen(argv, **kw)

    def end() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(end)
    return proc


def _await(check: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            raise RuntimeError(f"no {what} after {seconds} s")
        time.sleep(0.1)


def click(desktop: Desktop, at: tuple[int, int]) -> None:
    """A left click at `at` through XTEST, as a user's mouse would."""
    from Xlib.ext import xtest  # type: ignore[import-untyped]

    d = xdisplay.Display(desktop.display)
    try:
        d.screen().root.warp_pointer(*at)
        d.sync()
        xtest.fake_input(d, X.ButtonPress, 1)
        xtest.fake_input(d, X.ButtonRelease, 1)
        d.sync()
    finally:
        d.close()
