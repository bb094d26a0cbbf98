"""Opening forwarding channels (direct-tcpip, direct-streamlocal): what a failed open means to
the user, the fields paramiko cannot write itself, and no channel left behind by a timeout.

paramiko's `Transport.open_channel(kind)` does everything a channel needs (id, windows, waiting
for the answer, turning a refusal into ChannelException) except two things:

- Type-specific fields of kinds it does not know (direct-streamlocal@openssh.com, paramiko#544).
  `open_channel` hands its CHANNEL_OPEN message to `Transport._send_user_message(m)`, on the
  calling thread; we wrap that method on each transport we use (once) and let the opening
  thread append its fields to that one message. Every other message, and every CHANNEL_OPEN
  sent by another thread, passes through unchanged. The wrapper also notes the channel id
  the message carries, for the next point.
- A channel the server confirms after we stopped waiting. paramiko raises "Timeout opening
  channel." but keeps the channel; when the confirmation comes, the channel opens and nobody
  ever closes it: in the guest an sshd channel and, behind it, a connection to dockerd or a
  published port stay open for as long as the SSH connection lives. Such channels are handed
  to a reaper that closes each one the moment it opens.

Paramiko internals used, all in this module: `Transport._send_user_message` and
`Transport._channels.get(chanid)`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import paramiko
from paramiko.common import MSG_CHANNEL_OPEN

from pyd.errors import PydError
from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.ssh")

ChannelOpenError = Callable[[str, str], PydError]
"""(message, hint) -> the caller's own error, which carries what the channel was for."""

AddFields = Callable[[paramiko.Message], None]

_WRAPPED = "_pyd_open_wrapped"
_wrap_lock = threading.Lock()
_pending = threading.local()  # .fields: AddFields | None; .chanid: int | None (last sent)

LATE_WAIT = 600.0  # how long a timed-out open is watched for a late confirmation


class OpenNotCompletedError(PydError):
    """paramiko sent the open without our fields: this paramiko does not send it the way
    this module expects."""


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
    except LINK_ERRORS as e:
        raise error(
            f"could not open an SSH channel to {where} in the guest: {e or type(e).__name__}",
            "the SSH connection to the guest may have dropped; `pyd status` shows it",
        ) from e


def _open_message(m: paramiko.Message) -> tuple[str, int] | None:
    """(kind, sender channel id) of a CHANNEL_OPEN message, else None."""
    probe = paramiko.Message(m.asbytes())
    if probe.get_byte()[0] != MSG_CHANNEL_OPEN:
        return None
    return probe.get_text(), probe.get_int()


def _wrap_send(transport: paramiko.Transport) -> None:
    """Installs (once per transport) the wrapper that completes and notes our opens."""
    with _wrap_lock:
        if getattr(transport, _WRAPPED, False):
            return
        send: Callable[[paramiko.Message], object] = transport._send_user_message

        def send_user_message(m: paramiko.Message) -> object:
            opening = getattr(_pending, "opening", False)
            if opening and (parsed := _open_message(m)) is not None:
                _pending.opening = False
                _pending.chanid = parsed[1]
                fields: AddFields | None = getattr(_pending, "fields", None)
                _pending.fields = None
                if fields is not None:
                    fields(m)
            return send(m)

        transport._send_user_message = send_user_message
        setattr(transport, _WRAPPED, True)


def open_channel(
    transport: paramiko.Transport,
    kind: str,
    timeout: float,
    add_fields: AddFields | None = None,
    **kwargs: object,
) -> paramiko.Channel:
    """`transport.open_channel(kind, timeout=timeout, **kwargs)`, with `add_fields` appending
    the kind's own fields to the message, and a channel confirmed after the timeout closed
    as soon as it opens. Raises what open_channel raises, or OpenNotCompletedError."""
    _wrap_send(transport)
    _pending.opening, _pending.chanid, _pending.fields = True, None, add_fields
    try:
        chan = transport.open_channel(kind, timeout=timeout, **kwargs)
    except paramiko.SSHException as e:
        chanid = getattr(_pending, "chanid", None)
        if chanid is not None and "Timeout" in str(e) and transport.is_active():
            late = transport._channels.get(chanid)
            if late is not None:
                _reaper.watch(transport, chanid, late)
        raise
    finally:
        unsent = getattr(_pending, "opening", False)
        _pending.opening, _pending.fields = False, None
    if unsent:
        chan.close()
        raise OpenNotCompletedError(
            f"this paramiko ({paramiko.__version__}) did not send its channel open through "
            "Transport._send_user_message, so the channel's own fields were never sent",
            hint="pin paramiko to a version pyd supports (see pyd/ssh/channel_open.py)",
        )
    return chan


class _LateReaper:
    """Closes channels whose open timed out on our side, once the server confirms them; forgets
    them when refused, when their transport ends, or after LATE_WAIT."""

    POLL = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._late: list[tuple[paramiko.Transport, int, paramiko.Channel, float]] = []
        self._thread: threading.Thread | None = None
        self.closed = 0  # late channels closed (tests, logs)

    def watch(self, transport: paramiko.Transport, chanid: int, chan: paramiko.Channel) -> None:
        with self._lock:
            self._late.append((transport, chanid, chan, time.monotonic() + LATE_WAIT))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="pyd-ssh-late-opens", daemon=True
                )
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._late)

    def _run(self) -> None:
        while True:
            time.sleep(self.POLL)
            with self._lock:
                late, self._late = self._late, []
            keep = []
            for item in late:
                transport, chanid, chan, until = item
                if chan.active:
                    log.info("closing channel %d, confirmed after its open timed out", chanid)
                    with contextlib.suppress(*LINK_ERRORS):
                        chan.close()
                    self.closed += 1
                elif (
                    transport.is_active()
                    and transport._channels.get(chanid) is chan
                    and time.monotonic() < until
                ):
                    keep.append(item)
            with self._lock:
                self._late.extend(keep)
                if not self._late:
                    self._thread = None
                    return


_reaper = _LateReaper()


def late_opens_pending() -> int:
    """Timed-out opens still watched for a late confirmation."""
    return _reaper.pending()
