"""Running a menu's action: Start, Stop and Restart as `pyd` subprocesses (the CLI's own
code, its locks taken and released by it, never by the tray), Open logs with the OS's opener,
Copy with the clipboard program. The command lines are pure; ActionRunner is the edge."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from pyd.config.settings import context_name
from pyd.host.detached import detached, launch_detached, no_window
from pyd.tray.clipboard import copy_text
from pyd.tray.model import Action, Verb

_CLI_VERBS = {Verb.START: "start", Verb.STOP: "stop", Verb.RESTART: "restart"}


def pyd_argv(action: Action, python: str) -> list[str]:
    """The `pyd` command an action runs, with this interpreter (the tray's own pyd)."""
    return [python, "-m", "pyd", _CLI_VERBS[action.verb], "-n", action.instance]


def runs_pyd(action: Action) -> bool:
    return action.verb in _CLI_VERBS


def open_argv(platform: str, path: Path) -> list[str]:
    """The command that opens `path` in the desktop's default program for it."""
    if platform == "darwin":
        return ["open", str(path)]
    if platform == "win32":
        # start's first quoted argument is a window title: the empty one keeps a quoted
        # path from being taken for it.
        return ["cmd", "/c", "start", "", str(path)]
    return ["xdg-open", str(path)]


def context_line(instance: str) -> str:
    return f"docker context use {context_name(instance)}"


class ActionRunner:
    """Runs actions; at most one `pyd` command per instance at a time (`pending`), each
    in a thread that waits for it and then calls `done` (the tray refreshes)."""

    def __init__(self, log: Path, logs_of: Callable[[str], Path], done: Callable[[], None]) -> None:
        self.log = log
        self.logs_of = logs_of
        self.done = done
        self._lock = threading.Lock()
        self._pending: dict[str, Verb] = {}

    def pending(self) -> Mapping[str, Verb]:
        with self._lock:
            return dict(self._pending)

    def run(self, action: Action, env: Mapping[str, str]) -> None:
        if action.verb is Verb.LOGS:
            path = self.logs_of(action.instance)
            flags = no_window(sys.platform)
            subprocess.Popen(
                open_argv(sys.platform, path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=flags.creationflags,
            )
        elif action.verb is Verb.COPY_CONTEXT:
            copy_text(context_line(action.instance), env)
        elif runs_pyd(action):
            with self._lock:
                if action.instance in self._pending:
                    return
                self._pending[action.instance] = action.verb
            threading.Thread(target=self._wait, args=(action,), daemon=True).start()

    def _wait(self, action: Action) -> None:
        try:
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with open(fd, "ab") as log:
                log.write(f"$ pyd {_CLI_VERBS[action.verb]} -n {action.instance}\n".encode())
                log.flush()
                # Detached: a start goes on (and its VM keeps running) when the tray quits.
                proc = launch_detached(
                    pyd_argv(action, sys.executable), detached(sys.platform), stdout=log,
                    stderr=log,
                )  # fmt: skip
                code = proc.wait()
                log.write(f"(exit {code})\n".encode())
        finally:
            with self._lock:
                self._pending.pop(action.instance, None)
            self.done()
