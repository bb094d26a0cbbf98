"""The tray at the edge: pystray's icon and menu made from model.menu(), a thread that follows
the instances (poll.py) and updates them, the actions run by actions.ActionRunner.

Its own files sit in PYD_HOME/tray/: a lock (one tray per PYD_HOME), its log (what the actions'
`pyd` commands said) and `invoke`, where `pyd tray --invoke INSTANCE/ITEM` leaves the path of a
menu item for the running tray to activate as a click would (scripts, tests, and plain X,
where pystray shows no menu)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pyd.errors import EnvironmentProblem, PydError, UsageError
from pyd.host.atomicfile import write_atomic
from pyd.host.paths import home_dir, instances_dir
from pyd.host.private_files import private_dir
from pyd.instance.registry import instance
from pyd.tray import poll
from pyd.tray.actions import ActionRunner
from pyd.tray.icons import draw_icon
from pyd.tray.model import Action, IconKind, InstanceView, MenuItem, Verb, find_item, icon_kind
from pyd.tray.model import menu as menu_model
from pyd.tray.model import title as title_text

QUIT_GRACE = 3.0  # seconds for pystray's loop to end after Quit


@dataclass(frozen=True)
class TrayFiles:
    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "tray.lock"

    @property
    def log(self) -> Path:
        return self.root / "tray.log"

    @property
    def invoke(self) -> Path:
        return self.root / "invoke"


def tray_files() -> TrayFiles:
    return TrayFiles(home_dir() / "tray")


def request_invoke(path: str) -> None:
    """`pyd tray --invoke`: leave `path` (INSTANCE/ITEM, e.g. default/stop) for the running
    tray, which takes it within a second."""
    files = tray_files()
    if not _held(files.lock):
        raise UsageError("no pyd tray is running", hint="start one with `pyd tray`")
    write_atomic(files.invoke, path.strip() + "\n")


def _held(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        FileLock(path).acquire(timeout=0).lock.release()
    except Timeout:
        return True
    return False


def _pystray() -> Any:
    """pystray picks its backend when imported, and fails there without a desktop."""
    try:
        import pystray  # type: ignore[import-untyped]
    except Exception as e:  # Xlib's DisplayNameError and kin: no desktop
        raise EnvironmentProblem(
            f"no desktop to show a tray icon on ({type(e).__name__}: {e})",
            hint="run `pyd tray` in a desktop session (on Linux DISPLAY or WAYLAND_DISPLAY "
            "must be set)",
        ) from None
    return pystray


def _xorg_clicks(icon: Any) -> None:
    """pystray's xorg backend (0.19.5) handles a left click but never asks X for button
    events on its window, so none arrive (pystray issue 151): ask for them too."""
    window = getattr(icon, "_window", None)
    if type(icon).__module__ != "pystray._xorg" or window is None:
        return
    from Xlib import X  # type: ignore[import-untyped]

    window.change_attributes(event_mask=X.ExposureMask | X.StructureNotifyMask | X.ButtonPressMask)
    icon._display.flush()


def _xorg_flush(icon: Any) -> None:
    """Sends what pystray's X loop asked of X while this thread was sending (python-xlib then
    leaves it queued until someone sends again): a redraw, a new title, the window's end."""
    display = getattr(icon, "_display", None)
    if type(icon).__module__ == "pystray._xorg" and display is not None:
        display.flush()


class Tray:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.files = tray_files()
        self.pystray = _pystray()
        self.wake = threading.Event()
        self.quit = threading.Event()
        self.runner = ActionRunner(
            self.files.log, lambda name: instance(name).files.agent_log, self.wake.set
        )
        self.views: list[InstanceView] = []
        self.items: tuple[MenuItem, ...] = ()
        self.kind: IconKind | None = None
        self.icon = self.pystray.Icon("pyd", draw_icon(IconKind.STOPPED), "pyd")

    def run(self) -> None:
        private_dir(self.files.root)
        lock = FileLock(self.files.lock)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(
                "a pyd tray is already running for this PYD_HOME",
                hint="use its icon; `pyd tray --invoke INSTANCE/ITEM` drives it from a script",
            ) from None
        try:
            self.files.invoke.unlink(missing_ok=True)  # one left for a tray that has gone
            _xorg_clicks(self.icon)
            try:
                self.icon.run(setup=self._setup)
            except KeyboardInterrupt:
                self.icon.stop()
        finally:
            self.quit.set()
            lock.release()

    def _setup(self, icon: Any) -> None:
        # The title and menu go to the desktop only once the icon shows: the first show()
        # sets them after this.
        icon.visible = True
        self.follow()

    def follow(self) -> None:
        """The polling loop (pystray's setup thread): cheap stats each POLL, states read on
        a change, a request, an action's end, or after REFRESH."""
        seen: poll.Fingerprint = ()
        read_at = 0.0
        while not self.quit.is_set():
            woken = self.wake.is_set()
            self.wake.clear()
            self._take_invoke()
            now = time.monotonic()
            fp = poll.fingerprint(instances_dir())
            try:
                if woken or fp != seen or now - read_at >= poll.REFRESH:
                    seen, read_at = fp, now
                    self.views = poll.read_views(sys.executable, self.env)
                self.show()
            except Exception as e:  # a tray that stops following says why, and goes on
                self._log(f"following the instances: {type(e).__name__}: {e}")
            self.wake.wait(poll.POLL)

    def show(self) -> None:
        """Icon, title and menu from the last views and the actions in progress; pystray is
        told only of what changed (each update costs the desktop a redraw)."""
        pending = self.runner.pending()
        items = menu_model(self.views, pending)
        kind = icon_kind(self.views, pending)
        text = title_text(self.views, pending)
        changed = False
        if kind != self.kind:
            self.kind, changed = kind, True
            self.icon.icon = draw_icon(kind)
        if text != self.icon.title:
            changed = True
            self.icon.title = text
        if items != self.items:
            self.items = items
            self.icon.menu = self.pystray.Menu(*self._pystray_items(items))
        if changed:
            _xorg_flush(self.icon)

    def _pystray_items(self, items: Sequence[MenuItem]) -> list[Any]:
        out = []
        for it in items:
            if it.children:
                sub = self.pystray.Menu(*self._pystray_items(it.children))
                out.append(self.pystray.MenuItem(it.label, sub, enabled=it.enabled))
            else:
                out.append(
                    self.pystray.MenuItem(
                        it.label,
                        self._callback(it.action),
                        enabled=it.enabled,
                        default=it.default,
                        visible=it.visible,
                    )
                )
        return out

    def _callback(self, action: Action | None) -> Callable[[], None]:
        return lambda: self.activate(action) if action else None

    def activate(self, action: Action) -> None:
        if action.verb is Verb.QUIT:
            self.quit.set()
            self.wake.set()
            # pystray's xorg loop, asked from this thread, at times misses its window's end
            # (python-xlib reads events on whichever thread talks to X) and waits for ever;
            # nothing is left to do then but leave. The actions' `pyd` run detached.
            timer = threading.Timer(QUIT_GRACE, os._exit, args=(0,))
            timer.daemon = True
            timer.start()
            self.icon.stop()
            _xorg_flush(self.icon)
            return
        try:
            self.runner.run(action, self.env)
        except (PydError, OSError, subprocess.SubprocessError) as e:  # a clipboard that failed
            self._log(f"{action.verb} {action.instance}: {e}")
        self.wake.set()

    def _take_invoke(self) -> None:
        try:
            text = self.files.invoke.read_text().strip()
        except OSError:
            return
        with contextlib.suppress(OSError):
            self.files.invoke.unlink()
        item = find_item(self.items, [p for p in text.split("/") if p])
        if item is None or item.action is None or not item.enabled:
            self._log(f"invoke {text!r}: no such enabled item")
            return
        self._log(f"invoke {text!r}")
        self.activate(item.action)

    def _log(self, line: str) -> None:
        fd = os.open(self.files.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
