"""Asking the guest's Docker engine whether it answers, over an SSH connection to the guest
(a streamlocal channel to its socket: no process starts in the guest, so polling is
cheap while the guest boots)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import paramiko

from pyd.engine.api import GUEST_DOCKER_SOCKET, http_get
from pyd.errors import PydError
from pyd.ssh.link_errors import LINK_ERRORS
from pyd.ssh.streamlocal import open_streamlocal

_ASK_ERRORS: tuple[type[Exception], ...] = (PydError, *LINK_ERRORS)


def ping(transport: paramiko.Transport, timeout: float = 10) -> bool:
    """True when dockerd answers /_ping with 200."""
    return answers(transport, "/_ping", timeout)


def answers(transport: paramiko.Transport, path: str, timeout: float = 10) -> bool:
    """True when dockerd answers GET `path` with 200."""
    try:
        chan = open_streamlocal(transport, GUEST_DOCKER_SOCKET, timeout=timeout)
    except _ASK_ERRORS:
        return False
    try:
        chan.settimeout(timeout)
        return http_get(chan, path).status == 200
    except LINK_ERRORS:
        return False
    finally:
        with contextlib.suppress(Exception):
            chan.close()


def wait_for_engine(
    transport: Callable[[float], paramiko.Transport],
    deadline: float,
    check: Callable[[], None] = lambda: None,
    poll: float = 0.2,
) -> None:
    """Until the engine answers. `transport(wait)` gives the link, waiting up to `wait` s for
    it; `check` is called before each ask and may raise to give up."""
    while True:
        check()
        if ping(transport(max(0.0, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            raise PydError(
                "the Docker engine in the guest did not answer in time",
                hint="see `pyd logs` (the guest console and /var/log/dockerd.log via `pyd ssh`)",
            )
        time.sleep(poll)
