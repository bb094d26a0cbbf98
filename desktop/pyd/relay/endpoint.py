"""Where the Docker API of an instance is served on the host: a Unix socket on macOS and Linux,
the named pipe `\\\\.\\pipe\\pyd-NAME` on Windows (Docker's own `docker_engine` pipe style)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Protocol

import paramiko

from pyd.host.threads import Deadline
from pyd.relay.named_pipe import NamedPipeForward
from pyd.relay.pump import HostStream


class DockerForward(Protocol):
    """A host endpoint whose connections are relayed to channels from `open_channel`; a
    thread owner (pyd.host.threads)."""

    @property
    def endpoint(self) -> str: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def join(self, deadline: Deadline) -> bool: ...


def docker_endpoint(instance: str, socket_path: PurePath, platform: str) -> str:
    """The DOCKER_HOST / docker context URL for `instance` on `platform` (sys.platform)."""
    if platform == "win32":
        return f"npipe:////./pipe/pyd-{instance}"
    if not socket_path.is_absolute():
        raise ValueError(f"the Docker socket path must be absolute: {socket_path}")
    return f"unix://{socket_path.as_posix()}"


def make_docker_forward(
    instance: str,
    socket_path: PurePath,
    open_channel: Callable[[], paramiko.Channel],
    platform: str = sys.platform,
    unreachable: Callable[[Exception], str] | None = None,
) -> DockerForward:
    """The forward serving `instance`'s Docker endpoint on `platform` (not started). When no
    channel opens, a client gets an HTTP error with `unreachable(error)` as its message."""
    refuse = None
    if unreachable is not None:
        from pyd.relay.http_refusal import refuse_http

        why = unreachable

        def refuse(stream: HostStream, e: Exception) -> None:
            refuse_http(stream, why(e))

    if platform == "win32":
        return NamedPipeForward(instance, open_channel, refuse)
    from pyd.relay.unix_socket import UnixSocketForward

    return UnixSocketForward(Path(socket_path), open_channel, refuse=refuse)
