"""The guest's side: the shell text for a batch, and what it does when a real shell runs it
(here, on this host's files, as the guest's shell does through sshfs): watchers see an
attribute event and a close-after-write, and neither content nor times change."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pyd.fileevents.changes import Kind
from pyd.fileevents.replay import CLOSE_WRITE_MAX, MAX_LINE, GuestReplay, guest_script


def test_chmods_are_grouped_by_mode_and_paths_quoted() -> None:
    script = guest_script(
        [
            GuestReplay(Kind.TOUCH, "/s/it's here.js", 0o644),
            GuestReplay(Kind.RESCAN, "/s", 0o755),
            GuestReplay(Kind.TOUCH, "/s/$(reboot)", 0o644),
        ]
    )
    lines = script.splitlines()
    assert lines[0] == "chmod 0644 -- '/s/it'\"'\"'s here.js' '/s/$(reboot)'"
    assert lines[1] == "chmod 0755 -- /s"
    assert lines[2].startswith("for f in '/s/it'\"'\"'s here.js' '/s/$(reboot)'; do dd ")
    assert "conv=nocreat,notrunc" in lines[2]
    assert script.endswith("\n")


def test_long_batches_are_split_and_close_writes_capped() -> None:
    batch = [GuestReplay(Kind.TOUCH, f"/s/{'x' * 200}/{i}", 0o644) for i in range(1000)]
    lines = guest_script(batch).splitlines()
    assert all(len(line) < MAX_LINE + 300 for line in lines)
    chmods = [line for line in lines if line.startswith("chmod")]
    assert sum(line.count("/s/") for line in chmods) == 1000
    loops = [line for line in lines if line.startswith("for f")]
    assert sum(line.count("/s/") for line in loops) == CLOSE_WRITE_MAX


class _Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def dispatch(self, event: Any) -> None:
        with self.lock:
            self.events.append((event.event_type, os.fsdecode(event.src_path)))


@pytest.mark.skipif(sys.platform != "linux", reason="inotify")
def test_the_script_raises_events_without_changing_content_or_times(tmp_path: Path) -> None:
    from watchdog.observers.inotify import InotifyObserver

    f = tmp_path / "app.js"
    f.write_text("v1")
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    f.chmod(0o640)
    before = f.stat()
    gone = tmp_path / "gone.js"  # deleted after its event: the replay must not make it again
    seen = _Seen()
    observer = InotifyObserver()
    observer.schedule(seen, str(tmp_path))  # type: ignore[arg-type]
    observer.start()
    try:
        script = guest_script(
            [
                GuestReplay(Kind.TOUCH, str(f), 0o640),
                GuestReplay(Kind.TOUCH, str(gone), 0o644),
                GuestReplay(Kind.RESCAN, str(tmp_path), 0o755),
            ]
        )
        subprocess.run(["sh"], input=script, text=True, check=False, capture_output=True)
        time.sleep(0.3)
    finally:
        observer.stop()
        observer.join(5)
    after = f.stat()
    assert f.read_text() == "v1"
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert after.st_mode & 0o7777 == 0o640
    assert not gone.exists()
    kinds = {kind for kind, path in seen.events if path == str(f)}
    assert {"attrib", "closed"} <= kinds  # IN_ATTRIB (libuv, inotifyd), IN_CLOSE_WRITE (entr)
    assert "modified" not in kinds
