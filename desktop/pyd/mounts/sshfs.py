"""The guest's side of a share: the shell commands the agent runs in the guest over SSH.

Two ways (pyd.mounts.worker picks):
- Reconnecting (with the system's OpenSSH on a POSIX host): sshfs runs as a daemon in the
  guest with `-o reconnect`, and its "ssh" is /usr/lib/pyd/share-connect, which joins its
  stdio to the share's socket in /run/pyd/shares; the agent's session binds that socket to
  the host's SFTP server (`ssh -R`). When the link drops (a resume runs a new QEMU: every
  connection through it is gone) the mount, and every container's bind of it, stays; sshfs
  connects again at its next request once the agent is back (what was open fails with EIO).
- Slave (the agent's own connection, and Windows hosts): `sshfs :HOSTPATH MOUNTPOINT -o
  slave` speaks SFTP on its own stdin/stdout, so the agent serves SFTP on the host end of the
  exec channel it runs in (reverse SSHFS, as Lima does). The channel lives as long as the
  mount: a dropped link leaves binds of it dead.
"""

from __future__ import annotations

import hashlib
import shlex

# What every mount gets. allow_other: containers run as other users than the sshfs process
# (root); the guest's /etc/fuse.conf permits it. no_contain_symlinks: Debian's sshfs refuses
# absolute symlinks and ones with ".." by default (node_modules/.bin is full of those); that
# guards a client from its server, and here the server is the user's own host, which keeps
# each request inside the share itself. Caching stays at sshfs's defaults, as Lima's does
# (cache=yes), so bench/mounts.py compares transports, not cache settings.
BASE_OPTIONS = ("allow_other", "no_contain_symlinks")
SLAVE = "slave"
CONNECTOR = "/usr/lib/pyd/share-connect"  # guest-image/overlay
SOCKET_DIR = "/run/pyd/shares"  # root's only (guest-image/overlay/usr/lib/pyd/boot)
MOUNTED = "mounted"  # what the attach command prints once the mount is there
NO_CONNECTOR = 3  # its exit status in a guest image older than the connector


def access_options(host_euid: int | None) -> tuple[str, ...]:
    """Who may do what in a share, decided in the guest (README, "Shared directories").

    Every request runs on the host as the user who runs pyd, so a container user can do there
    what that host user can, as with Docker Desktop, and sshfs shows the host's own owners.
    When that user is root, that would make every container user root in the share (a 0600
    root-owned file readable by `--user 1000`): then `default_permissions` has the guest's
    kernel check each access against the owners and modes sshfs reports, as a bind mount
    under Docker Engine on Linux does (a container's root still may do anything)."""
    return ("default_permissions",) if host_euid == 0 else ()


def sshfs_options(writable: bool, extra: tuple[str, ...] = ()) -> str:
    """The `-o` value for one share: read-only ones are read-only in the guest kernel too
    (the host end refuses writes as well)."""
    return ",".join((*BASE_OPTIONS, *(() if writable else ("ro",)), *extra))


def guest_socket(mount_point: str) -> str:
    """The share's socket in the guest: named by a hash of its mount point, so any path fits
    the 108 bytes of a socket's name and needs no quoting in sshfs's ssh_command."""
    digest = hashlib.sha256(mount_point.encode()).hexdigest()[:16]
    return f"{SOCKET_DIR}/{digest}.sock"


def reconnect_options(mount_point: str, connector: str = CONNECTOR) -> tuple[str, ...]:
    """sshfs options that make the share outlive its connection (sshfs splits ssh_command
    at spaces and appends ssh's arguments, which the connector ignores)."""
    return ("reconnect", f"ssh_command={connector} {guest_socket(mount_point)}")


def attach_command(
    remote_path: str,
    mount_point: str,
    writable: bool,
    extra: tuple[str, ...] = (),
    connector: str = CONNECTOR,
    mountinfo: str = "/proc/self/mountinfo",
) -> str:
    """The command of a reconnecting share's session, run once its socket is bound: keep
    the mount when its sshfs still lives (it connects again through the new socket), else
    mount afresh; print MOUNTED, then hold the session open until the agent ends it.

    The connectors still joined to the old socket carry a dead connection (the old session's
    sshd may linger for a minute): they are killed, so sshfs connects again at once rather
    than wait on them. A live mount whose read-only flag differs is mounted afresh."""
    mp = shlex.quote(mount_point)
    sock = guest_socket(mount_point)
    stale = shlex.quote(f"socat - UNIX-CONNECT:{sock}")  # what share-connect runs
    mode = "rw" if writable else "ro"
    options = sshfs_options(writable, (*extra, *reconnect_options(mount_point, connector)))
    return (
        f"[ -x {shlex.quote(connector)} ] && command -v socat >/dev/null "
        f"|| exit {NO_CONNECTOR}; "
        f"pkill -9 -x -f {stale}; "
        f'if [ "$({_mount_options(mount_point, mountinfo)})" = {mode} ] '
        f"&& timeout 30 stat -f {mp} >/dev/null 2>&1; then :; else "
        f"fusermount3 -u -z {mp} 2>/dev/null; mkdir -p {mp} && "
        f"sshfs {shlex.quote(':' + remote_path)} {mp} -o {shlex.quote(options)} || exit; fi; "
        f"echo {MOUNTED}; exec cat >/dev/null"
    )


def _mount_options(mount_point: str, mountinfo: str) -> str:
    """A command printing "rw" or "ro" for an sshfs mount at `mount_point`, nothing when
    there is none (the last one mounted there is what paths resolve to). Plain sh: the
    guest may have no awk."""
    escaped = shlex.quote(_mountinfo_path(mount_point))
    return (
        f'o=; while read -r _ _ _ _ p opts rest; do [ "$p" = {escaped} ] && '
        f"case \"$rest\" in *'- fuse.sshfs '*) o=${{opts%%,*}};; esac; "
        f"done <{shlex.quote(mountinfo)}; echo $o"
    )


def _mountinfo_path(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash in paths as octal (\040 ...).
    return (
        path.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )


def mount_command(
    remote_path: str, mount_point: str, writable: bool, extra: tuple[str, ...] = ()
) -> str:
    """The command for the exec channel: clear what an earlier, dead sshfs left at the mount
    point ("Transport endpoint is not connected" would fail mkdir and hide the directory),
    make it, then become sshfs. `remote_path` is the path as the SFTP server knows it."""
    mp = shlex.quote(mount_point)
    return (
        f"fusermount3 -u -z {mp} 2>/dev/null; mkdir -p {mp} && "
        f"exec sshfs {shlex.quote(':' + remote_path)} {mp} "
        f"-o {shlex.quote(SLAVE + ',' + sshfs_options(writable, extra))}"
    )


def wait_mounted_command(
    mount_point: str, seconds: float, mountinfo: str = "/proc/self/mountinfo"
) -> str:
    """Exits 0 once `mount_point` is an sshfs mount, 1 after `seconds`. Reads /proc/self/
    mountinfo rather than stat()ing the mount point, which would wait on our own server."""
    tries = max(1, int(seconds * 10))
    escaped = _mountinfo_path(mount_point)
    pattern = shlex.quote(f" {escaped} ")
    return (
        f"i=0; until grep -F -- {pattern} {mountinfo} | grep -q ' - fuse.sshfs '; do "
        f"i=$((i+1)); [ $i -ge {tries} ] && exit 1; sleep 0.1; done"
    )


def unmount_command(mount_point: str) -> str:
    """Lazily unmounts (a container may still hold it open); fine if nothing is mounted."""
    return f"fusermount3 -u -z {shlex.quote(mount_point)} 2>/dev/null; true"
