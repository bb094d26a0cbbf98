"""The messages between `pyd docker` and the agent's exec socket (pure)."""

from __future__ import annotations

import json
import os

import pytest

from pyd.guestdocker.exec_protocol import (
    HEADER,
    MAX_REQUEST,
    ExecRequest,
    ProtocolError,
    decode_message,
    decode_request,
    encode_request,
    exit_message,
    request_length,
    signal_message,
)
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.tools import COMPOSE, DOCKER, Tool

RAW = os.fsdecode(b"\xff\xfe not utf-8")  # as argv holds such bytes: surrogateescape


def _round_trip(request: ExecRequest) -> ExecRequest:
    data = encode_request(request)
    n = request_length(data[: HEADER.size])
    assert n == len(data) - HEADER.size
    return decode_request(data[HEADER.size :])


@pytest.mark.parametrize("term", [None, "xterm-256color"])
def test_a_request_comes_back_as_it_was_sent(term: str | None) -> None:
    command = GuestCommand(
        "/home/u/it's here",
        ("run", "-v", ".:/src", "", "é 漢字", "new\nline", RAW),
        (("DOCKER_BUILDKIT", "1"), ("COMPOSE_X", 'a "b" $c')),
        tool=COMPOSE,
    )
    request = ExecRequest(command, term)
    back = _round_trip(request)
    assert back == request
    assert back.interactive is (term is not None)
    assert os.fsencode(back.command.args[-1]) == b"\xff\xfe not utf-8"


def test_the_request_is_ascii_on_the_wire() -> None:
    """Lone surrogates cannot be UTF-8 encoded: they travel as JSON escapes."""
    data = encode_request(ExecRequest(GuestCommand("/", (RAW, "漢"))))
    assert data[HEADER.size :].isascii()


@pytest.mark.parametrize(("tool", "flag"), [(DOCKER, False), (COMPOSE, True)])
def test_the_program_travels_as_the_compose_flag_older_agents_read(
    tool: Tool, flag: bool
) -> None:
    data = encode_request(ExecRequest(GuestCommand("/", ("ps",), tool=tool)))
    assert json.loads(data[HEADER.size :])["compose"] is flag
    assert decode_request(data[HEADER.size :]).command.tool is tool


@pytest.mark.parametrize("n", [0, MAX_REQUEST + 1])
def test_a_request_length_out_of_bounds_is_refused(n: int) -> None:
    with pytest.raises(ProtocolError):
        request_length(HEADER.pack(n))


def test_a_short_header_is_refused() -> None:
    with pytest.raises(ProtocolError):
        request_length(b"\0\0")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff",
        b"[]",
        b'{"workdir": "/", "args": [], "env": [], "compose": false}x',
        b'{"args": [], "env": [], "compose": false}',
        b'{"workdir": "/", "args": [1], "env": [], "compose": false}',
        b'{"workdir": "/", "args": [], "env": [["A"]], "compose": false}',
        b'{"workdir": "/", "args": [], "env": [["A", 1]], "compose": false}',
        b'{"workdir": "/", "args": [], "env": [], "compose": "yes"}',
        b'{"workdir": "/", "args": [], "env": [], "compose": false, "term": 5}',
    ],
)
def test_a_malformed_request_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(body)


def test_messages_are_json_lines() -> None:
    assert decode_message(signal_message(2)) == {"signal": 2}
    assert decode_message(exit_message(3)) == {"exit": 3}
    assert decode_message(exit_message(1, "gone", "look")) == {
        "exit": 1,
        "error": "gone",
        "hint": "look",
    }
    for line in (signal_message(2), exit_message(1, "é", "")):
        assert line.endswith(b"\n") and line.count(b"\n") == 1


@pytest.mark.parametrize("line", [b"{", b"[1]", b"\xff\n"])
def test_a_malformed_message_is_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(line)
