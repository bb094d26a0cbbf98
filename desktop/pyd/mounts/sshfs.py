"""The guest's side of a share: the shell commands the agent runs in the guest over SSH.

`sshfs :HOSTPATH MOUNTPOINT -o slave` speaks SFTP on its own stdin/stdout instead of opening
an SSH connection, so the agent serves SFTP on the host end of the exec channel it runs in
(reverse SSHFS, as Lima does). Slave mode keeps sshfs in the foreground: the channel lives as
long as the mount, and closing it ends the mount.
"""

from __future__ import annotations

import shlex

# What every mount gets. allow_other: containers run as other users than the sshfs process
# (root); the guest's /etc/fuse.conf permits it. no_contain_symlinks: Debian's sshfs refuses
# absolute symlinks and ones with ".." by default (node_modules/.bin is full of those); that
# guards a client from its server, and here the server is the user's own host, which keeps
# each request inside the share itself. Caching stays at sshfs's defaults, as Lima's does
# (cache=yes), so bench/mounts.py compares transports, not cache settings.
BASE_OPTIONS = ("slave", "allow_other", "no_contain_symlinks")


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
        f"-o {shlex.quote(sshfs_options(writable, extra))}"
    )


def wait_mounted_command(
    mount_point: str, seconds: float, mountinfo: str = "/proc/self/mountinfo"
) -> str:
    """Exits 0 once `mount_point` is an sshfs mount, 1 after `seconds`. Reads /proc/self/
    mountinfo rather than stat()ing the mount point, which would wait on our own server."""
    tries = max(1, int(seconds * 10))
    # mountinfo escapes space, tab, newline and backslash in paths as octal (\040 ...).
    escaped = (
        mount_point.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )
    pattern = shlex.quote(f" {escaped} ")
    return (
        f"i=0; until grep -F -- {pattern} {mountinfo} | grep -q ' - fuse.sshfs '; do "
        f"i=$((i+1)); [ $i -ge {tries} ] && exit 1; sleep 0.1; done"
    )


def unmount_command(mount_point: str) -> str:
    """Lazily unmounts (a container may still hold it open); fine if nothing is mounted."""
    return f"fusermount3 -u -z {shlex.quote(mount_point)} 2>/dev/null; true"
