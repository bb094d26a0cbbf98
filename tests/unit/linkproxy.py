"""A loopback TCP proxy whose link can be cut the way `iptables -j DROP` cuts one: while cut,
bytes stop flowing both ways on live connections (they flow again once restored, as TCP
retransmits them) and new connections get nowhere: refused, or with `hold`, accepted and then
never answered (QEMU's user network accepts for a paused guest, which never answers)."""

from __future__ import annotations

import contextlib
import socket
import threading


class LinkProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._up = threading.Event()
        self._up.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._hold = False
        self.turned_away = 0  # connections made while cut: tests wait for attempts with it
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, hold: bool = False) -> None:
        self._hold = hold
        self._up.clear()

    def restore(self) -> None:
        self._up.set()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # until close()
            while True:
                conn, _ = self._listener.accept()
                if not self._up.is_set():
                    self.turned_away += 1
                    if self._hold:
                        with self._lock:
                            self._socks.append(conn)  # silent for as long as it is open
                    else:
                        conn.close()  # a dropped SYN, as far as the client can tell
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                with self._lock:
                    self._socks += [conn, upstream]
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self._up.wait()
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._up.set()
        # shutdown first: a bare close() leaves the port listening while accept() blocks on it.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
