"""Reading a docker command line the way the docker CLI will, as far as pyd needs to: where
the subcommand is, and whether an option is present. Pure text.

Deliberately partial: the docker CLI has hundreds of options and pyd knows only the global
ones (docker CLI 28, `docker --help`). Whatever it does not recognise is treated the safe
way by its callers: as "may read files in the current directory" (workdir.py) and "not a
host path" (winargs.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Global options that take a value, as a separate word or after "=".
GLOBAL_VALUED = frozenset(
    {
        "--config",
        "-c",
        "--context",
        "-H",
        "--host",
        "-l",
        "--log-level",
        "--tlscacert",
        "--tlscert",
        "--tlskey",
    }
)

# Management commands: their first positional argument is a subcommand (`docker image ls`).
MANAGEMENT = frozenset(
    {
        "builder",
        "buildx",
        "checkpoint",
        "compose",
        "config",
        "container",
        "context",
        "image",
        "manifest",
        "network",
        "node",
        "plugin",
        "secret",
        "service",
        "stack",
        "swarm",
        "system",
        "trust",
        "volume",
    }
)


@dataclass(frozen=True)
class Command:
    """Where things are in `docker ARGS`: `words` is the subcommand (("run",),
    ("container", "run"), or () for none, as in `docker --version`), `start` the index of
    its first own argument."""

    words: tuple[str, ...]
    start: int


def option_name(arg: str) -> str:
    """The option an argument names: "--volume" for "--volume=/a:/b", "-v" for "-v"."""
    return arg.split("=", 1)[0] if arg.startswith("--") else arg


def find_command(args: Sequence[str]) -> Command:
    """The subcommand of `docker ARGS`, after docker's global options."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg in GLOBAL_VALUED:  # "--context pyd", not "--context=pyd"
            i += 1
        i += 1
    if i >= len(args):
        return Command((), len(args))
    first = args[i]
    if first in MANAGEMENT and i + 1 < len(args) and not args[i + 1].startswith("-"):
        return Command((first, args[i + 1]), i + 2)
    return Command((first,), i + 1)


def has_option(args: Sequence[str], names: frozenset[str], short: str = "") -> bool:
    """Whether any argument is one of the options `names` (also as "--name=value"), or a
    cluster of short flags with one of the letters in `short` ("-itv" has v). Arguments of
    the container's command are looked at too: docker alone knows where they begin."""
    for arg in args:
        if arg == "--":
            return False
        if option_name(arg) in names:
            return True
        letters = arg[1:]
        cluster = arg.startswith("-") and not arg.startswith("--") and letters.isalpha()
        if cluster and any(c in short for c in letters):
            return True
    return False


# The subcommands that start a container's process, with options such as -t and -v.
RUNS = frozenset(
    {
        ("run",),
        ("create",),
        ("exec",),
        ("container", "run"),
        ("container", "create"),
        ("container", "exec"),
    }
)


def wants_terminal(args: Sequence[str]) -> bool:
    """Whether `docker ARGS` asks for a terminal: `run`, `create` or `exec` with `-t`,
    `--tty` or a short-flag cluster holding t (`-it`)."""
    command = find_command(args)
    return command.words in RUNS and has_option(
        args[command.start :], frozenset({"-t", "--tty"}), short="t"
    )
