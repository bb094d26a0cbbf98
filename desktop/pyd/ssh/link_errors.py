"""What a dead or dying SSH link raises: one definition for every caller that must survive it."""

from __future__ import annotations

import paramiko

# paramiko raises SSHException for protocol failures, EOFError when the transport closes under
# a read, and OSError (socket.timeout and TimeoutError among them) for the socket itself.
LINK_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, paramiko.SSHException)
