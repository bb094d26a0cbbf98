"""`pyd env`: the lines that point a shell's docker CLI at an instance (pure)."""

from __future__ import annotations

from pyd.config.settings import DEFAULT_INSTANCE
from pyd.errors import UsageError

SHELLS = ("bash", "zsh", "fish", "powershell", "cmd")


def env_script(shell: str, docker_host: str, instance: str) -> str:
    comment = f"Run this to use pyd instance {instance!r} in this shell: "
    if shell in ("bash", "zsh", "sh"):
        return (
            f"export DOCKER_HOST={_posix_quote(docker_host)}\n"
            "unset DOCKER_CONTEXT\n"
            f'# {comment}eval "$(pyd env{_name_arg(instance)})"\n'
        )
    if shell == "fish":
        return (
            f"set -gx DOCKER_HOST {_posix_quote(docker_host)};\n"
            "set -e DOCKER_CONTEXT;\n"
            f"# {comment}pyd env --shell fish{_name_arg(instance)} | source\n"
        )
    if shell == "powershell":
        value = docker_host.replace("'", "''")
        return (
            f"$Env:DOCKER_HOST = '{value}'\n"
            "Remove-Item Env:DOCKER_CONTEXT -ErrorAction SilentlyContinue\n"
            f"# {comment}& pyd env --shell powershell{_name_arg(instance)} | Invoke-Expression\n"
        )
    if shell == "cmd":
        return (
            f"SET DOCKER_HOST={docker_host}\n"
            "SET DOCKER_CONTEXT=\n"
            f"REM {comment}@FOR /f \"tokens=*\" %i IN ('pyd env --shell cmd"
            f"{_name_arg(instance)}') DO @%i\n"
        )
    raise UsageError(f"unknown shell {shell!r}", hint=f"use one of {', '.join(SHELLS)}")


def detect_shell(shell_var: str, windows: bool) -> str:
    """From $SHELL (e.g. /usr/bin/fish); PowerShell on Windows."""
    name = shell_var.rsplit("/", 1)[-1]
    if name in SHELLS:
        return name
    return "powershell" if windows else "bash"


def _name_arg(instance: str) -> str:
    return "" if instance == DEFAULT_INSTANCE else f" -n {instance}"


def _posix_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
