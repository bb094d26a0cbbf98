"""What an image's root filesystem holds, listed without mounting it (mounting needs root and
a loop or nbd device): per path its type, mode, owner, size and sha256 (a symlink's target).

Two builds of the same recipe must give the same listing; their rootfs.qcow2 bytes may still
differ (ext4 places inodes in the order the build's directory walk meets them). Directory
sizes and timestamps are left out for that reason.

e2fsprogs' debugfs reads the filesystem: `ls -p` gives each entry's full mode and owner
(`rdump` drops set-id bits and capabilities when it restores them), `rdump` gives the bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyd.errors import EnvironmentProblem, ImageError
from pyd.image.cache import CachedImage
from pyd.image.digest import sha256_file
from pyd.image.manifest import IMAGE_FILES, OPTIONAL_FILES
from pyd.image.qemu_img import run_qemu_img

ROOT_INODE = 2
_KINDS = {
    stat.S_IFDIR: "d",
    stat.S_IFREG: "f",
    stat.S_IFLNK: "l",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
}
_PROMPT = "debugfs: "
# Its bytes change whenever Debian's archive does (new package versions), not only when a
# build is not reproducible.
DPKG_STATUS = "/var/lib/dpkg/status"


@dataclass(frozen=True)
class DirEntry:
    """One line of `debugfs ls -p`."""

    ino: int
    mode: int  # type and permission bits, as in st_mode
    uid: int
    gid: int
    name: str
    size: int | None  # None for directories


@dataclass(frozen=True)
class Entry:
    path: str  # absolute inside the filesystem, "/" for the root
    kind: str  # d f l c b p s
    mode: int  # permission bits, set-id and sticky included
    uid: int
    gid: int
    size: int | None  # None for directories (their size depends on the layout)
    content: str = ""  # sha256 of a file, target of a symlink, MAJOR:MINOR of a device

    def line(self) -> str:
        size = "-" if self.size is None else str(self.size)
        content = self.content or "-"
        return f"{self.kind} {self.mode:04o} {self.uid}:{self.gid} {size} {content} {self.path}"


def kind_of(mode: int) -> str:
    try:
        return _KINDS[stat.S_IFMT(mode)]
    except KeyError:
        raise ImageError(f"unknown file type in mode {mode:o}") from None


def parse_ls(text: str) -> list[DirEntry]:
    """Parses `ls -p` output: `/INO/MODE/UID/GID/NAME/SIZE/` (SIZE empty for directories).
    A name cannot hold '/', so splitting is exact; "." and ".." are left out."""
    # Lines start with "/"; a name holding a newline would break them, and is refused below.
    found = []
    for line in text.splitlines():
        if not line.startswith("/"):
            continue
        fields = line.split("/")
        if len(fields) != 8 or fields[7] != "":
            raise ImageError(f"debugfs printed an unexpected directory line: {line!r}")
        _, ino, mode, uid, gid, name, size, _ = fields
        if name in (".", "..") or ino == "0":  # inode 0: an unused slot (lost+found has many)
            continue
        found.append(
            DirEntry(int(ino), int(mode, 8), int(uid), int(gid), name, int(size) if size else None)
        )
    return found


def split_batch(text: str) -> dict[str, str]:
    """Splits the output of `debugfs -f FILE` by the command echo lines ("debugfs: CMD")."""
    outputs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_PROMPT):
            current = outputs.setdefault(line.removeprefix(_PROMPT), [])
        elif current is not None:
            current.append(line)
    return {cmd: "\n".join(lines) for cmd, lines in outputs.items()}


def render(entries: Iterable[Entry]) -> str:
    return "".join(e.line() + "\n" for e in sorted(entries, key=lambda e: e.path))


def differences(a: Sequence[Entry], b: Sequence[Entry], limit: int = 10) -> list[str]:
    """The first `limit` paths whose entries differ, each as "-A / +B" (or only on one side),
    in path order."""
    left = {e.path: e for e in a}
    right = {e.path: e for e in b}
    found: list[str] = []
    for path in sorted(left.keys() | right.keys()):
        x, y = left.get(path), right.get(path)
        if x == y:
            continue
        if len(found) == limit:
            break
        found.append(
            f"{path}: "
            + " / ".join(
                [f"-{x.line()}" if x else "- (absent)", f"+{y.line()}" if y else "+ (absent)"]
            )
        )
    return found


@dataclass(frozen=True)
class Comparison:
    entries: int  # paths compared in the root filesystems
    differences: list[str]  # the first few, boot files first
    packages_changed: bool  # dpkg's status differs: other package versions were installed


def compare_images(a: CachedImage, b: CachedImage, limit: int = 10) -> Comparison:
    """Kernel and initrd must be equal byte for byte (manifest sha256), the root filesystems
    in their content listing."""
    found = []
    for name in (*IMAGE_FILES, *OPTIONAL_FILES):
        if name == "rootfs.qcow2":
            continue
        x, y = a.manifest.files.get(name), b.manifest.files.get(name)
        if (x and x.sha256) != (y and y.sha256):
            found.append(f"{name}: sha256 {x and x.sha256} / {y and y.sha256}")
    left = rootfs_contents(a.file("rootfs.qcow2"))
    right = rootfs_contents(b.file("rootfs.qcow2"))
    status = [{e.path: e for e in side}.get(DPKG_STATUS) for side in (left, right)]
    return Comparison(
        max(len(left), len(right)),
        found + differences(left, right, limit),
        packages_changed=status[0] != status[1],
    )


def _debugfs(raw: Path, commands: Sequence[str], work: Path) -> dict[str, str]:
    script = work / "commands"
    script.write_text("".join(c + "\n" for c in commands))
    proc = subprocess.run(
        ["debugfs", "-f", str(script), str(raw)],
        capture_output=True,
        text=True,
        check=False,
        errors="surrogateescape",
    )
    if proc.returncode != 0:
        raise ImageError(f"debugfs could not read {raw}: {proc.stderr.strip()}")
    return split_batch(proc.stdout)


def _tree(raw: Path, work: Path) -> list[tuple[str, DirEntry]]:
    """Every entry under the root as (path, entry), one debugfs run per directory depth;
    directories are named by inode ("<N>"), so no path needs quoting."""
    found: list[tuple[str, DirEntry]] = []
    level = [("", ROOT_INODE)]
    while level:
        out = _debugfs(raw, [f"ls -p <{ino}>" for _, ino in level], work)
        nxt = []
        for parent, ino in level:
            text = out.get(f"ls -p <{ino}>")
            if text is None:
                raise ImageError(f"debugfs gave no listing of {parent or '/'} in {raw}")
            for d in parse_ls(text):
                path = f"{parent}/{d.name}"
                found.append((path, d))
                if stat.S_ISDIR(d.mode):
                    nxt.append((path, d.ino))
        level = nxt
    return found


def filesystem_contents(raw: Path) -> list[Entry]:
    """The listing of an ext2/3/4 filesystem image (a raw file), root included."""
    if not shutil.which("debugfs"):
        raise EnvironmentProblem(
            "listing an image's files needs debugfs", hint="sudo apt-get install e2fsprogs"
        )
    with tempfile.TemporaryDirectory(prefix="pyd-contents-") as tmp:
        work = Path(tmp)
        dump = work / "root"
        dump.mkdir()
        # debugfs exits 0 even when it cannot open the filesystem: the root's stat tells.
        entries = [_root_entry(raw, _debugfs(raw, ["stat <2>"], work).get("stat <2>", ""))]
        tree = _tree(raw, work)
        # rdump restores owners only as root and says so on stderr otherwise: ignored, the
        # owners come from `ls -p`.
        _debugfs(raw, [f"rdump / {dump}"], work)
        devices = _device_numbers(raw, [d.ino for _, d in tree if kind_of(d.mode) in "cb"], work)
        for path, d in tree:
            kind = kind_of(d.mode)
            local = dump / path.lstrip("/")
            content = ""
            if kind == "f":
                content = _sha256(local, path)
            elif kind == "l":
                content = _readlink(local, path)
            elif kind in "cb":
                content = devices.get(d.ino, "")
            entries.append(Entry(path, kind, stat.S_IMODE(d.mode), d.uid, d.gid, d.size, content))
    return sorted(entries, key=lambda e: e.path)


def rootfs_contents(qcow2: Path) -> list[Entry]:
    """The listing of an image's rootfs.qcow2 (unpacked to a sparse raw file meanwhile)."""
    with tempfile.TemporaryDirectory(prefix="pyd-rootfs-") as tmp:
        raw = Path(tmp) / "rootfs.raw"
        proc = run_qemu_img("convert", "-O", "raw", str(qcow2), str(raw))
        if proc.returncode != 0:
            raise ImageError(
                f"could not unpack {qcow2}: {proc.stderr.strip()}",
                hint="check it with `pyd image verify`",
            )
        return filesystem_contents(raw)


def device_number(stat_text: str) -> str:
    """MAJOR:MINOR (decimal) from `stat` of a device inode: "Device major/minor number:
    01:03 (hex 01:03)", prefixed "(New-style) " for large numbers."""
    match = re.search(r"Device major/minor number: (\d+):(\d+)", stat_text)
    if not match:
        raise ImageError(f"debugfs printed no device number: {stat_text[:200]!r}")
    return f"{int(match[1])}:{int(match[2])}"


def _device_numbers(raw: Path, inodes: Sequence[int], work: Path) -> dict[int, str]:
    if not inodes:
        return {}
    out = _debugfs(raw, [f"stat <{ino}>" for ino in inodes], work)
    return {ino: device_number(out.get(f"stat <{ino}>", "")) for ino in inodes}


def _root_entry(raw: Path, stat_text: str) -> Entry:
    # "Inode: 2   Type: directory    Mode:  0755   Flags: ..." then "User:     0   Group:     0"
    words = stat_text.replace(":", " ").split()
    try:
        mode = int(words[words.index("Mode") + 1], 8)
        uid = int(words[words.index("User") + 1])
        gid = int(words[words.index("Group") + 1])
    except (ValueError, IndexError):
        raise ImageError(
            f"debugfs could not read {raw} as an ext2/3/4 filesystem",
            hint=f"`debugfs -R stats {raw}` says why",
        ) from None
    return Entry("/", "d", mode, uid, gid, None)


def _sha256(local: Path, path: str) -> str:
    try:
        return sha256_file(local)
    except OSError as e:
        raise ImageError(f"debugfs did not dump {path}: {e}") from None


def _readlink(local: Path, path: str) -> str:
    try:
        return os.readlink(local)
    except OSError as e:
        raise ImageError(f"debugfs did not dump the symlink {path}: {e}") from None
