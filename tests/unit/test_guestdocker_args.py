"""Reading docker command lines, pyd's own leading options, and Windows host paths in
arguments."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyd.cli.docker_launch import Invocation, parse_invocation
from pyd.errors import UsageError
from pyd.guestdocker.cmdline import find_command, wants_terminal
from pyd.guestdocker.winargs import (
    host_path,
    mount_spec,
    translate_args,
    translate_compose_args,
    volume_spec,
)

WIN = "win32"


# -- docker's command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words", "start"),
    [
        (["ps", "-a"], ("ps",), 1),
        (["--context", "pyd", "-D", "run", "x"], ("run",), 4),
        (["--context=pyd", "image", "ls"], ("image", "ls"), 3),
        (["container", "-h"], ("container",), 1),
        (["--version"], (), 1),
        ([], (), 0),
    ],
)
def test_the_subcommand_is_found_after_global_options(
    args: list[str], words: tuple[str, ...], start: int
) -> None:
    command = find_command(args)
    assert (command.words, command.start) == (words, start)


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["run", "-it", "alpine"], True),
        (["run", "--tty", "alpine"], True),
        (["container", "exec", "-dit", "c", "sh"], True),
        (["run", "-i", "alpine"], False),
        (["build", "-t", "tag", "."], False),  # build's -t is its tag
        (["run", "alpine", "--", "-t"], False),
    ],
)
def test_a_terminal_is_wanted_by_run_and_exec_with_t(args: list[str], wanted: bool) -> None:
    assert wants_terminal(args) is wanted


# -- pyd's options before docker's ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ps"], Invocation("default", False, ("ps",))),
        (["-n", "dev", "ps"], Invocation("dev", False, ("ps",))),
        (["-ndev", "--via-guest", "ps"], Invocation("dev", True, ("ps",))),
        (["--name=dev", "--", "--help"], Invocation("dev", False, ("--help",))),
        (["--help"], Invocation("default", False, ("--help",))),
        (
            ["run", "-n", "x", "--name", "y"],
            Invocation("default", False, ("run", "-n", "x", "--name", "y")),
        ),
        (["--", "--", "x"], Invocation("default", False, ("--", "x"))),
        (["--via-guest"], Invocation("default", True, ())),
        ([], Invocation("default", False, ())),
    ],
)
def test_pyd_options_come_first_and_the_rest_is_dockers(
    args: list[str], expected: Invocation
) -> None:
    assert parse_invocation(args) == expected


def test_a_name_option_without_a_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs an instance name"):
        parse_invocation(["-n"])


# -- Windows paths ---------------------------------------------------------------------------


def test_posix_hosts_pass_every_argument_unchanged() -> None:
    args = ["run", "-v", "C:\\x:/x", "--mount", "src=.\\a,dst=/a", "-f", "a\\b"]
    assert translate_args(args, "linux") == args
    assert translate_compose_args(args, "darwin") == args


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("C:\\Users\\me\\src", "/c/Users/me/src"),
        ("d:/work/x", "/d/work/x"),
        (".\\sub\\Dockerfile", "./sub/Dockerfile"),
        ("docker\\Dockerfile.dev", "docker/Dockerfile.dev"),
        ("-", "-"),
        ("Dockerfile", "Dockerfile"),
        ("https://github.com/x/y.git#main", "https://github.com/x/y.git#main"),
        ("ctr:/etc/hosts", "ctr:/etc/hosts"),
        ("//c/Users/me", "//c/Users/me"),  # Git Bash's spelling: the guest reads /c/Users/me
    ],
)
def test_host_paths(value: str, expected: str) -> None:
    assert host_path(value) == expected


def test_network_paths_are_refused_with_a_hint() -> None:
    with pytest.raises(UsageError, match="network") as e:
        translate_args(["build", "\\\\server\\share\\ctx"], WIN)
    assert "drive letter" in e.value.hint


@pytest.mark.parametrize(
    ("translate", "spec", "expected"),
    [
        (volume_spec, "C:\\src:/src", "/c/src:/src"),
        (volume_spec, "C:\\src:/src:ro", "/c/src:/src:ro"),
        (volume_spec, "c:/My Files/x:/x:rw,z", "/c/My Files/x:/x:rw,z"),
        (volume_spec, ".\\src:/src", "./src:/src"),
        (volume_spec, "data:/data", "data:/data"),  # a named volume
        (volume_spec, "/run/docker.sock:/run/docker.sock", "/run/docker.sock:/run/docker.sock"),
        (mount_spec, "type=bind,source=C:\\s,target=/s", "type=bind,source=/c/s,target=/s"),
        (
            mount_spec,
            "type=bind,src=.\\a\\b,dst=/a,readonly",
            "type=bind,src=./a/b,dst=/a,readonly",
        ),
        (mount_spec, "type=volume,source=data,target=/d", "type=volume,source=data,target=/d"),
        (
            mount_spec,
            'type=bind,"source=C:\\a,b",target=/x',
            'type=bind,"source=C:\\a,b",target=/x',
        ),
    ],
)
def test_volume_and_mount_specs_translate_only_their_host_source(
    translate: Callable[[str], str], spec: str, expected: str
) -> None:
    assert translate(spec) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["run", "--rm", "-v", "C:\\src:/src", "--volume=D:\\d:/d", "alpine", "ls", "C:\\x"],
            ["run", "--rm", "-v", "/c/src:/src", "--volume=/d/d:/d", "alpine", "ls", "C:\\x"],
        ),
        (
            ["run", "--env-file", "C:\\a.env", "--mount", "type=bind,src=C:\\s,dst=/s", "i"],
            ["run", "--env-file", "/c/a.env", "--mount", "type=bind,src=/c/s,dst=/s", "i"],
        ),
        (
            ["build", "-f", "C:\\p\\Dockerfile", "-t", "x", "--build-arg", "P=C:\\y", "C:\\p"],
            ["build", "-f", "/c/p/Dockerfile", "-t", "x", "--build-arg", "P=C:\\y", "/c/p"],
        ),
        (["buildx", "build", ".\\ctx"], ["buildx", "build", "./ctx"]),
        (["ps", "-f", "name=C:\\x"], ["ps", "-f", "name=C:\\x"]),  # a filter, not a file
        (["cp", "C:\\f.txt", "ctr:/tmp/f"], ["cp", "/c/f.txt", "ctr:/tmp/f"]),
        (["load", "-i", "C:\\img.tar"], ["load", "-i", "/c/img.tar"]),
        (["image", "save", "--output=C:\\i.tar", "x"], ["image", "save", "--output=/c/i.tar", "x"]),
        (["--config", "C:\\cfg", "ps"], ["--config", "/c/cfg", "ps"]),
        (["run", "--", "-v", "C:\\x:/x"], ["run", "--", "-v", "C:\\x:/x"]),
        (["logs", "-f", "ctr"], ["logs", "-f", "ctr"]),
    ],
)
def test_windows_arguments_are_translated_where_they_name_host_files(
    args: list[str], expected: list[str]
) -> None:
    assert translate_args(args, WIN) == expected


def test_compose_files_and_volumes_are_translated_on_windows() -> None:
    args = ["-f", "C:\\p\\compose.yaml", "--project-directory=C:\\p", "run", "-v", "C:\\d:/d", "s"]
    assert translate_compose_args(args, WIN) == [
        "-f",
        "/c/p/compose.yaml",
        "--project-directory=/c/p",
        "run",
        "-v",
        "/c/d:/d",
        "s",
    ]
