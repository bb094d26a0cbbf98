"""Instance files for the owner alone: Docker's data (images, containers, volumes) sits in
the disks, and the keys, logs and settings beside them are the user's too.

Directories pyd makes under PYD_HOME are 0700 and files 0600; an instance made by an older
pyd is brought to these modes at its next start (`make_private`). The image cache is not
private: it holds only the guest image pyd built, no user data.

On Windows modes mean nothing (chmod only sets the read-only flag), so the same functions
give each directory a protected DACL for the current user alone, inherited by what is made
inside it later (QEMU's logs, the keys), and each existing file its own (host.win_security).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

from pyd.host.win_security import Securable, protect

DIR_MODE = 0o700
FILE_MODE = 0o600
QEMU_UMASK = 0o077  # what QEMU itself creates (serial log, pidfile, QMP socket): owner only


def private_dir(path: Path, platform: str = sys.platform) -> None:
    """`path` exists and is 0700 (made so when missing, changed when not); missing parents
    are made as mkdir -p would. `platform` (sys.platform's values) is for tests."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)
    _chmod(path, DIR_MODE)
    _owner_only(path, Securable.DIRECTORY, platform)


def instance_dir(root: Path) -> None:
    """An instance directory and its parents: PYD_HOME 0700 when pyd creates it (one the
    user made keeps its mode), instances/ and the instance directory 0700 always."""
    instances = root.parent
    home = instances.parent
    if not home.exists():
        home.parent.mkdir(parents=True, exist_ok=True)
        private_dir(home)
    private_dir(instances)
    private_dir(root)


def make_private(root: Path, platform: str = sys.platform) -> None:
    """Brings every directory under `root` (itself too) to 0700 and every other entry to
    0600. Symlinks are not followed: what they point at is not the instance's."""
    _chmod(root, DIR_MODE)
    _owner_only(root, Securable.DIRECTORY, platform)
    for base, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(base, name)
            if not path.is_symlink():
                _chmod(path, DIR_MODE)
                _owner_only(path, Securable.DIRECTORY, platform)
        for name in files:
            path = Path(base, name)
            if not path.is_symlink():
                _chmod(path, FILE_MODE)
                _owner_only(path, Securable.FILE, platform)


def write_private_text(path: Path, text: str) -> None:
    """A small file created 0600 from the start (no moment where others may read it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    _chmod(path, FILE_MODE)  # an existing file keeps its mode through O_CREAT
    _owner_only(path, Securable.FILE)  # and its DACL: a new one inherits its directory's


def _chmod(path: Path, mode: int) -> None:
    """Vanished files (a socket closed meanwhile) are not an error."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(path.lstat().st_mode) != mode:
            os.chmod(path, mode)


def _owner_only(path: Path, what: Securable, platform: str = sys.platform) -> None:
    """Windows: the current user's alone, by DACL. Vanished files are not an error."""
    if platform == "win32":
        with contextlib.suppress(FileNotFoundError):
            protect(path, what)
