"""What the forwards that listen on a socket (a TCP port, a Unix socket) share: one thread
accepts on the listener and hands every connection to the forward's Connections.

The thread sleeps in a selector on the listener and on one end of a socket pair; close()
writes to the other end, so the loop wakes and ends at once instead of polling for it. The
thread closes the listener itself on its way out: closed from another thread, its descriptor
could be reused while the selector still holds it.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading

from pyd.host.threads import Deadline, join_threads
from pyd.relay.connections import ConnectionThreads, ServedForward

log = logging.getLogger("pyd.relay")


class ListeningForward(ServedForward):
    """A forward serving a listening socket: a subclass's start() binds it and hands it to
    _serve(); close() stops accepting (_unpublish() first) and aborts live connections; the
    accept thread closes the listener as it ends; join() waits for it all."""

    def __init__(self, conns: ConnectionThreads) -> None:
        self._conns = conns
        self._closing = conns.closing
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None  # wakes the selector
        self._wake_lock = threading.Lock()  # a wake never writes to an end being closed
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        """Stops accepting and aborts live connections; no waits."""
        self._closing.set()
        self._unpublish()
        with self._wake_lock:
            if self._wake is not None:
                with contextlib.suppress(OSError):  # full: a wake is pending already
                    self._wake[1].send(b"x")
        self._conns.close()

    def join(self, deadline: Deadline) -> bool:
        accepting = join_threads([self._thread] if self._thread is not None else [], deadline)
        return self._conns.join(deadline) and accepting

    def _unpublish(self) -> None:
        """Runs in close(): takes the address from new clients before close() returns (a Unix
        socket's file: the directory it is in may be removed next)."""

    def _prepare(self, conn: socket.socket) -> None:
        """Runs on each accepted connection (blocking by now) before it is relayed."""

    def _serve(self, listener: socket.socket) -> None:
        """Accepts on `listener` (bound and listening) in a thread until close()."""
        listener.setblocking(False)
        self._listener = listener
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._accept, name=f"pyd-forward-{self._conns.name}", daemon=True
        )
        self._thread.start()

    def _accept(self) -> None:
        listener, wake = self._listener, self._wake
        assert listener is not None and wake is not None
        try:
            self._accept_until_closed(listener, wake[0])
        finally:
            self._listener = None
            listener.close()
            with self._wake_lock:
                self._wake = None
                for end in wake:
                    end.close()

    def _accept_until_closed(self, listener: socket.socket, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while not self._closing.is_set():
                sel.select()
                while not self._closing.is_set():  # everything queued, then wait again
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        # EMFILE and friends: keep serving, but don't spin on the error.
                        log.error("%s: accept failed: %s", self._conns.label, e)
                        self._closing.wait(0.5)
                        break
                    conn.setblocking(True)
                    self._prepare(conn)
                    self._conns.spawn(conn)
