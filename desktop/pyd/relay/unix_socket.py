"""A host Unix socket whose connections are relayed to SSH channels (the Docker socket on macOS
and Linux hosts), and the private listening socket under it (also the agent's exec socket).

Who may connect is decided by file permissions alone: the socket is 0600 inside a 0700
directory owned by us. The directory matters on its own: macOS ignores a socket file's mode on
connect(), Linux honours it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import sys
from pathlib import Path

from pyd.errors import PydError
from pyd.relay.connections import Connections, ConnectionThreads, OpenChannel, Refuse
from pyd.relay.listening import ListeningForward

log = logging.getLogger("pyd.relay")

# Connections the kernel queues before accept(): a burst of clients (a test suite, a build's
# parallel steps) must queue, not get EAGAIN. The kernel caps it at net.core.somaxconn
# (Linux: 4096 since 5.4; macOS: kern.ipc.somaxconn, 128 by default).
BACKLOG = 4096

# sun_path holds 108 bytes on Linux, 104 on macOS and the BSDs, including the final NUL.
MAX_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103


class SocketPathError(PydError):
    """The socket cannot be served at that path (too long, unsafe directory, in use)."""


def check_socket_path(path: Path) -> None:
    """Raises SocketPathError when `path` is too long to bind a Unix socket at."""
    n = len(os.fsencode(path))
    if n > MAX_PATH_BYTES:
        raise SocketPathError(
            f"the socket path {path} is {n} bytes long; Unix sockets allow at most "
            f"{MAX_PATH_BYTES} on this system",
            hint="set PYD_HOME to a shorter directory (for example ~/.pyd) and start again",
        )


def _private_dir(directory: Path) -> None:
    """Creates `directory` 0700, or checks that an existing one is ours and private."""
    if sys.platform == "win32":
        raise SocketPathError("Unix sockets are served on POSIX hosts only")
    try:
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered through the umask
    except FileExistsError:
        pass
    st = directory.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise SocketPathError(
            f"the directory {directory} for the agent's sockets is not private "
            f"(mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}); other users could "
            "reach the socket",
            hint=f"chmod 700 {directory} (it must be owned by you)",
        )


def _clear_stale(path: Path) -> None:
    """Removes a socket file nobody answers on; refuses a live socket or any other file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(
            f"{path} exists and is not a socket; refusing to replace it",
            hint="move that file away",
        )
    if sys.platform == "win32":
        raise SocketPathError("Unix sockets are served on POSIX hosts only")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("removed the stale socket %s", path)
        return
    except OSError as e:  # a timeout: a listener that does not accept is still a listener
        raise SocketPathError(
            f"cannot tell whether {path} is in use: {e}",
            hint="if no pyd agent is running for this instance, remove the file",
        ) from e
    finally:
        probe.close()
    raise SocketPathError(
        f"something already answers on {path}",
        hint="another pyd agent may be serving this instance; `pyd status` shows it",
    )


class UnixSocketListener(ListeningForward):
    """Serves the socket `path` (0600, in a private directory); `conns` serves each
    connection."""

    def __init__(self, path: Path, conns: ConnectionThreads) -> None:
        self.path = Path(path)
        self._inode: tuple[int, int] | None = None
        super().__init__(conns)

    def start(self) -> None:
        """Binds the socket (0600 before it accepts anything) and serves it in a thread."""
        check_socket_path(self.path)
        _private_dir(self.path.parent)
        _clear_stale(self.path)
        if sys.platform == "win32":  # Windows serves a named pipe (relay/named_pipe.py)
            raise SocketPathError("Unix sockets are served on POSIX hosts only")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            if sys.platform.startswith("linux"):
                # Linux gives the socket file the mode of the socket's inode (less the umask):
                # set it before bind() so the file is never wider. (Not os.umask(): that is
                # process-wide, and the agent has other threads creating files.)
                os.fchmod(listener.fileno(), 0o600)
            listener.bind(str(self.path))
            bound = True
            # Before listen(), connect() is refused anyway, so nobody can get in while a
            # wider mode (other systems) is still on the file.
            os.chmod(self.path, 0o600)
            st = self.path.lstat()
            self._inode = (st.st_dev, st.st_ino)
            listener.listen(BACKLOG)
        except OSError as e:
            listener.close()
            if bound:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            raise SocketPathError(f"cannot serve the socket {self.path}: {e}") from e
        self._serve(listener)
        log.info("serving %s", self.path)

    def _unpublish(self) -> None:
        # close() removes the socket file, but only our own: a later agent may have replaced
        # it meanwhile. Removing it while the listener is still open is harmless: a connect()
        # finds no file.
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class UnixSocketForward(UnixSocketListener):
    """Serves `path`; every connection gets a fresh channel from `open_channel` and is relayed
    to it. `open_channel` is called per connection, so the owner can swap the SSH connection
    underneath (after a reconnect) without restarting the forward."""

    def __init__(
        self,
        path: Path,
        open_channel: OpenChannel,
        name: str = "docker",
        refuse: Refuse | None = None,
    ) -> None:
        super().__init__(path, Connections(str(path), name, open_channel, refuse))

    @property
    def endpoint(self) -> str:
        return f"unix://{self.path}"
