r"""Host paths in docker arguments, as the guest's docker CLI must see them.

On a Windows host `docker run -v C:\Users\me\src:/src` names a directory the guest knows as
/c/Users/me/src (the mounts' translation, pyd.mounts.winpath). The guest's CLI would read
`C:\Users\me\src` as a volume name, so the host paths in the arguments are translated. On
POSIX hosts the guest sees shared directories at the same paths: nothing is translated.

What is translated on Windows, and nothing else:
- the source of `-v/--volume SRC:DST[:MODE]` when SRC is a path (a named volume stays);
- `source=`/`src=` of `--mount` (unless the value uses CSV quotes: then it is left alone);
- the values of options that name a file: `--env-file`, `--label-file`, `--cidfile`,
  `--iidfile`, `--metadata-file` everywhere; `-f/--file` for build and compose (whose
  `run -v` is translated too);
  `-i/--input` and `-o/--output` for load, save and export; compose's `--project-directory`;
  docker's global `--config` and `--tls*` files;
- the positional arguments of `build` (the context) and `cp` (the local side).
A value is translated when it is an absolute drive path (`C:\x`, `C:/x`: to `/c/x`); a
relative path with backslashes gets forward slashes (Windows forbids backslashes in names, so
they can only be separators); anything else (`-`, URLs, `ctr:/path`, names) is unchanged.
Options are recognised as separate words or with "=" (`--volume=...`), not glued to short
flags (`-vC:\x:/x`); nothing after a bare `--` is touched; arguments of a container's command
are not translated except where they look like the options above (docker alone knows where
its options end).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from pyd.guestdocker.cmdline import Command, find_command, option_name
from pyd.mounts.winpath import WINDOWS, windows_to_guest

_DRIVE_PATH = re.compile(r"[A-Za-z]:[\\/]")
# A network path: windows_to_guest refuses it with a hint. (`//c/Users` is Git Bash's way to
# keep a POSIX path from its own conversion; the guest reads it as /c/Users, so it stays.)
_UNC = "\\\\"

GLOBAL_FILE_OPTIONS = frozenset({"--config", "--tlscacert", "--tlscert", "--tlskey"})
FILE_OPTIONS = frozenset(
    {"--env-file", "--label-file", "--cidfile", "--iidfile", "--metadata-file"}
)
_BUILDS = frozenset({("build",), ("image", "build"), ("builder", "build"), ("buildx", "build")})
_COPIES = frozenset({("cp",), ("container", "cp")})
_ARCHIVES = frozenset(
    {
        ("load",),
        ("save",),
        ("export",),
        ("image", "load"),
        ("image", "save"),
        ("container", "export"),
    }
)
_COMPOSE_FILE_OPTIONS = frozenset({"-f", "--file", "--project-directory", "--env-file"})


def translate_args(args: Sequence[str], platform: str) -> list[str]:
    """`docker ARGS` with the host paths a Windows host gives translated for the guest; on
    other hosts `args` unchanged. Raises UsageError for a path the guest cannot see (a
    network path, `C:relative`)."""
    if platform != WINDOWS:
        return list(args)
    command = find_command(args)
    out = _translate_options(args, 0, command.start, _file_kinds(GLOBAL_FILE_OPTIONS))
    out += _translate_options(args, command.start, len(args), _command_kinds(command))
    return out


def translate_compose_args(args: Sequence[str], platform: str) -> list[str]:
    """translate_args for `docker compose ARGS`, whose subcommands pyd does not tell apart:
    its file options and `-v` (`compose run -v`) wherever they are."""
    if platform != WINDOWS:
        return list(args)
    kinds = _file_kinds(_COMPOSE_FILE_OPTIONS)
    kinds.update({"-v": volume_spec, "--volume": volume_spec})
    return _translate_options(args, 0, len(args), kinds)


def host_path(value: str) -> str:
    r"""One argument that names a host file: `C:\x` is `/c/x`, `.\a\b` is `./a/b`."""
    if _DRIVE_PATH.match(value) or value.startswith(_UNC):
        return windows_to_guest(value)
    if ":" not in value and "\\" in value:
        return value.replace("\\", "/")
    return value


def volume_spec(value: str) -> str:
    r"""`-v` SRC:DST[:MODE] with SRC translated when it is a host path (`C:\src:/src` is
    `/c/src:/src`); a named volume (`data:/data`) and guest paths are unchanged."""
    drive = re.match(r"([A-Za-z]:[\\/][^:]*)(.*)", value, re.DOTALL)
    if drive:
        return host_path(drive[1]) + drive[2]
    source, sep, rest = value.partition(":")
    if source.startswith("."):
        return host_path(source) + sep + rest
    return value


def mount_spec(value: str) -> str:
    r"""`--mount type=bind,source=C:\src,target=/src` with the source translated. A value
    with CSV quotes is left alone: docker parses it as CSV, and so would we have to."""
    if '"' in value:
        return value
    fields = []
    for field in value.split(","):
        key, eq, val = field.partition("=")
        if eq and key.strip().lower() in ("source", "src"):
            field = key + eq + host_path(val)
        fields.append(field)
    return ",".join(fields)


_Kinds = dict[str, Callable[[str], str]]


def _file_kinds(names: frozenset[str]) -> _Kinds:
    return dict.fromkeys(names, host_path)


def _command_kinds(command: Command) -> _Kinds:
    kinds: _Kinds = {"-v": volume_spec, "--volume": volume_spec, "--mount": mount_spec}
    kinds.update(_file_kinds(FILE_OPTIONS))
    if command.words in _BUILDS:
        kinds.update(_file_kinds(frozenset({"-f", "--file"})))
    if command.words in _ARCHIVES:
        kinds.update(_file_kinds(frozenset({"-i", "--input", "-o", "--output"})))
    if command.words in _BUILDS or command.words in _COPIES:
        kinds[""] = _positional  # the build context; the local side of cp
    return kinds


def _positional(value: str) -> str:
    # `ctr:/path` (cp's container side) and URLs have a colon but no drive: host_path keeps them.
    return host_path(value) if value != "-" else value


def _translate_options(args: Sequence[str], start: int, end: int, kinds: _Kinds) -> list[str]:
    """args[start:end] with the values of the options in `kinds` translated; "" in `kinds`
    translates positional arguments too. Stops at a bare `--`."""
    out: list[str] = []
    i = start
    while i < end:
        arg = args[i]
        i += 1
        if arg == "--":
            out += [arg, *args[i:end]]
            break
        name = option_name(arg)
        translate = kinds.get(name)
        if translate is not None and "=" in arg and arg.startswith("--"):
            out.append(name + "=" + translate(arg.split("=", 1)[1]))
        elif translate is not None and i < end:
            out += [arg, translate(args[i])]
            i += 1
        elif not arg.startswith("-") and "" in kinds:
            out.append(kinds[""](arg))
        else:
            out.append(arg)
    return out
