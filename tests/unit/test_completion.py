"""Shell completion (typer's): `pyd --show-completion SHELL` prints the script that shell
sources, and the script's request (pyd run with _PYD_COMPLETE set) answers with commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _pyd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args],
        capture_output=True,
        text=True,
        # Without detection typer takes the shell from the argument, not from this process's
        # parent (shellingham), so each shell's script is asked for by name.
        env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", **env},
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _pyd_completion pyd"),
        ("zsh", "compdef _pyd_completion pyd"),
        ("fish", "complete --command pyd"),
        ("powershell", "Register-ArgumentCompleter -Native -CommandName pyd"),
    ],
)
def test_show_completion_prints_the_shells_script(shell: str, marker: str) -> None:
    r = _pyd("--show-completion", shell)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout
    assert "_PYD_COMPLETE" in r.stdout  # named for pyd even when run as `python -m pyd`


def test_a_completion_request_lists_matching_commands() -> None:
    r = _pyd(_PYD_COMPLETE="complete_bash", COMP_WORDS="pyd sta", COMP_CWORD="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["start", "status"]


def test_install_completion_sources_the_script_from_bashrc(tmp_path: Path) -> None:
    r = _pyd("--install-completion", "bash", HOME=str(tmp_path))
    assert r.returncode == 0, r.stderr
    script = tmp_path / ".bash_completions" / "pyd.sh"
    assert "_PYD_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
