"""The watchdog edge and the whole host side: the observer chosen per platform (pure), and
on this host a real observer feeding FileEvents, whose batches a stand-in shell records:
each kind of host change is replayed, a burst is coalesced, the replay's echo through
either SFTP server (the chmod sshfs sends) never comes back as a change."""

from __future__ import annotations

import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyd.fileevents.service import FileEvents
from pyd.fileevents.watch import FSEVENTS, INOTIFY, WINDOWS_API, observer_kind
from pyd.mounts.sftp_host import BUILTIN, OPENSSH, choose_server
from pyd.mounts.shares import Share

from .test_share_escapes import process_client


def test_each_platform_gets_its_native_observer() -> None:
    assert observer_kind("linux") == INOTIFY
    assert observer_kind("darwin") == FSEVENTS
    assert observer_kind("win32") == WINDOWS_API
    assert observer_kind("freebsd14") is None  # no polling of a whole tree


class Recorder:
    """The guest's shell, stood in for: keeps each batch's text."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.lock = threading.Lock()

    def send(self, script: str) -> bool:
        with self.lock:
            self.scripts.append(script)
        return True

    def close(self) -> None:
        pass

    def text(self) -> str:
        with self.lock:
            return "".join(self.scripts)

    def paths(self) -> set[str]:
        """The paths the chmods name."""
        words = [shlex.split(line) for line in self.text().splitlines() if line.startswith("chmod")]
        return {w for line in words for w in line[3:]}

    def clear(self) -> None:
        with self.lock:
            self.scripts.clear()


def _wait(cond: Callable[[], bool], seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _no_transport(wait: float) -> object:
    raise AssertionError("the stand-in shell needs no SSH")


pytestmark = pytest.mark.skipif(
    observer_kind(sys.platform) is None, reason="no native observer here"
)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[FileEvents, Recorder, Path]]:
    """FileEvents watching `app/`, which a running container bind-mounts from the share."""
    share_dir = tmp_path / "share"
    app = share_dir / "app"
    app.mkdir(parents=True)
    (app / "sub").mkdir()
    (share_dir / "elsewhere").mkdir()
    share = Share(str(share_dir), "/mnt/share", True)
    rec = Recorder()
    fe = FileEvents(_no_transport, sys.platform, shell=rec)
    fe.start()
    fe.set_shares([share])
    container = {"Names": ["/w"], "State": "running",
                 "Mounts": [{"Type": "bind", "Source": "/mnt/share/app"}]}  # fmt: skip
    fe.set_containers([container])
    assert _wait(lambda: fe.watching() == [str(app)])
    try:
        yield fe, rec, app
    finally:
        from pyd.host.threads import Deadline

        fe.close()
        assert fe.join(Deadline(5))


def test_each_host_change_is_replayed_at_its_guest_path(
    running: tuple[FileEvents, Recorder, Path],
) -> None:
    _fe, rec, app = running
    f = app / "a.js"
    f.write_text("1")  # created: the directory is rescanned
    assert _wait(lambda: "/mnt/share/app" in rec.paths())
    rec.clear()
    f.write_text("2")  # modified: the file itself
    assert _wait(lambda: "/mnt/share/app/a.js" in rec.paths())
    assert "dd if=/dev/null" in rec.text()
    rec.clear()
    f.rename(app / "sub" / "b.js")  # renamed: both directories
    assert _wait(lambda: {"/mnt/share/app/sub", "/mnt/share/app"} <= rec.paths())
    rec.clear()
    (app / "sub" / "b.js").unlink()  # deleted: its directory
    assert _wait(lambda: "/mnt/share/app/sub" in rec.paths())
    rec.clear()
    (app.parent / "elsewhere" / "x").write_text("not bound")  # no container binds it
    time.sleep(0.5)
    assert rec.text() == ""


def test_a_burst_of_creations_is_a_few_batches_and_every_file_is_covered(
    running: tuple[FileEvents, Recorder, Path],
) -> None:
    _fe, rec, app = running
    d = app / "many"
    d.mkdir()
    time.sleep(0.3)
    rec.clear()
    for i in range(1000):
        (d / f"f{i}").write_text("x")
    # Every creation's directory is rescanned after it: the last batch names the directory.
    assert _wait(lambda: "/mnt/share/app/many" in rec.paths(), 5)
    time.sleep(0.5)
    assert len(rec.scripts) < 100
    assert "/mnt/share/app/many" in rec.scripts[-1]


@pytest.mark.parametrize("server", [BUILTIN, OPENSSH])
def test_the_replays_chmod_through_either_sftp_server_does_not_come_back(
    running: tuple[FileEvents, Recorder, Path], server: str
) -> None:
    _fe, rec, app = running
    f = app / "main.py"
    f.write_text("print(1)")
    assert _wait(lambda: "/mnt/share/app" in rec.paths())
    f.write_text("print(2)")
    assert _wait(lambda: "/mnt/share/app/main.py" in rec.paths())
    time.sleep(0.3)
    rec.clear()
    before = f.stat()
    chosen = choose_server(sys.platform, {"PYD_SFTP_SERVER": server})
    if chosen.program != server and server == OPENSSH and chosen.builtin:
        pytest.skip(f"no confined OpenSSH sftp-server here: {chosen.note}")
    with process_client(chosen.argv(str(app.parent), True)) as c:
        mode = c.stat(str(f)).st_mode
        assert mode is not None
        c.chmod(str(f), mode & 0o7777)  # what sshfs sends for the guest's chmod
    time.sleep(0.6)
    after = f.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert f.read_text() == "print(2)"
    assert rec.text() == ""  # no loop
    f.write_text("print(3)")  # a real edit after it still is one
    assert _wait(lambda: "/mnt/share/app/main.py" in rec.paths())


def test_a_share_switched_off_stops_its_events(
    running: tuple[FileEvents, Recorder, Path],
) -> None:
    fe, rec, app = running
    fe.set_shares([Share(str(app.parent), "/mnt/share", True)], off={str(app.parent)})
    assert _wait(lambda: fe.watching() == [])
    (app / "c.js").write_text("x")
    time.sleep(0.5)
    assert rec.text() == ""


def test_events_named_by_their_real_path_come_back_under_the_path_watched(
    tmp_path: Path,
) -> None:
    """macOS's FSEvents says /private/var/... for a share under /var (a symlink)."""
    from pyd.fileevents.changes import Change
    from pyd.fileevents.targets import Target
    from pyd.fileevents.watch import _Handler

    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    got: list[tuple[str, str]] = []
    target = Target(str(link), Share(str(link), "/mnt/l", True))
    handler = _Handler(target, lambda t, c, p, d, dest: got.append((p, dest)), str(link))

    class Moved:
        event_type = "moved"
        src_path = str(real / "a")
        dest_path = str(real / "b")
        is_directory = False

    handler.dispatch(Moved())
    assert got == [(str(link / "a"), str(link / "b"))]
    assert Change.MOVED.value == Moved.event_type
