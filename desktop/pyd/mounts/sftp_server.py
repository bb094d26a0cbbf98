"""pyd's built-in SFTP server: one share directory, served to the guest's `sshfs -o slave`.

Where the host has no OpenSSH `sftp-server` (pyd.mounts.sftp_host), the agent answers sshfs's
SFTP requests itself, on the host end of the exec channel sshfs runs in.

Paths. `sshfs :/Users/me/src /mnt` asks for "/Users/me/src" and the names below it, so the
share's own absolute host path (as configured, absolute, or with symlinks resolved; on Windows
`/C:/Users/me/src`, see `default_client_root`) is the share's root, and so are relative paths
(sshfs's `idmap=user` looks at "."). Anything else, or a `..` that climbs out, is
refused with permission denied, as is a symlink that leads out of the share, wherever it sits
in the path (absolute link texts count as inside only below the share's host path).

Confinement. Each request's path is walked one name at a time from an open descriptor of the
root: every directory is opened with O_NOFOLLOW relative to its parent (openat), each symlink
met is read and its text walked in its place (like openat2's RESOLVE_IN_ROOT, except that a
way out is refused rather than clamped), and the final call names one entry of the last
directory with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW. Renaming a directory into a symlink half-way
through a walk therefore cannot lead it outside. What remains:
- chmod: Linux has no lchmod, so the final entry is opened with O_PATH | O_NOFOLLOW and its
  mode set through /proc/self/fd (macOS and the BSDs have lchmod). Had the name become a
  symlink, the symlink itself is what was opened, and Linux refuses to chmod one. Only
  without /proc does chmod fall back to following the name.
- Where there are no *at() calls (Windows) the walk checks host paths with lstat and then
  uses the path, so a directory swapped for a link or junction between the check and the use
  is followed; and Windows has no O_NOFOLLOW for the final open.
- A symlink's text is data: any link can be made (a Python venv made in a container links
  .venv/bin/python to /usr/local/bin/python3, a path in the container), since the guest's
  kernel resolves links the container follows in the container's own view. Links are
  checked where this server follows them (SETSTAT, OPEN, STAT and the like by path), which
  also covers a link moved to where its relative text leads out.

Names. paramiko decodes every path in a request as strict UTF-8, so names that are not UTF-8
cannot be asked for; listings leave them out rather than show entries that fail on use.

paramiko. `SFTPServer` is a server-side subsystem handler; here it runs on the calling
thread over any stream with send/recv/close. What that relies on beyond paramiko's documented
API, all in `_ShareSFTPServer` and `_Channel`:
- `SFTPServer(channel, name, server, sftp_si, *args)` asks `channel.get_transport()` for
  `get_log_channel()` and `get_hexdump()` and logs with `channel.get_name()`; the adapter
  provides those three and nothing else.
- `_send_server_version` is replaced to advertise the OpenSSH extensions sshfs looks for
  (posix-rename, statvfs, hardlink, fsync); it uses `_read_packet`/`_send_packet`.
  paramiko itself only advertises check-file, so sshfs would never send posix-rename and a
  save-by-rename over an existing file would fail.
- `_open_folder` is replaced so that a listing's handle (`_Folder`) answers READDIR with up to
  100 names, as OpenSSH's server does (paramiko's own SFTPHandle gives 16: more round trips
  for the same directory); it uses `_send_handle_response`/`_send_status`, and paramiko's
  READDIR calls the handle's `_get_next_files`.
- `_process` is wrapped for SSH_FXP_EXTENDED requests paramiko does not know (statvfs,
  hardlink, fsync), answering with `_send_status`/`_send_packet`, and `file_table` (handle ->
  SFTPHandle) for fsync. Other requests, posix-rename included, go to paramiko unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import posixpath
import stat
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import ParamSpec, Protocol, TypeVar

import paramiko
from paramiko import sftp
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_INIT, CMD_VERSION, SFTPError

from pyd.errors import PydError

log = logging.getLogger("pyd.mounts.sftp")

# SFTP v3 status codes (paramiko has no type hints: these give them one).
_SFTP_OK: int = sftp.SFTP_OK
_SFTP_NO_SUCH_FILE: int = sftp.SFTP_NO_SUCH_FILE
_SFTP_PERMISSION_DENIED: int = sftp.SFTP_PERMISSION_DENIED
_SFTP_FAILURE: int = sftp.SFTP_FAILURE
_SFTP_BAD_MESSAGE: int = sftp.SFTP_BAD_MESSAGE
_SFTP_OP_UNSUPPORTED: int = sftp.SFTP_OP_UNSUPPORTED

_P = ParamSpec("_P")
_R = TypeVar("_R")

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_EXCL
_MAX_SYMLINKS = 40  # Linux's limit for one path
_READDIR_BATCH = 100  # names per READDIR answer, as OpenSSH's server sends
_MAX_READ = 256 * 1024  # a longer READ gets a short answer (OpenSSH's limit; sshfs asks 64 KiB)
_IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003  # a Windows junction (the stat module has it there only)

# Walk with directory descriptors where every call we make takes one (Linux, macOS, BSDs).
_AT_CALLS = {os.open, os.stat, os.readlink, os.mkdir, os.rmdir, os.unlink, os.rename}
_AT_CALLS |= {os.symlink, os.utime, os.chmod, os.link}
_USE_DIR_FD = bool(_O_NOFOLLOW and _O_DIRECTORY) and os.supports_dir_fd >= _AT_CALLS

_UTIME_NOFOLLOW = os.utime in os.supports_follow_symlinks
# A hard link to a symlink is to the link itself (as link(2) does on Linux), where we can ask.
_link = (
    functools.partial(os.link, follow_symlinks=False)
    if os.link in os.supports_follow_symlinks
    else os.link
)

_PROTOCOL_VERSION = 3
_STATVFS = "statvfs@openssh.com"
_HARDLINK = "hardlink@openssh.com"
_FSYNC = "fsync@openssh.com"
_EXTENSIONS = (
    ("posix-rename@openssh.com", "1"),
    *(((_STATVFS, "2"),) if hasattr(os, "fstatvfs") else ()),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
)
# statvfs@openssh.com's f_flag bits (OpenSSH PROTOCOL, section 4.4)
_SSH_ST_RDONLY = 0x1
_SSH_ST_NOSUID = 0x2
_ST_RDONLY: int = getattr(os, "ST_RDONLY", 1)
_ST_NOSUID: int = getattr(os, "ST_NOSUID", 2)


class ByteStream(Protocol):
    """What the server reads requests from and writes answers to: a paramiko Channel (the
    client end of an exec channel), a socket, or anything with these three methods."""

    def send(self, data: bytes, /) -> int: ...
    def recv(self, bufsize: int, /) -> bytes: ...
    def close(self) -> None: ...


def default_client_root(root: str | os.PathLike[str]) -> str:
    """The absolute path sshfs names the share by: the host path in POSIX form, and
    `/C:/Users/me` for `C:\\Users\\me` (how Windows' OpenSSH names it)."""
    text = os.fspath(root)
    if sys.platform == "win32":
        return "/" + PureWindowsPath(text).as_posix().lstrip("/")
    return text


def serve_sftp(
    stream: ByteStream,
    root: str | os.PathLike[str],
    writable: bool,
    *,
    client_root: str | None = None,
) -> None:
    """Answers SFTP requests on `stream` for the directory `root` until the stream ends, then
    closes it. `client_root` is the absolute path the client names the root by (default: the
    host path itself, see `default_client_root`). Raises PydError if `root` is unusable."""
    channel = _Channel(stream)
    try:
        server = _ShareSFTPServer(
            channel, "sftp", None, ShareSFTPInterface, root, writable, client_root
        )
    except OSError as e:
        channel.close()
        raise PydError(
            f"cannot share {os.fspath(root)}: {e.strerror or e}",
            "the share must be an existing directory the agent can read",
        ) from e
    try:
        server.start_subsystem("sftp", None, channel)
    except EOFError:
        pass  # the stream ended before the client said hello (sshfs could not start)
    except SFTPError as e:
        raise PydError(f"the guest's sshfs did not speak SFTP: {e}") from e
    finally:
        server.finish_subsystem()  # closes open handles, the root and the stream


# -- paths --------------------------------------------------------------------------------


class _Refused(PermissionError):
    """A request the share does not allow: outside the root, or a write to a read-only share.
    Answered as SSH_FX_PERMISSION_DENIED like any EACCES."""

    def __init__(self, why: str, path: str) -> None:
        super().__init__(errno.EACCES, why, path)


@dataclass(frozen=True)
class _Dir:
    """A directory inside the share reached by a walk."""

    path: str  # its host path: for messages, and for the calls when there is no `fd`
    fd: int | None  # open O_DIRECTORY descriptor (closed by the walk's owner)

    def entry(self, name: str) -> _Place:
        if self.fd is None:
            return _Place(os.path.join(self.path, name), None, False)
        return _Place(name, self.fd, False)

    def itself(self) -> _Place:
        if self.fd is None:
            return _Place(self.path, None, True)
        return _Place(".", self.fd, True)


@dataclass(frozen=True)
class _Place:
    """Where a request's path leads: pass `arg` with `dir_fd=dir_fd` to os functions."""

    arg: str
    dir_fd: int | None
    is_dir_itself: bool  # the path ended at a directory (the root, or a followed link)

    def lstat(self) -> os.stat_result:
        return os.stat(self.arg, dir_fd=self.dir_fd, follow_symlinks=False)

    def named(self) -> _Place:
        """This place, for calls that create, remove or rename the entry itself."""
        if self.is_dir_itself:
            raise _Refused("the share's root cannot be replaced or removed", self.arg)
        return self


def _normal(path: str) -> str:
    """An absolute client path without "//", "." or ".." (posixpath.normpath keeps "//")."""
    return posixpath.normpath("/" + path.lstrip("/"))


def _below(path: str, prefix: str) -> str | None:
    """`path` relative to `prefix` if it is `prefix` or under it, else None."""
    if path == prefix:
        return ""
    head = prefix.rstrip("/") + "/"
    return path[len(head) :] if path.startswith(head) else None


def _is_link(st: os.stat_result) -> bool:
    # A Windows junction is a link too (os.readlink reads it) but is not S_ISLNK.
    junction = getattr(st, "st_reparse_tag", 0) == _IO_REPARSE_TAG_MOUNT_POINT
    return stat.S_ISLNK(st.st_mode) or junction


def _check_name(name: str, path: str) -> None:
    # On Windows these are separators or stream/drive syntax, not parts of one name.
    if sys.platform == "win32" and any(c in name for c in "\\:"):
        raise _Refused("not a valid name on this host", path)


def _posix_forms(path: str) -> set[str]:
    forms = {path, default_client_root(path)}
    if sys.platform == "win32":
        forms.add(PureWindowsPath(path).as_posix())
    return forms


def _answers(func: Callable[_P, _R]) -> Callable[_P, _R | int]:
    """Turns an OSError into the SFTP status paramiko sends for it."""

    @functools.wraps(func)
    def answer(*args: _P.args, **kwargs: _P.kwargs) -> _R | int:
        try:
            return func(*args, **kwargs)
        except _Refused as e:
            log.debug("refused %s %s: %s", func.__name__, e.filename, e.strerror)
            return _SFTP_PERMISSION_DENIED
        except OSError as e:
            return _status(e)
        except ValueError:  # a NUL in a name
            return _SFTP_BAD_MESSAGE

    return answer


def _status(e: OSError) -> int:
    """The SFTP v3 status for an errno, as OpenSSH's sftp-server maps them."""
    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
        return _SFTP_NO_SUCH_FILE
    if e.errno in (errno.EPERM, errno.EACCES, errno.EFAULT):
        return _SFTP_PERMISSION_DENIED
    if e.errno in (errno.ENAMETOOLONG, errno.EINVAL):
        return _SFTP_BAD_MESSAGE
    if e.errno == errno.ENOSYS:
        return _SFTP_OP_UNSUPPORTED
    return _SFTP_FAILURE


# -- the share ----------------------------------------------------------------------------


class ShareSFTPInterface(paramiko.SFTPServerInterface):  # type: ignore[misc]
    """paramiko's SFTP server interface for one share: every path confined to `root`, and
    every change refused unless `writable`."""

    def __init__(
        self,
        server: object,
        root: str | os.PathLike[str],
        writable: bool,
        client_root: str | None = None,
    ) -> None:
        super().__init__(server)
        given = os.path.abspath(root)
        real = os.path.realpath(given)
        self._writable = writable
        if client_root is not None:
            roots = [client_root]
        else:
            roots = [default_client_root(os.fspath(root))]
            roots += sorted(_posix_forms(given) | _posix_forms(real))
        self._client_roots = tuple(dict.fromkeys(_normal(r) for r in roots if r.startswith("/")))
        # An absolute link text leads inside when it names the share by its host path.
        self._link_roots = tuple(sorted(_posix_forms(given) | _posix_forms(real)))
        fd = None
        if _USE_DIR_FD:
            fd = os.open(given, os.O_RDONLY | _O_DIRECTORY)
        elif not os.path.isdir(real):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", given)
        self._root = _Dir(real, fd)

    def session_ended(self) -> None:
        if self._root.fd is not None:
            os.close(self._root.fd)
            self._root = _Dir(self._root.path, None)

    # -- walking a path --

    def _client_parts(self, path: str) -> list[str]:
        """The names below the root that a request's path denotes."""
        if path.startswith("/"):
            norm = _normal(path)
            for prefix in self._client_roots:
                rest = _below(norm, prefix)
                if rest is not None:
                    return [p for p in rest.split("/") if p]
            raise _Refused("outside the share", path)
        norm = posixpath.normpath(path or ".")
        if norm == ".." or norm.startswith("../"):
            raise _Refused("outside the share", path)
        return [p for p in norm.split("/") if p not in ("", ".")]

    def _link_parts(self, text: str, where: str) -> tuple[bool, list[str]]:
        """(absolute, names) of a symlink's text; absolute ones must name the share."""
        if sys.platform == "win32":
            text = text.removeprefix("\\\\?\\").replace("\\", "/")
            absolute = PureWindowsPath(text).is_absolute() or text.startswith("/")
        else:
            absolute = text.startswith("/")
        if not absolute:
            return False, text.split("/")
        for prefix in self._link_roots:
            rest = _below(text, prefix)
            if rest is not None:
                return True, rest.split("/")
        raise _Refused("a symlink leads outside the share", where)

    @contextlib.contextmanager
    def _locate(self, path: str, *, follow: bool) -> Iterator[_Place]:
        """Where `path` leads inside the share; with `follow`, a symlink as last name is
        followed too. The directories the walk opened stay open until the block ends."""
        opened: list[_Dir] = []
        try:
            yield self._walk(path, follow, opened)
        finally:
            for d in opened:
                if d.fd is not None:
                    os.close(d.fd)

    def _walk(self, path: str, follow: bool, opened: list[_Dir]) -> _Place:
        stack = [self._root]
        pending = deque(self._client_parts(path))
        links = 0
        while pending:
            name = pending.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) == 1:
                    raise _Refused("a symlink leads outside the share", path)
                stack.pop()
                continue
            _check_name(name, path)
            here = stack[-1].entry(name)
            last = not pending
            if last and not follow:
                return here
            try:
                st = here.lstat()
            except FileNotFoundError:
                if last:
                    return here  # to be created
                raise
            if _is_link(st):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                text = os.readlink(here.arg, dir_fd=here.dir_fd)
                absolute, names = self._link_parts(text, path)
                if absolute:
                    del stack[1:]
                pending.extendleft(reversed(names))
                continue
            if last:
                return here
            stack.append(self._enter(stack[-1], name, st))
            opened.append(stack[-1])
        return stack[-1].itself()

    @staticmethod
    def _enter(parent: _Dir, name: str, st: os.stat_result) -> _Dir:
        path = os.path.join(parent.path, name)
        if parent.fd is None:
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            return _Dir(path, None)
        # O_NOFOLLOW: had it become a symlink since the lstat, this fails instead of following.
        flags = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW
        return _Dir(path, os.open(name, flags, dir_fd=parent.fd))

    def _require_writable(self, path: str) -> None:
        if not self._writable:
            raise _Refused("the share is read-only", path)

    # -- requests --

    @_answers
    def stat(self, path: str) -> paramiko.SFTPAttributes:
        with self._locate(path, follow=True) as place:
            return paramiko.SFTPAttributes.from_stat(place.lstat())

    @_answers
    def lstat(self, path: str) -> paramiko.SFTPAttributes:
        with self._locate(path, follow=False) as place:
            return paramiko.SFTPAttributes.from_stat(place.lstat())

    @_answers
    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _FileHandle:
        if flags & _WRITE_FLAGS:
            self._require_writable(path)
        mode = attr.st_mode & 0o7777 if attr.st_mode is not None else 0o666
        with self._locate(path, follow=True) as place:
            fd = os.open(place.arg, flags | _O_NOFOLLOW | _O_BINARY, mode, dir_fd=place.dir_fd)
        return _FileHandle(fd, flags, self._writable)

    @_answers
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes]:
        with self._locate(path, follow=True) as place:
            if place.dir_fd is None:
                return _listing(place.arg)
            with _opened(place, os.O_RDONLY | _O_DIRECTORY) as fd:
                return _listing(fd)

    def _change(self, path: str, call: Callable[..., object], *args: object) -> int:
        """`call(name, *args, dir_fd=...)` on the entry `path` names (the entry itself, never
        what a symlink there points to)."""
        self._require_writable(path)
        with self._locate(path, follow=False) as place:
            call(place.named().arg, *args, dir_fd=place.dir_fd)
        return _SFTP_OK

    def _change_two(self, oldpath: str, newpath: str, call: Callable[..., object]) -> int:
        """`call(old, new, src_dir_fd=..., dst_dir_fd=...)` on the entries two paths name."""
        self._require_writable(newpath)
        with self._locate(oldpath, follow=False) as old, self._locate(newpath, follow=False) as new:
            call(old.named().arg, new.named().arg, src_dir_fd=old.dir_fd, dst_dir_fd=new.dir_fd)
        return _SFTP_OK

    @_answers
    def remove(self, path: str) -> int:
        return self._change(path, os.unlink)

    @_answers
    def rename(self, oldpath: str, newpath: str) -> int:
        return self._change_two(oldpath, newpath, _rename_without_replacing)

    @_answers
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._change_two(oldpath, newpath, os.replace)

    @_answers
    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        mode = attr.st_mode & 0o7777 if attr.st_mode is not None else 0o777
        return self._change(path, os.mkdir, mode)

    @_answers
    def rmdir(self, path: str) -> int:
        return self._change(path, os.rmdir)

    @_answers
    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        self._require_writable(path)
        with self._locate(path, follow=True) as place:
            _set_attributes(attr, place)
        return _SFTP_OK

    @_answers
    def readlink(self, path: str) -> str:
        """The link's text as stored, even when it leads outside (following it is refused)."""
        with self._locate(path, follow=False) as place:
            return os.readlink(place.arg, dir_fd=place.dir_fd)

    @_answers
    def symlink(self, target_path: str, path: str) -> int:
        """Makes `path` a link with text `target_path`, wherever that leads (see the top)."""
        self._require_writable(path)
        if not target_path or "\0" in target_path:
            return _SFTP_BAD_MESSAGE
        return self._change(path, functools.partial(os.symlink, target_path))

    def canonicalize(self, path: str) -> str:
        """The absolute path the client names `path` by, worked out from the text alone
        (symlinks are not resolved, nothing is looked at, nothing outside is revealed)."""
        if path.startswith("/"):
            return _normal(path)
        return posixpath.normpath(posixpath.join(self._client_roots[0], path or "."))

    @_answers
    def statvfs(self, path: str) -> os.statvfs_result:
        if sys.platform == "win32":  # not advertised there (no statvfs)
            raise OSError(errno.ENOSYS, "no statvfs here", path)
        with self._locate(path, follow=True) as place:
            if place.dir_fd is None:
                return os.statvfs(place.arg)
            with _opened(place, os.O_RDONLY | _O_NONBLOCK) as fd:
                return os.fstatvfs(fd)

    @_answers
    def hardlink(self, oldpath: str, newpath: str) -> int:
        return self._change_two(oldpath, newpath, _link)

    @property
    def writable(self) -> bool:
        return self._writable


def _rename_without_replacing(
    src: str, dst: str, *, src_dir_fd: int | None, dst_dir_fd: int | None
) -> None:
    """SFTP v3's RENAME, which fails if the target exists (sshfs uses posix-rename instead). A
    target made between the check and the rename is replaced."""
    with contextlib.suppress(FileNotFoundError):
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


@contextlib.contextmanager
def _opened(place: _Place, flags: int) -> Iterator[int]:
    """The entry at `place` open (never through a symlink) for the block."""
    fd = os.open(place.arg, flags | _O_NOFOLLOW, dir_fd=place.dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _listing(directory: int | str) -> list[paramiko.SFTPAttributes]:
    """A directory's entries with their lstat attributes, "." and ".." first (as OpenSSH's
    server lists them; their attributes are the directory's own, revealing nothing above)."""
    own = os.stat(directory)
    out = [paramiko.SFTPAttributes.from_stat(own, n) for n in (".", "..")]
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                log.debug("not listing %r: its name is not UTF-8", entry.name)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing began
            out.append(paramiko.SFTPAttributes.from_stat(st, entry.name))
    return out


def _set_attributes(attr: paramiko.SFTPAttributes, place: _Place) -> None:
    """Applies what SETSTAT carries, in OpenSSH's order: size, mode, owner, then the times (so a
    truncate does not move them)."""
    if attr.st_size is not None:
        with _opened(place, os.O_WRONLY | _O_BINARY) as fd:
            os.ftruncate(fd, attr.st_size)
    if attr.st_mode is not None:
        _chmod_entry(place, attr.st_mode & 0o7777)
    if attr.st_uid is not None and attr.st_gid is not None and hasattr(os, "chown"):
        uid, gid = attr.st_uid, attr.st_gid
        os.chown(place.arg, uid, gid, dir_fd=place.dir_fd, follow_symlinks=False)
    if attr.st_atime is not None and attr.st_mtime is not None:
        times = (attr.st_atime, attr.st_mtime)
        os.utime(place.arg, times, dir_fd=place.dir_fd, follow_symlinks=not _UTIME_NOFOLLOW)


_O_PATH = getattr(os, "O_PATH", 0)
_LCHMOD = os.chmod in os.supports_follow_symlinks and os.chmod in os.supports_dir_fd


def _chmod_entry(place: _Place, mode: int) -> None:
    """chmod of the entry `place` names, never of what a symlink put there leads to."""
    if _LCHMOD:
        os.chmod(place.arg, mode, dir_fd=place.dir_fd, follow_symlinks=False)
        return
    if _O_PATH and place.dir_fd is not None and os.path.isdir("/proc/self/fd"):
        fd = os.open(place.arg, _O_PATH | _O_NOFOLLOW, dir_fd=place.dir_fd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, "the entry became a symlink", place.arg)
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
        return
    os.chmod(place.arg, mode, dir_fd=place.dir_fd)  # no way to refuse a link here


def _set_open_file_attributes(attr: paramiko.SFTPAttributes, fd: int) -> None:
    """Applies what FSETSTAT carries to an open file, in the same order."""
    if attr.st_size is not None:
        os.ftruncate(fd, attr.st_size)
    if attr.st_mode is not None:
        if os.chmod not in os.supports_fd:
            raise OSError(errno.ENOSYS, "no chmod of an open file here")
        os.chmod(fd, attr.st_mode & 0o7777)
    if attr.st_uid is not None and attr.st_gid is not None and hasattr(os, "chown"):
        os.chown(fd, attr.st_uid, attr.st_gid)
    if attr.st_atime is not None and attr.st_mtime is not None:
        if os.utime not in os.supports_fd:
            raise OSError(errno.ENOSYS, "no utime of an open file here")
        os.utime(fd, (attr.st_atime, attr.st_mtime))


class _FileHandle(paramiko.SFTPHandle):  # type: ignore[misc]
    """An open file: reads and writes at the offsets the client gives."""

    def __init__(self, fd: int, flags: int, share_writable: bool) -> None:
        super().__init__(flags)
        self._fd = fd
        self._append = bool(flags & os.O_APPEND)
        self._share_writable = share_writable

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @_answers
    def read(self, offset: int, length: int) -> bytes:
        length = min(length, _MAX_READ)
        if sys.platform != "win32":
            return os.pread(self._fd, length, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        return os.read(self._fd, length)

    @_answers
    def write(self, offset: int, data: bytes) -> int:
        view = memoryview(data)
        if self._append or not hasattr(os, "pwrite"):
            if not self._append:
                os.lseek(self._fd, offset, os.SEEK_SET)
            while view:  # O_APPEND: every write goes to the end, whatever the offset
                view = view[os.write(self._fd, view) :]
            return _SFTP_OK
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n
        return _SFTP_OK

    @_answers
    def stat(self) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self._fd))

    @_answers
    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        if not self._share_writable:
            raise _Refused("the share is read-only", "")
        _set_open_file_attributes(attr, self._fd)
        return _SFTP_OK

    @_answers
    def fsync(self) -> int:
        os.fsync(self._fd)
        return _SFTP_OK


# -- paramiko's server on a stream --------------------------------------------------------


class _NoTransport:
    """The two things SFTPServer's constructor asks the channel's transport for."""

    def get_log_channel(self) -> str:
        return "pyd.mounts"

    def get_hexdump(self) -> bool:
        return False


class _Channel:
    """A byte stream dressed as the channel SFTPServer expects (see the module doc)."""

    def __init__(self, stream: ByteStream) -> None:
        self.send: Callable[[bytes], int] = stream.send
        self.recv: Callable[[int], bytes] = stream.recv
        self.close: Callable[[], None] = stream.close

    def get_name(self) -> str:
        return "sftp"

    def get_transport(self) -> _NoTransport:
        return _NoTransport()


class _Folder(paramiko.SFTPHandle):  # type: ignore[misc]
    """An open listing, handed out READDIR_BATCH names at a time."""

    def __init__(self, entries: list[paramiko.SFTPAttributes]) -> None:
        super().__init__()
        self._entries = entries

    def _get_next_files(self) -> list[paramiko.SFTPAttributes]:
        batch, self._entries = self._entries[:_READDIR_BATCH], self._entries[_READDIR_BATCH:]
        return batch


class _ShareSFTPServer(paramiko.SFTPServer):  # type: ignore[misc]
    """paramiko's SFTP server, advertising and answering the OpenSSH extensions sshfs uses."""

    server: ShareSFTPInterface

    def _open_folder(self, request_number: int, path: str) -> None:
        entries = self.server.list_folder(path)
        if isinstance(entries, int):
            self._send_status(request_number, entries)
            return
        self._send_handle_response(request_number, _Folder(entries), True)

    def _send_server_version(self) -> int:
        t, data = self._read_packet()
        if t != CMD_INIT:
            raise SFTPError("Incompatible sftp protocol")
        msg = paramiko.Message()
        msg.add_int(_PROTOCOL_VERSION)
        for name, value in _EXTENSIONS:
            msg.add_string(name)
            msg.add_string(value)
        self._send_packet(CMD_VERSION, msg)
        return int(struct.unpack(">I", data[:4])[0])

    def _process(self, t: int, request_number: int, msg: paramiko.Message) -> None:
        if t != CMD_EXTENDED:
            super()._process(t, request_number, msg)
            return
        body = msg.get_remainder()
        request = paramiko.Message(body)
        tag = request.get_text()
        if tag == _STATVFS and hasattr(os, "fstatvfs"):
            self._statvfs(request_number, request.get_text())
        elif tag == _HARDLINK:
            old, new = request.get_text(), request.get_text()
            self._send_status(request_number, self.server.hardlink(old, new))
        elif tag == _FSYNC:
            handle = self.file_table.get(request.get_binary())
            if handle is None:
                self._send_status(request_number, _SFTP_BAD_MESSAGE, "Invalid handle")
            else:
                self._send_status(request_number, handle.fsync())
        else:
            super()._process(t, request_number, paramiko.Message(body))  # posix-rename too

    def _statvfs(self, request_number: int, path: str) -> None:
        st = self.server.statvfs(path)
        if isinstance(st, int):
            self._send_status(request_number, st)
            return
        flags = _SSH_ST_RDONLY if st.f_flag & _ST_RDONLY or not self.server.writable else 0
        flags |= _SSH_ST_NOSUID if st.f_flag & _ST_NOSUID else 0
        reply = paramiko.Message()
        reply.add_int(request_number)
        sizes = (st.f_bsize, st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail)
        counts = (st.f_files, st.f_ffree, st.f_favail, getattr(st, "f_fsid", 0))
        for value in (*sizes, *counts, flags, st.f_namemax):
            reply.add_int64(value)
        self._send_packet(CMD_EXTENDED_REPLY, reply)
