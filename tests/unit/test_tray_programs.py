"""The programs the tray runs, chosen per OS (pure): the clipboard's, the opener of the logs,
the `pyd` command of a lifecycle action."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyd.tray.actions import context_line, open_argv, pyd_argv, runs_pyd
from pyd.tray.clipboard import clipboard_argv
from pyd.tray.model import Action, Verb


def _which(*present: str):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_macos_and_windows_use_their_own_clipboard_programs() -> None:
    assert clipboard_argv("darwin", {}, _which()) == ["pbcopy"]
    assert clipboard_argv("win32", {}, _which()) == ["clip"]


def test_linux_prefers_wl_copy_on_wayland_then_xclip_then_xsel() -> None:
    everything = _which("wl-copy", "xclip", "xsel")
    assert clipboard_argv("linux", {"WAYLAND_DISPLAY": "wayland-0"}, everything) == ["wl-copy"]
    assert clipboard_argv("linux", {"DISPLAY": ":0"}, everything) == [
        "xclip",
        "-selection",
        "clipboard",
    ]
    assert clipboard_argv("linux", {}, _which("xsel", "wl-copy")) == [
        "xsel",
        "--clipboard",
        "--input",
    ]


def test_linux_without_a_clipboard_program_has_none() -> None:
    assert clipboard_argv("linux", {"WAYLAND_DISPLAY": "w"}, _which()) is None


@pytest.mark.parametrize(
    ("platform", "argv"),
    [
        ("linux", ["xdg-open", "/h/agent.log"]),
        ("darwin", ["open", "/h/agent.log"]),
        ("win32", ["cmd", "/c", "start", "", "/h/agent.log"]),
    ],
)
def test_logs_open_with_the_os_opener(platform: str, argv: list[str]) -> None:
    assert open_argv(platform, Path("/h/agent.log")) == argv


@pytest.mark.parametrize(("verb", "word"), [(Verb.START, "start"), (Verb.STOP, "stop"),
                                            (Verb.RESTART, "restart")])  # fmt: skip
def test_lifecycle_actions_run_the_pyd_command(verb: Verb, word: str) -> None:
    action = Action(verb, "dev")
    assert runs_pyd(action)
    assert pyd_argv(action, "/py") == ["/py", "-m", "pyd", word, "-n", "dev"]


def test_other_actions_run_no_pyd_command() -> None:
    assert not any(runs_pyd(Action(v, "dev")) for v in (Verb.LOGS, Verb.COPY_CONTEXT, Verb.QUIT))


def test_the_copied_line_names_the_instance_context() -> None:
    assert context_line("default") == "docker context use pyd"
    assert context_line("dev") == "docker context use pyd-dev"
