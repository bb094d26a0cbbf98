"""Runs a program (OpenSSH's sftp-server) in a private mount namespace whose root holds the
share and nothing else of the host: `python -m pyd.mounts.confine_linux ROOT [--read-only]
-- PROGRAM ARGS...`, or `--probe` (exit 0 where it can be done).

Why: the system's sftp-server works by path and follows symlinks (SETSTAT on a link made by a
container changes the owner and times of the file it points to, anywhere the server's user
may). Here no path leads out: the new root is an empty tmpfs with the share bind-mounted at its
own path (and at its resolved path), so `/etc/passwd` or `../../x` name nothing of the host,
whatever links the guest makes; hard links cannot cross into the share either (EXDEV).

How: unshare(CLONE_NEWNS) as root, or with CLONE_NEWUSER (uid mapped to itself) where the
kernel lets an unprivileged user have one. The program must be loaded from the host's /usr
(and /lib*) to start at all, so those are bound read-only into the new root only until it has
started: /etc/nsswitch.conf in the new root is a FIFO, and the first thing sftp-server does
after the dynamic loader ran is look up its user (getpwuid), which reads that file first
(glibc; it would not read /etc/passwd itself from a FIFO, it seeks). A helper process that
opened the FIFO's other end learns so, detaches /usr and /lib*, puts a regular file in its
place, writes the same text into the FIFO, and makes the new root read-only. The only host files
left in the namespace are the share and /dev/null; the rest is a read-only tmpfs that pyd
wrote (/etc/passwd, /etc/group, /etc/nsswitch.conf). If the program never looks up its user
the helper detaches the system directories after HELPER_WAIT seconds all the same (musl, as
on Alpine, reads no nsswitch.conf: there it takes that long).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import sys
from collections.abc import Sequence

assert sys.platform == "linux"  # the agent imports this only there (and type checkers stop)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 0x400, 0x800, 0x200000
MNT_DETACH = 0x2
_ST_RELATIME = 0x1000  # statvfs's f_flag bit; MS_RELATIME's value differs
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

SYSTEM_DIRS = ("usr", "lib", "lib64", "lib32", "libx32", "bin", "sbin")
NEW_ROOT = "/tmp"  # mounted over in the namespace only; the host's /tmp is untouched
HELPER_WAIT = 20.0
NSSWITCH = "/etc/nsswitch.conf"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                       enc(data) if data else None), f"mount {target}")  # fmt: skip


def _umount(target: str) -> None:
    _check(_libc.umount2(os.fsencode(target), MNT_DETACH), f"umount {target}")


def _kept_flags(path: str) -> int:
    """The flags a read-only remount must keep (a user namespace may not drop them)."""
    f = os.statvfs(path).f_flag
    kept = f & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    return kept | (MS_RELATIME if f & _ST_RELATIME else 0)


def _bind(source: str, target: str, read_only: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(target))


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def enter_namespace() -> None:
    """A private mount namespace (and a user namespace when not root) for this process."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        _check(_libc.unshare(CLONE_NEWNS), "unshare")
    else:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUSER), "unshare")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def share_paths(root: str) -> list[str]:
    """Where the share appears in the new root: its path as given (what sshfs asks for) and,
    when different and neither contains the other, its resolved path (absolute link texts)."""
    given = os.path.abspath(root)
    real = os.path.realpath(given)
    paths = [given]
    nested = (real + "/").startswith(given + "/") or (given + "/").startswith(real + "/")
    if not nested:
        paths.append(real)
    return paths


def user_lines(uid: int, gid: int) -> tuple[str, str]:
    """One-line /etc/passwd and /etc/group for the new root: this user's names only."""
    import grp
    import pwd

    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "pyd"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = user
    return f"{user}:x:{uid}:{gid}::/:/nonexistent\n", f"{group}:x:{gid}:\n"


def collision(root: str, program: str) -> str | None:
    """What a share at `root` would overlap in the new root, so that it cannot be confined
    here (None if nothing): "/", pyd's /etc and /dev, the system directories, the program."""
    taken = ["/etc", "/dev", *("/" + d for d in SYSTEM_DIRS), os.path.realpath(program)]
    for path in share_paths(root):
        if path == "/":
            return "/"
        for t in taken:
            if path == t or path.startswith(t + "/") or t.startswith(path + "/"):
                return t
    return None


def build_root(root: str, writable: bool, program: str) -> list[str]:
    """Fills NEW_ROOT (a fresh tmpfs) with /dev/null, pyd's /etc, for the start the system
    directories, and then the share; returns the system directories' paths in the new root.
    The share comes last and overlaps none of the rest, so nothing pyd writes lands in it."""
    taken = collision(root, program)
    if taken is not None:
        raise OSError(errno.EBUSY, f"a share at {root} overlaps {taken}, which the server needs")
    share = os.open(root, os.O_PATH | os.O_DIRECTORY)  # before NEW_ROOT hides it, if below
    _mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    os.makedirs(NEW_ROOT + "/dev")
    open(NEW_ROOT + "/dev/null", "w").close()
    _bind("/dev/null", NEW_ROOT + "/dev/null", read_only=False)
    os.makedirs(NEW_ROOT + "/etc")
    passwd, group = user_lines(os.getuid(), os.getgid())
    _write(NEW_ROOT + "/etc/passwd", passwd)
    _write(NEW_ROOT + "/etc/group", group)
    _write(NEW_ROOT + NSSWITCH + ".ready", "passwd: files\ngroup: files\n")
    os.mkfifo(NEW_ROOT + NSSWITCH, 0o644)
    system = []
    for name in SYSTEM_DIRS:
        source, target = "/" + name, NEW_ROOT + "/" + name
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif os.path.isdir(source):
            os.mkdir(target)
            _bind(source, target, read_only=True)
            system.append("/" + name)
    real = os.path.realpath(program)
    if not any(real.startswith(d + "/") for d in system):
        os.makedirs(NEW_ROOT + os.path.dirname(real), exist_ok=True)
        open(NEW_ROOT + real, "x").close()
        _bind(real, NEW_ROOT + real, read_only=True)
        system.append(real)
    for path in share_paths(root):
        target = NEW_ROOT + path
        os.makedirs(target, exist_ok=True)
        _bind(f"/proc/self/fd/{share}", target, read_only=not writable)
    os.close(share)
    return system


def pivot() -> None:
    """NEW_ROOT becomes "/", and the host's root is detached from the namespace."""
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: unknown on {platform.machine()}")
    os.chdir(NEW_ROOT)
    _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    _umount(".")
    os.chdir("/")


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError


def helper(system: Sequence[str]) -> None:
    """Waits until the program opened NSSWITCH (it has started), then takes away what it
    needed to start and makes the root read-only."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)  # the program's pipes must end when it does
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HELPER_WAIT)
    fifo = None
    try:
        fifo = os.open(NSSWITCH, os.O_WRONLY)
    except TimeoutError:
        print("pyd confine: the server did not look up its user; hiding /usr now", file=sys.stderr)
    signal.setitimer(signal.ITIMER_REAL, 0)
    for path in sorted(system, reverse=True):
        _umount(path)
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    for name in SYSTEM_DIRS:
        if os.path.islink("/" + name):
            os.unlink("/" + name)
    with open(NSSWITCH + ".ready", "rb") as f:
        text = f.read()
    os.replace(NSSWITCH + ".ready", NSSWITCH)
    if fifo is not None:
        os.write(fifo, text)
        os.close(fifo)
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def run(root: str, writable: bool, argv: Sequence[str]) -> None:
    """Confines this process and becomes `argv`; returns only by raising OSError."""
    enter_namespace()
    system = build_root(root, writable, argv[0])
    pivot()
    first = os.fork()
    if first == 0:  # the helper, orphaned at once so that the program never has to reap it
        code = 1
        try:
            if os.fork() == 0:
                helper(system)
            code = 0
        finally:
            os._exit(code)
    os.waitpid(first, 0)
    os.execv(argv[0], list(argv))


def probe() -> None:
    """Raises OSError unless a namespace with its own tmpfs can be made here."""
    enter_namespace()
    _mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k")
    if platform.machine() not in _PIVOT_ROOT:
        raise OSError(0, f"pivot_root: unknown on {platform.machine()}")


def main(args: list[str]) -> int:
    try:
        if args == ["--probe"]:
            probe()
            return 0
        split = args.index("--")
        head, program = args[:split], args[split + 1 :]
        writable = "--read-only" not in head
        head = [a for a in head if a != "--read-only"]
        if len(head) != 1 or not program:
            raise ValueError
    except ValueError:
        print("usage: python -m pyd.mounts.confine_linux ROOT [--read-only] -- PROGRAM ARGS...",
              file=sys.stderr)  # fmt: skip
        return 2
    except OSError as e:
        print(f"pyd confine: {e.strerror or e}", file=sys.stderr)
        return 1
    try:
        run(head[0], writable, program)
    except OSError as e:
        print(f"pyd confine: cannot confine {program[0]} to {head[0]}: {e.strerror or e}",
              file=sys.stderr)  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
