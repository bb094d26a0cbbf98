"""Copying a line of text to the desktop's clipboard with the OS's own program: pbcopy on
macOS, clip on Windows, and on Linux the first of wl-copy (Wayland), xclip, xsel that is
installed. The choice is pure (platform, environment and a lookup are parameters)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping

from pyd.errors import EnvironmentProblem

Which = Callable[[str], str | None]

# Linux: in order of preference; wl-copy only where a Wayland session is (it needs one).
_LINUX = (
    ("wl-copy", ("wl-copy",)),
    ("xclip", ("xclip", "-selection", "clipboard")),
    ("xsel", ("xsel", "--clipboard", "--input")),
)


def clipboard_argv(platform: str, env: Mapping[str, str], which: Which) -> list[str] | None:
    """The command that reads the text on its stdin into the clipboard; None when this
    machine has none."""
    if platform == "darwin":
        return ["pbcopy"]
    if platform == "win32":
        return ["clip"]
    for program, argv in _LINUX:
        if program == "wl-copy" and not env.get("WAYLAND_DISPLAY"):
            continue
        if which(program):
            return list(argv)
    return None


def copy_text(text: str, env: Mapping[str, str]) -> None:
    argv = clipboard_argv(sys.platform, env, shutil.which)
    if argv is None:
        raise EnvironmentProblem(
            "no clipboard program found", hint="install xclip, xsel or (Wayland) wl-clipboard"
        )
    # xclip stays behind to serve the selection: it must not hold our stdout/stderr open.
    subprocess.run(
        argv,
        input=text.encode(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=10,
    )
