"""Host changes as guest events, and bursts as batches (pure; the clock is a parameter)."""

from __future__ import annotations

import pytest

from pyd.fileevents.changes import Change, Kind, Replay, parent, replays_for
from pyd.fileevents.coalesce import Coalescer
from pyd.fileevents.echo import EchoFilter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_modified_file_gets_an_event_on_itself() -> None:
    assert replays_for(Change.MODIFIED, "/s/a.js", False, "linux") == (
        Replay(Kind.TOUCH, "/s/a.js"),
    )


def test_a_directory_modified_is_the_echo_of_a_child_and_is_dropped() -> None:
    assert replays_for(Change.MODIFIED, "/s/d", True, "linux") == ()


def test_created_and_deleted_entries_rescan_their_parent() -> None:
    for change in (Change.CREATED, Change.DELETED):
        for is_dir in (False, True):
            assert replays_for(change, "/s/d/x", is_dir, "linux") == (Replay(Kind.RESCAN, "/s/d"),)


def test_a_rename_rescans_both_parents_once_each() -> None:
    assert replays_for(Change.MOVED, "/s/a/x", False, "linux", "/s/b/y") == (
        Replay(Kind.RESCAN, "/s/a"),
        Replay(Kind.RESCAN, "/s/b"),
    )
    assert replays_for(Change.MOVED, "/s/a/x", False, "linux", "/s/a/y") == (
        Replay(Kind.RESCAN, "/s/a"),
    )


def test_parents_follow_each_platforms_paths() -> None:
    assert parent("C:\\Users\\me\\src\\a.js", "win32") == "C:\\Users\\me\\src"
    assert parent("/Users/me/src/a.js", "darwin") == "/Users/me/src"
    assert parent("/home/me/src/", "linux") == "/home/me"


def test_nothing_is_due_while_nothing_is_pending() -> None:
    c = Coalescer(clock=Clock())
    assert c.wait() is None
    assert c.take() == []


def test_a_burst_is_one_batch_once_it_settles() -> None:
    clock = Clock()
    c = Coalescer(settle=0.05, max_wait=0.25, clock=clock)
    for i in range(1000):  # 1,000 files created at once: one rescan of their directory
        c.add(Replay(Kind.RESCAN, "/s/d"))
        c.add(Replay(Kind.TOUCH, f"/s/d/f{i}"))
    assert c.wait() == pytest.approx(0.05)
    assert c.take() == []  # not yet
    clock.now += 0.05
    batch = c.take()
    assert batch[0] == Replay(Kind.RESCAN, "/s/d")
    assert len(batch) == 1001
    assert c.wait() is None


def test_a_steady_stream_still_goes_out_at_max_wait() -> None:
    clock = Clock()
    c = Coalescer(settle=0.05, max_wait=0.25, clock=clock)
    sent = []
    for _ in range(30):  # a change every 20 ms, never quiet for 50 ms
        c.add(Replay(Kind.TOUCH, "/s/log"))
        clock.now += 0.02
        sent += c.take()
    assert len(sent) == 2  # at 0.26 s and 0.52 s, not never
    assert 0 < c.wait() <= 0.25  # type: ignore[operator]


def test_the_echo_of_a_replay_is_dropped_and_a_real_edit_is_not() -> None:
    echo = EchoFilter()
    assert not echo.is_echo("/s/a", (10, 1_000, 7))  # never replayed: an edit
    echo.replayed("/s/a", (10, 1_000, 7))
    assert echo.is_echo("/s/a", (10, 1_000, 7))  # the chmod came back: same size, mtime, inode
    assert not echo.is_echo("/s/a", (10, 1_001, 7))  # saved again within the same size
    assert not echo.is_echo("/s/a", (10, 1_000, 8))  # replaced by a rename (a new inode)
    assert echo.is_echo("/s/a", None)  # gone: its deletion's event tells


def test_the_echo_filter_forgets_the_oldest_first() -> None:
    echo = EchoFilter(size=2)
    for name in ("a", "b", "c"):
        echo.replayed(name, (1, 1, 1))
    assert not echo.is_echo("a", (1, 1, 1))
    assert echo.is_echo("c", (1, 1, 1))
