"""The messages between `pyd docker` and the agent's exec socket (pure)."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import PurePosixPath

import pytest

from pyd.guestdocker.agent_link import use_frames
from pyd.guestdocker.exec_frames import (
    FRAME_HEADER,
    MAX_FRAME,
    TO_AGENT,
    TO_CLIENT,
    Kind,
    ack_frame,
    closed_frame,
    decode_header,
    exit_frame,
    frame,
    parse_closed,
    parse_exit,
    parse_number,
    parse_window,
    read_frame,
    signal_frame,
    window_frame,
)
from pyd.guestdocker.exec_protocol import (
    HEADER,
    MAX_REQUEST,
    ExecRequest,
    ProtocolError,
    decode_message,
    decode_request,
    encode_request,
    exec_endpoint,
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


# -- the framed mode (exec_frames) and the endpoints -----------------------------------------


@pytest.mark.parametrize("window", [None, (132, 43)])
def test_a_framed_request_keeps_its_mode_and_window(window: tuple[int, int] | None) -> None:
    term = "xterm" if window else None
    request = ExecRequest(GuestCommand("/", ("ps",)), term, framed=True, window=window)
    assert _round_trip(request) == request
    plain = ExecRequest(GuestCommand("/", ("ps",)))
    assert _round_trip(plain) == plain  # an older agent's request: no new keys
    assert b"framed" not in encode_request(plain)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"framed": 1}, "framed must be a boolean"),
        ({"window": [80, 24]}, "window must be"),  # a window without frames
        ({"framed": True, "window": [80]}, "window must be"),
        ({"framed": True, "window": [0, 24]}, "window must be"),
        ({"framed": True, "window": [70000, 24]}, "window must be"),
    ],
)
def test_a_framed_request_with_a_bad_mode_or_window_is_refused(
    extra: dict[str, object], error: str
) -> None:
    body = {"workdir": "/", "args": [], "env": [], "compose": False, "term": None} | extra
    with pytest.raises(ProtocolError, match=error):
        decode_request(json.dumps(body).encode())


def _frames(data: bytes, allowed: frozenset[Kind]) -> list[tuple[Kind, bytes]]:
    stream = io.BytesIO(data)
    found = []
    while (got := read_frame(stream.read, allowed)) is not None:
        found.append(got)
    return found


def test_frames_come_back_as_they_were_sent_in_both_directions() -> None:
    big = os.urandom(MAX_FRAME)
    to_agent = b"".join(
        [frame(Kind.STDIN, b"abc"), frame(Kind.STDIN, big), window_frame(200, 50),
         signal_frame(signal.SIGINT), closed_frame(2), frame(Kind.STDIN_EOF)]
    )  # fmt: skip
    assert _frames(to_agent, TO_AGENT) == [
        (Kind.STDIN, b"abc"),
        (Kind.STDIN, big),
        (Kind.WINDOW, bytes.fromhex("00c8 0032")),
        (Kind.SIGNAL, bytes.fromhex("00000002")),
        (Kind.CLOSED, b"\x02"),
        (Kind.STDIN_EOF, b""),
    ]
    kinds = _frames(to_agent, TO_AGENT)
    assert parse_window(kinds[2][1]) == (200, 50)
    assert parse_number(kinds[3][1]) == signal.SIGINT
    assert parse_closed(kinds[4][1]) == 2
    to_client = b"".join(
        [frame(Kind.STARTED), frame(Kind.STDOUT, b"\0out"), frame(Kind.STDERR, b"err"),
         ack_frame(3), exit_frame(125, "boom", "try this"), exit_frame(3)]
    )  # fmt: skip
    got = _frames(to_client, TO_CLIENT)
    assert [k for k, _ in got] == [Kind.STARTED, Kind.STDOUT, Kind.STDERR, Kind.STDIN_ACK,
                                   Kind.EXIT, Kind.EXIT]  # fmt: skip
    assert got[1][1] == b"\0out" and parse_number(got[3][1]) == 3
    assert parse_exit(got[4][1]) == (125, "boom", "try this")
    assert parse_exit(got[5][1]) == (3, "", "")


def test_a_frame_split_anywhere_by_the_transport_still_reads_whole() -> None:
    data = frame(Kind.STDOUT, b"x" * 1000) + exit_frame(0)
    stream = io.BytesIO(data)
    got = []
    while (f := read_frame(lambda n: stream.read(min(n, 7)), TO_CLIENT)) is not None:
        got.append(f)
    assert got == [(Kind.STDOUT, b"x" * 1000), (Kind.EXIT, exit_message(0))]


def test_the_frame_size_is_bounded_both_ways() -> None:
    with pytest.raises(ValueError):
        frame(Kind.STDOUT, b"x" * (MAX_FRAME + 1))
    over = FRAME_HEADER.pack(Kind.STDIN, MAX_FRAME + 1)
    with pytest.raises(ProtocolError, match="STDIN frame of 262145 bytes"):
        _frames(over + b"x" * (MAX_FRAME + 1), TO_AGENT)
    # Refused from the header alone: nothing that size is read or held.
    with pytest.raises(ProtocolError):
        decode_header(FRAME_HEADER.pack(Kind.STDOUT, 2**32 - 1), TO_CLIENT)


@pytest.mark.parametrize(
    ("data", "allowed", "error"),
    [
        (bytes([99, 0, 0, 0, 0]), TO_AGENT, "unknown frame type 99"),
        (frame(Kind.STDOUT, b"x"), TO_AGENT, "STDOUT frame in this direction"),
        (frame(Kind.SIGNAL, b"x"), TO_CLIENT, "SIGNAL frame in this direction"),
        (FRAME_HEADER.pack(Kind.SIGNAL, 2) + b"xx", TO_AGENT, "instead of 4"),
        (FRAME_HEADER.pack(Kind.STDIN_EOF, 1) + b"x", TO_AGENT, "instead of 0"),
        (FRAME_HEADER.pack(Kind.STDIN, 0), TO_AGENT, "empty STDIN"),
        (frame(Kind.STDIN, b"abc")[:-1], TO_AGENT, "ended inside a frame"),
        (frame(Kind.STDIN, b"abc")[:3], TO_AGENT, "ended inside a frame"),
        (frame(Kind.EXIT, b"[1]"), TO_CLIENT, None),
        (frame(Kind.EXIT, b'{"exit": true}'), TO_CLIENT, None),
        (frame(Kind.CLOSED, b"\x03"), TO_AGENT, None),
        (window_frame(1, 1)[:5] + b"\0\0\0\1", TO_AGENT, None),
    ],
)
def test_a_bad_frame_is_a_protocol_error(
    data: bytes, allowed: frozenset[Kind], error: str | None
) -> None:
    with pytest.raises(ProtocolError, match=error):
        for kind, payload in _frames(data, allowed):
            {Kind.EXIT: parse_exit, Kind.CLOSED: parse_closed, Kind.WINDOW: parse_window}.get(
                kind, bytes
            )(payload)


def test_the_end_between_two_frames_is_the_end() -> None:
    assert _frames(b"", TO_AGENT) == []
    assert _frames(frame(Kind.STDIN_EOF), TO_AGENT) == [(Kind.STDIN_EOF, b"")]


def test_window_sizes_outside_what_the_frame_holds_are_clamped() -> None:
    assert parse_window(window_frame(0, 10**6)[FRAME_HEADER.size :]) == (1, 0xFFFF)


@pytest.mark.parametrize(
    ("platform", "kind", "address"),
    [
        ("linux", "unix", "/home/u/.pyd/instances/dev/sock/exec.sock"),
        ("darwin", "unix", "/home/u/.pyd/instances/dev/sock/exec.sock"),
        ("win32", "pipe", r"\\.\pipe\pyd-dev.exec"),
    ],
)
def test_the_exec_endpoint_per_platform(platform: str, kind: str, address: str) -> None:
    endpoint = exec_endpoint(platform, "dev", PurePosixPath("/home/u/.pyd/instances/dev"))
    assert (endpoint.kind, endpoint.address) == (kind, address)


@pytest.mark.parametrize("other", ["default", "default-exec", "x-exec", "exec"])
def test_the_exec_pipe_is_no_instances_docker_api_pipe(other: str) -> None:
    """Not even of an instance named like it ("x-exec" next to "x")."""
    from pyd.config.settings import validate_name
    from pyd.relay.named_pipe import pipe_name

    validate_name(other)  # a name an instance can have
    for name in ("default", "x"):
        assert exec_endpoint("win32", name, PurePosixPath("/x")).address != pipe_name(other)


@pytest.mark.parametrize(
    ("platform", "env", "passing", "framed"),
    [
        ("linux", {}, True, False),
        ("darwin", {}, True, False),
        ("linux", {"PYD_EXEC_FRAMED": "1"}, True, True),
        ("linux", {"PYD_EXEC_FRAMED": "0"}, True, False),
        ("linux", {}, False, True),  # no send_fds in this Python
        ("win32", {}, False, True),
    ],
)
def test_when_the_streams_go_as_frames(
    platform: str, env: dict[str, str], passing: bool, framed: bool
) -> None:
    endpoint = exec_endpoint(platform, "dev", PurePosixPath("/i"))
    assert use_frames(endpoint, env, passing) is framed
