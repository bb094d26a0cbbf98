r"""The Docker endpoint on Windows hosts: the named pipe `\\.\pipe\pyd-NAME`, each connection
relayed to an SSH channel with the same relay as the Unix socket.

The pipe is made the way dockerd makes `\\.\pipe\docker_engine` (go-winio's ListenPipe), since
the docker CLI's pipe client (go-winio DialPipe) is what talks to it:
- message type, byte read mode: the only way a named pipe has of half-closing. go-winio's
  CloseWrite writes a zero-length message, and its reader takes a zero-byte read as EOF. We
  do the same both ways, which `docker run -i` and `docker exec` need (see pump.py).
- PIPE_REJECT_REMOTE_CLIENTS: never reachable over SMB.
- a DACL granting access to the current user only (its SID), protected from inheritance
  (host.win_security, which makes the instance directory the user's alone the same way).
- FILE_FLAG_FIRST_PIPE_INSTANCE on the first instance: if someone else already serves the
  name, start() fails instead of quietly sharing it with them.
- overlapped handles: a synchronous pipe handle serialises all I/O on it, so a read blocked in
  one thread would stall the write in the other.

Importable everywhere (the Windows API is loaded on first use, inside `win32` blocks that
mypy skips on other platforms); start() off Windows is a PydError.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Callable

from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.relay.connections import (
    Connections,
    ConnectionThreads,
    OpenChannel,
    Refuse,
    ServedForward,
)

log = logging.getLogger("pyd.relay")

BUFFER_SIZE = 64 * 1024  # as dockerd's pipe: in and out buffers of the pipe itself


def pipe_name(instance: str) -> str:
    return rf"\\.\pipe\pyd-{instance}"


class PipeInUseError(PydError):
    """Another process already serves this pipe name."""


class NamedPipeListener(ServedForward):
    r"""Serves the pipe `path` (current user only); `conns` serves each connection (also the
    agent's exec pipe, `\\.\pipe\pyd-INSTANCE.exec`)."""

    def __init__(self, path: str, conns: ConnectionThreads) -> None:
        self.path = path
        self._conns = conns
        self._closing = self._conns.closing
        self._thread: threading.Thread | None = None
        self._server: object | None = None
        # stop() (close()) and close() (the accept thread, on its way out) never overlap: a
        # stop after the close would signal a handle that may have been reused.
        self._server_lock = threading.Lock()

    def start(self) -> None:
        if sys.platform != "win32":
            raise PydError(
                f"cannot serve {self.path}: named pipes exist only on Windows",
                hint="on this system pyd serves Unix sockets instead",
            )
        else:
            server = _PipeServer(self.path)
            self._server = server
            self._thread = threading.Thread(
                target=self._serve,
                args=(server,),
                name=f"pyd-forward-{self._conns.name}",
                daemon=True,
            )
            self._thread.start()
            log.info("serving %s", self.path)

    def close(self) -> None:
        """Stops accepting and aborts live connections; no waits."""
        self._closing.set()
        if sys.platform == "win32" and isinstance(self._server, _PipeServer):
            with self._server_lock:
                self._server.stop()
        self._conns.close()

    def join(self, deadline: Deadline) -> bool:
        accepting = join_threads([self._thread] if self._thread is not None else [], deadline)
        return self._conns.join(deadline) and accepting

    if sys.platform == "win32":

        def _serve(self, server: _PipeServer) -> None:
            try:
                self._accept_until_closed(server)
            finally:
                with self._server_lock:
                    server.close()

        def _accept_until_closed(self, server: _PipeServer) -> None:
            while not self._closing.is_set():
                try:
                    stream = server.accept()
                except OSError as e:
                    if self._closing.is_set():
                        return
                    log.error("%s: accepting a connection failed: %s", self.path, e)
                    self._closing.wait(0.5)
                    continue
                if stream is None:  # stopped
                    return
                self._conns.spawn(stream)


class NamedPipeForward(NamedPipeListener):
    r"""Serves `\\.\pipe\pyd-INSTANCE`; each connection gets a channel from `open_channel`
    (called per connection, so the owner may swap the SSH connection after a reconnect)."""

    def __init__(
        self, instance: str, open_channel: OpenChannel, refuse: Refuse | None = None
    ) -> None:
        self.instance = instance
        path = pipe_name(instance)
        super().__init__(path, Connections(path, instance, open_channel, refuse))

    @property
    def endpoint(self) -> str:
        return f"npipe:////./pipe/pyd-{self.instance}"


if sys.platform == "win32":
    import ctypes
    import functools
    from ctypes import wintypes

    from pyd.host.win_security import (
        SECURITY_ATTRIBUTES,
        OwnerOnlyAttributes,
        Securable,
        win_function,
    )
    from pyd.host.win_security import win_error as _error

    ERROR_ACCESS_DENIED = 5
    ERROR_BROKEN_PIPE = 109
    ERROR_PIPE_BUSY = 231
    ERROR_NO_DATA = 232
    ERROR_PIPE_NOT_CONNECTED = 233
    ERROR_MORE_DATA = 234
    ERROR_PIPE_CONNECTED = 535
    ERROR_IO_PENDING = 997
    _CLOSED_ERRORS = (ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED)

    PIPE_ACCESS_DUPLEX = 0x00000003
    FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
    FILE_FLAG_OVERLAPPED = 0x40000000
    PIPE_TYPE_MESSAGE = 0x00000004
    PIPE_READMODE_BYTE = 0x00000000
    PIPE_WAIT = 0x00000000
    PIPE_REJECT_REMOTE_CLIENTS = 0x00000008
    PIPE_UNLIMITED_INSTANCES = 255
    WAIT_OBJECT_0 = 0
    INFINITE = 0xFFFFFFFF
    INVALID_HANDLE_VALUE = wintypes.HANDLE(-1).value

    class OVERLAPPED(ctypes.Structure):
        _fields_ = [
            ("Internal", ctypes.c_void_p),
            ("InternalHigh", ctypes.c_void_p),
            ("Offset", wintypes.DWORD),
            ("OffsetHigh", wintypes.DWORD),
            ("hEvent", wintypes.HANDLE),
        ]

    class _Api:
        """kernel32's pipe functions with their C signatures (64-bit handles intact)."""

        def __init__(self) -> None:
            k32 = ctypes.WinDLL("kernel32", use_last_error=True)
            H, B, D = wintypes.HANDLE, wintypes.BOOL, wintypes.DWORD
            P, fn = ctypes.POINTER, win_function

            self.CreateNamedPipeW = fn(
                k32,
                "CreateNamedPipeW",
                H,
                wintypes.LPCWSTR,
                D,
                D,
                D,
                D,
                D,
                D,
                P(SECURITY_ATTRIBUTES),
            )
            self.ConnectNamedPipe = fn(k32, "ConnectNamedPipe", B, H, P(OVERLAPPED))
            self.DisconnectNamedPipe = fn(k32, "DisconnectNamedPipe", B, H)
            self.ReadFile = fn(k32, "ReadFile", B, H, wintypes.LPVOID, D, P(D), P(OVERLAPPED))
            self.WriteFile = fn(k32, "WriteFile", B, H, wintypes.LPCVOID, D, P(D), P(OVERLAPPED))
            self.GetOverlappedResult = fn(k32, "GetOverlappedResult", B, H, P(OVERLAPPED), P(D), B)
            self.FlushFileBuffers = fn(k32, "FlushFileBuffers", B, H)
            self.CancelIoEx = fn(k32, "CancelIoEx", B, H, P(OVERLAPPED))
            self.CreateEventW = fn(k32, "CreateEventW", H, wintypes.LPVOID, B, B, wintypes.LPCWSTR)
            self.SetEvent = fn(k32, "SetEvent", B, H)
            self.ResetEvent = fn(k32, "ResetEvent", B, H)
            self.WaitForMultipleObjects = fn(k32, "WaitForMultipleObjects", D, D, P(H), B, D)
            self.CloseHandle = fn(k32, "CloseHandle", B, H)

    @functools.cache
    def _api() -> _Api:
        return _Api()

    class _Event:
        def __init__(self) -> None:
            self.handle = _api().CreateEventW(None, True, False, None)
            if not self.handle:
                raise _error("CreateEventW")

        def close(self) -> None:
            if self.handle:
                _api().CloseHandle(self.handle)
                self.handle = None

    class _PipeServer:
        """Pipe instances, one waiting for a client at a time; accept() hands out the
        connected one and creates the next."""

        def __init__(self, path: str) -> None:
            self.path = path
            self._sa = OwnerOnlyAttributes(Securable.PIPE)
            self._stop = _Event()
            self._connected = _Event()
            try:
                self._waiting = self._new_instance(first=True)
            except BaseException:
                self.close()
                raise

        def _new_instance(self, first: bool = False) -> int:
            api = _api()
            flags = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED
            if first:
                flags |= FILE_FLAG_FIRST_PIPE_INSTANCE
            handle = api.CreateNamedPipeW(
                self.path,
                flags,
                PIPE_TYPE_MESSAGE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                BUFFER_SIZE,
                BUFFER_SIZE,
                0,
                ctypes.byref(self._sa.attrs),
            )
            if handle == INVALID_HANDLE_VALUE or not handle:
                code = ctypes.get_last_error()
                if first and code in (ERROR_ACCESS_DENIED, ERROR_PIPE_BUSY):
                    raise PipeInUseError(
                        f"something already serves {self.path}",
                        hint="another pyd agent may be serving this instance; "
                        "`pyd status` shows it",
                    )
                raise ctypes.WinError(code, f"CreateNamedPipeW {self.path}")
            return int(handle)

        def accept(self) -> _PipeStream | None:
            """The next connected client, or None once stop() was called."""
            api = _api()
            while True:
                if not self._waiting:  # creating it failed last time
                    self._waiting = self._new_instance()
                handle = self._waiting
                ov = OVERLAPPED()
                ov.hEvent = self._connected.handle
                api.ResetEvent(self._connected.handle)
                if api.ConnectNamedPipe(handle, ctypes.byref(ov)):
                    code = 0
                else:
                    code = ctypes.get_last_error()
                if code == ERROR_IO_PENDING:
                    events = (wintypes.HANDLE * 2)(self._connected.handle, self._stop.handle)
                    which = api.WaitForMultipleObjects(2, events, False, INFINITE)
                    n = wintypes.DWORD()
                    if which != WAIT_OBJECT_0:
                        api.CancelIoEx(handle, ctypes.byref(ov))
                        api.GetOverlappedResult(handle, ctypes.byref(ov), ctypes.byref(n), True)
                        return None
                    code = 0
                    if not api.GetOverlappedResult(
                        handle, ctypes.byref(ov), ctypes.byref(n), False
                    ):
                        code = ctypes.get_last_error()
                if code in (0, ERROR_PIPE_CONNECTED):
                    stream = _PipeStream(handle)
                    try:
                        self._waiting = self._new_instance()
                    except BaseException:
                        self._waiting = 0
                        stream.close()
                        raise
                    return stream
                if code == ERROR_NO_DATA:  # the client came and went: reuse the instance
                    api.DisconnectNamedPipe(handle)
                    continue
                raise ctypes.WinError(code, f"ConnectNamedPipe {self.path}")

        def stop(self) -> None:
            if self._stop.handle:
                _api().SetEvent(self._stop.handle)

        def close(self) -> None:
            waiting = getattr(self, "_waiting", None)
            if waiting:
                _api().CloseHandle(waiting)
                self._waiting = 0
            self._stop.close()
            self._connected.close()
            self._sa.free()

    class _PipeStream:
        """A connected pipe instance with the socket methods the relay uses. Reads and
        writes may run at once from two threads: each has its own OVERLAPPED and event."""

        def __init__(self, handle: int) -> None:
            self.handle = handle
            self._read_event = _Event()
            self._write_event = _Event()
            self._read_eof = False
            self._write_closed = False
            self._lock = threading.Lock()

        def _io(self, start: Callable[[OVERLAPPED], bool], event: _Event) -> tuple[int, int]:
            """Runs one overlapped operation to completion: (bytes moved, Windows error)."""
            api = _api()
            ov = OVERLAPPED()
            ov.hEvent = event.handle
            api.ResetEvent(event.handle)
            n = wintypes.DWORD()
            if not start(ov):
                code = ctypes.get_last_error()
                if code != ERROR_IO_PENDING:
                    return 0, code
            if not api.GetOverlappedResult(self.handle, ctypes.byref(ov), ctypes.byref(n), True):
                return n.value, ctypes.get_last_error()
            return n.value, 0

        def recv(self, bufsize: int, /) -> bytes:
            if self._read_eof:
                return b""
            buf = ctypes.create_string_buffer(bufsize)
            n, code = self._io(
                lambda ov: bool(_api().ReadFile(self.handle, buf, bufsize, None, ctypes.byref(ov))),
                self._read_event,
            )
            if code in _CLOSED_ERRORS or (code == 0 and n == 0):
                # A zero-byte read is a zero-length message: the client's CloseWrite.
                self._read_eof = True
                return b""
            if code not in (0, ERROR_MORE_DATA):
                raise ctypes.WinError(code, f"ReadFile {self.handle}")
            return buf.raw[:n]

        def _write(self, data: bytes) -> int:
            n, code = self._io(
                lambda ov: bool(
                    _api().WriteFile(self.handle, data, len(data), None, ctypes.byref(ov))
                ),
                self._write_event,
            )
            if code in _CLOSED_ERRORS:
                raise BrokenPipeError(code, "the pipe client has gone")
            if code:
                raise ctypes.WinError(code, f"WriteFile {self.handle}")
            return n

        def sendall(self, data: bytes, /) -> None:
            if self._write_closed:
                raise BrokenPipeError("the pipe was closed for writing")
            view = memoryview(data)
            while view:
                n = self._write(bytes(view))
                view = view[n:]

        def shutdown(self, how: int, /) -> None:
            api = _api()
            if how in (socket.SHUT_WR, socket.SHUT_RDWR) and not self._write_closed:
                self._write_closed = True
                if how == socket.SHUT_WR:
                    # As go-winio's CloseWrite: wait until the client has read everything, so
                    # the zero-length message is not merged into data in its byte-mode read.
                    api.FlushFileBuffers(self.handle)
                    with contextlib.suppress(OSError):
                        self._write(b"")
            if how in (socket.SHUT_RD, socket.SHUT_RDWR):
                self._read_eof = True
            if how == socket.SHUT_RDWR:
                # Abort: wake both threads' pending I/O and drop the client.
                api.CancelIoEx(self.handle, None)
                api.DisconnectNamedPipe(self.handle)

        def close(self) -> None:
            with self._lock:
                if self.handle:
                    api = _api()
                    api.CancelIoEx(self.handle, None)
                    api.CloseHandle(self.handle)
                    self.handle = 0
                self._read_event.close()
                self._write_event.close()
