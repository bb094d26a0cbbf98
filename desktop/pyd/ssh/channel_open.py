"""What a failed open of a forwarding channel (direct-tcpip, direct-streamlocal) means to the
user: the guest's sshd refused (nothing behind the address, forwarding disabled), or the SSH
connection itself is gone or too slow. Both channel kinds say it the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import paramiko

from pyd.errors import PydError

ChannelOpenError = Callable[[str, str], PydError]
"""(message, hint) -> the caller's own error, which carries what the channel was for."""


@contextlib.contextmanager
def channel_open_errors(where: str, refused_hint: str, error: ChannelOpenError) -> Iterator[None]:
    """Turns a failed channel open inside the block into `error(message, hint)`; `where` names
    the channel's end in the guest, `refused_hint` says what to check when sshd refuses."""
    try:
        yield
    except paramiko.ChannelException as e:
        raise error(
            f"the guest refused a connection to {where}: {e.text} (SSH open failure {e.code})",
            refused_hint,
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise error(
            f"could not open an SSH channel to {where} in the guest: {e or type(e).__name__}",
            "the SSH connection to the guest may have dropped; `pyd status` shows it",
        ) from e
