"""host.fd_io: every byte reaches a non-blocking descriptor that fills, and a descriptor past
select()'s limit is still waited on."""

from __future__ import annotations

import os
import resource
import threading

import pytest

from pyd.host.fd_io import daemon_thread, wait_for, write_all


def test_write_all_waits_out_a_full_non_blocking_pipe() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)  # as a stdout shared with another process may be
    data = os.urandom(1 << 20)  # far more than a pipe holds
    got = bytearray()

    def read() -> None:
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    reader = daemon_thread(read, "test-reader")
    try:
        write_all(w, data)
    finally:
        os.close(w)
    reader.join(10)
    os.close(r)
    assert bytes(got) == data


def test_wait_for_takes_a_descriptor_above_fd_setsize() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1100:
        pytest.skip("the descriptor limit is below 1100")
    r, w = os.pipe()
    high = os.dup2(r, 1050)  # select() refuses numbers >= 1024
    try:
        threading.Timer(0.05, lambda: os.write(w, b"x")).start()
        assert wait_for([high], []) == {high}
        assert wait_for([], [w]) == {w}
    finally:
        for fd in (high, r, w):
            os.close(fd)
