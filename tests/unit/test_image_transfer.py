import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyd.errors import ImageMismatchError
from pyd.image.transfer import (
    Progress,
    RetryPolicy,
    SinkRefused,
    TransferError,
    describe,
    download,
    eta,
    rate_of,
)
from tests.unit.listening import nobody_listens
from tests.unit.rangeserver import Behaviour, serve

DATA = os.urandom(1_000_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = RetryPolicy(attempts=4, first_delay=1.0, factor=2.0, timeout=10)


class Sleeps:
    """Records the backoff instead of sleeping through it."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_rate_and_time_left_are_pure_arithmetic() -> None:
    assert rate_of([]) == 0.0
    assert rate_of([(0.0, 0)]) == 0.0
    assert rate_of([(1.0, 0), (3.0, 4_000_000)]) == 2_000_000
    assert rate_of([(1.0, 0), (1.0, 5)]) == 0.0  # no time passed: unknown, not infinite
    assert eta(50, 100, 10.0) == 5.0
    assert eta(100, 100, 0.0) == 0.0
    assert eta(10, 100, 0.0) is None
    assert describe(Progress(12_000_000, 57_600_000, 45_100_000, 1.02)) == (
        "12.0/57.6 MB, 45.1 MB/s, 1 s left"
    )
    assert describe(Progress(0, 10, 0.0, None)) == "0.0/0.0 MB, 0.0 MB/s"
    assert describe(Progress(0, 10**9, 1e6, 125.0)).endswith("2 min 05 s left")


@given(st.integers(1, 10), st.floats(0.01, 10), st.floats(1.0, 4.0), st.floats(1, 100))
def test_backoff_grows_and_is_capped(n: int, first: float, factor: float, cap: float) -> None:
    policy = RetryPolicy(first_delay=first, factor=factor, max_delay=cap)
    assert policy.delay(n) <= cap
    assert policy.delay(n + 1) >= policy.delay(n)


def test_a_good_download_reports_progress_and_verifies(tmp_path: Path) -> None:
    seen: list[Progress] = []
    clock = iter(float(i) for i in range(1000))
    with serve({"f": DATA}) as srv:
        download(
            [srv.url + "f"],
            tmp_path / "f.part",
            len(DATA),
            SHA,
            progress=seen.append,
            clock=lambda: next(clock),
        )
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert seen[-1].done == seen[-1].total == len(DATA)
    assert seen[-1].eta == 0.0
    assert seen[-1].rate > 0
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_a_cut_at_half_resumes_and_sends_at_most_55_percent_again(tmp_path: Path) -> None:
    sleeps = Sleeps()
    behaviour = Behaviour(cut_after=len(DATA) // 2, cuts=1)
    with serve({"f": DATA}, behaviour) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=sleeps, policy=FAST)
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert srv.stats.body_bytes <= 1.55 * len(DATA)
    assert [r[1] for r in srv.stats.requests] == ["", f"bytes={len(DATA) // 2}-"]
    assert sleeps.slept == []  # bytes came: the server is up, no need to wait


def test_repeated_cuts_that_make_progress_do_not_use_up_the_retries(tmp_path: Path) -> None:
    behaviour = Behaviour(cut_after=len(DATA) // 10, cuts=8)
    with serve({"f": DATA}, behaviour) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps(), policy=FAST)
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert srv.stats.body_bytes == len(DATA)


def test_a_partial_file_from_an_earlier_run_is_resumed(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(DATA[:700_000])
    with serve({"f": DATA}) as srv:
        download([srv.url + "f"], part, len(DATA), SHA)
    assert part.read_bytes() == DATA
    assert srv.stats.body_bytes == 300_000


def test_a_stale_partial_file_is_thrown_away_and_fetched_again(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(b"x" * 700_000)  # not a prefix of DATA: the digest shows it at the end
    with serve({"f": DATA}) as srv:
        download([srv.url + "f"], part, len(DATA), SHA)
    assert part.read_bytes() == DATA
    assert srv.stats.body_bytes == 300_000 + len(DATA)


def test_a_server_without_range_restarts_the_file(tmp_path: Path) -> None:
    behaviour = Behaviour(ranges=False, cut_after=len(DATA) // 2, cuts=1)
    with serve({"f": DATA}, behaviour) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps())
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert [r[2] for r in srv.stats.requests] == [200, 200]
    assert srv.stats.body_bytes == len(DATA) * 3 // 2


def test_a_flipped_byte_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    bad = bytearray(DATA)
    bad[123_456] ^= 1
    with (
        serve({"f": bytes(bad)}) as srv,
        pytest.raises(ImageMismatchError, match=r"f\.part from .* does not match .*sha256") as e,
    ):
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA)
    assert srv.url + "f" in e.value.message
    assert e.value.hint
    assert list(tmp_path.iterdir()) == []
    assert len(srv.stats.requests) == 1  # a whole, uncut copy is not fetched twice


def test_a_flipped_byte_after_a_resume_is_fetched_once_more_then_refused(tmp_path: Path) -> None:
    bad = bytearray(DATA)
    bad[900_000] ^= 1
    behaviour = Behaviour(cut_after=len(DATA) // 2, cuts=1)
    with serve({"f": bytes(bad)}, behaviour) as srv, pytest.raises(ImageMismatchError):
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps())
    assert list(tmp_path.iterdir()) == []
    assert len(srv.stats.requests) == 3


@pytest.mark.parametrize("ranges", [True, False])
def test_an_oversized_file_is_refused_before_its_body(tmp_path: Path, ranges: bool) -> None:
    seen: list[Progress] = []
    with (
        serve({"f": DATA + b"more"}, Behaviour(ranges=ranges)) as srv,
        pytest.raises(ImageMismatchError, match="1000004 bytes, the manifest says 1000000"),
    ):
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, progress=seen.append)
    assert seen == []
    assert list(tmp_path.iterdir()) == []


def test_a_resume_on_a_longer_file_is_refused(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(DATA[:500_000])
    with serve({"f": DATA + b"more"}) as srv, pytest.raises(ImageMismatchError):
        download([srv.url + "f"], part, len(DATA), SHA)
    assert not part.exists()


def test_a_dead_mirror_is_skipped(tmp_path: Path) -> None:
    with serve({"f": DATA}) as dead:
        dead_url = dead.url
    if not nobody_listens(("127.0.0.1", int(dead_url.rsplit(":", 1)[1].strip("/")))):
        pytest.skip("the closed port was taken again")
    sleeps = Sleeps()
    with serve({}) as missing, serve({"f": DATA}) as good:
        urls = [dead_url + "f", missing.url + "f", good.url + "f"]
        download(urls, tmp_path / "f.part", len(DATA), SHA, sleep=sleeps, policy=FAST)
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert sleeps.slept == []
    assert missing.stats.requests == [("f", "", 404)]


def test_a_cut_on_one_mirror_resumes_from_the_next(tmp_path: Path) -> None:
    first = Behaviour(cut_after=len(DATA) // 2, cuts=1)
    with serve({"f": DATA}, first) as a, serve({"f": DATA}) as b:
        download([a.url + "f", b.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps())
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert b.stats.requests == [("f", f"bytes={len(DATA) // 2}-", 206)]


def test_a_redirect_is_resolved_again_on_every_retry(tmp_path: Path) -> None:
    behaviour = Behaviour(redirect=True, cut_after=len(DATA) // 3, cuts=2)
    with serve({"f": DATA}, behaviour) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps())
    assert (tmp_path / "f.part").read_bytes() == DATA
    statuses = [status for _, _, status in srv.stats.requests]
    assert statuses == [302, 200, 302, 206, 302, 206]
    once = [path for path, _, _ in srv.stats.requests]
    assert len(set(once)) == 1  # the file path the client asked for is the same each time


def test_retries_are_bounded_with_exponential_backoff(tmp_path: Path) -> None:
    sleeps = Sleeps()
    with (
        serve({"f": DATA}, Behaviour(fail=100)) as srv,
        pytest.raises(TransferError, match=r"after 4 attempts .*503") as e,
    ):
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=sleeps, policy=FAST)
    assert srv.url + "f" in e.value.message
    assert sleeps.slept == [1.0, 2.0, 4.0]
    assert len(srv.stats.requests) == 4
    assert list(tmp_path.iterdir()) == []


def test_a_transient_error_is_retried(tmp_path: Path) -> None:
    with serve({"f": DATA}, Behaviour(fail=2)) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps(), policy=FAST)
    assert (tmp_path / "f.part").read_bytes() == DATA


def test_a_failure_that_outlasts_the_retries_keeps_the_bytes_for_next_time(
    tmp_path: Path,
) -> None:
    part = tmp_path / "f.part"
    behaviour = Behaviour(cut_after=400_000, cuts=1)

    def network_goes_down(p: Progress) -> None:
        behaviour.fail = 100 if p.done >= 400_000 else 0

    with serve({"f": DATA}, behaviour) as srv:
        with pytest.raises(TransferError, match="400000 bytes are kept"):
            download(
                [srv.url + "f"],
                part,
                len(DATA),
                SHA,
                sleep=Sleeps(),
                policy=FAST,
                progress=network_goes_down,
            )
        assert part.stat().st_size == 400_000
        behaviour.fail = 0
        download([srv.url + "f"], part, len(DATA), SHA)
    assert part.read_bytes() == DATA
    assert srv.stats.body_bytes == len(DATA)


@pytest.mark.parametrize("code", [403, 404, 410])
def test_a_missing_file_fails_at_once_naming_the_url(tmp_path: Path, code: int) -> None:
    sleeps = Sleeps()
    with (
        serve({"f": DATA}, Behaviour(status={"f": code})) as srv,
        pytest.raises(TransferError, match=f"after 1 attempt .*answered {code}") as e,
    ):
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=sleeps)
    assert srv.url + "f" in e.value.message
    assert sleeps.slept == []


def test_a_file_url_is_read_whole_even_when_part_of_it_is_kept(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(DATA)
    part = tmp_path / "f.part"
    part.write_bytes(DATA[:1000])  # file:// has no Range: the whole file comes again
    download([(tmp_path / "src").as_uri()], part, len(DATA), SHA)
    assert part.read_bytes() == DATA


class Recorder:
    """A Sink that keeps what it is fed; refuses once it holds `refuse_at` bytes."""

    def __init__(self, refuse_at: int | None = None) -> None:
        self.data = bytearray()
        self.restarts = 0
        self.refuse_at = refuse_at

    def feed(self, data: bytes | memoryview) -> None:
        self.data += data
        if self.refuse_at is not None and len(self.data) >= self.refuse_at:
            raise SinkRefused("not the file")

    def restart(self) -> None:
        self.data.clear()
        self.restarts += 1


def test_a_sink_is_fed_each_byte_once_in_order_across_cuts(tmp_path: Path) -> None:
    sink = Recorder()
    behaviour = Behaviour(cut_after=len(DATA) // 10, cuts=5)
    with serve({"f": DATA}, behaviour) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps(), sink=sink)
    assert bytes(sink.data) == DATA
    assert sink.restarts == 0
    assert len(srv.stats.requests) == 6


def test_a_sink_restarts_with_a_server_without_range(tmp_path: Path) -> None:
    sink = Recorder()
    behaviour = Behaviour(ranges=False, cut_after=len(DATA) // 2, cuts=2)
    with serve({"f": DATA}, behaviour) as srv:
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sleep=Sleeps(), sink=sink)
    assert bytes(sink.data) == DATA
    assert sink.restarts == 2


def test_a_sink_is_fed_the_kept_prefix_of_an_earlier_run_first(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(DATA[:700_000])
    sink = Recorder()
    with serve({"f": DATA}) as srv:
        download([srv.url + "f"], part, len(DATA), SHA, sink=sink)
    assert bytes(sink.data) == DATA
    assert srv.stats.body_bytes == 300_000


def test_a_stale_prefix_restarts_the_sink_with_the_file(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(b"x" * 700_000)
    sink = Recorder()
    with serve({"f": DATA}) as srv:
        download([srv.url + "f"], part, len(DATA), SHA, sink=sink)
    assert bytes(sink.data) == DATA
    assert sink.restarts == 1


def test_a_sink_refusing_the_bytes_refuses_the_copy_early(tmp_path: Path) -> None:
    sink = Recorder(refuse_at=100_000)
    with (
        serve({"f": DATA}) as srv,
        pytest.raises(ImageMismatchError, match=r"f\.part from .* \(not the file\)"),
    ):
        download([srv.url + "f"], tmp_path / "f.part", len(DATA), SHA, sink=sink)
    assert list(tmp_path.iterdir()) == []
    assert len(sink.data) < 200_000  # read no further than the refusal


def test_a_sink_refusing_a_kept_prefix_starts_over_from_byte_0(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(DATA[:700_000])
    sink = Recorder(refuse_at=500_000)

    def refuse_once(data: bytes | memoryview) -> None:
        try:
            Recorder.feed(sink, data)
        except SinkRefused:
            sink.refuse_at = None
            raise

    sink.feed = refuse_once  # type: ignore[method-assign]
    with serve({"f": DATA}) as srv:
        download([srv.url + "f"], part, len(DATA), SHA, sink=sink)
    assert bytes(sink.data) == DATA
    assert sink.restarts == 1
    assert srv.stats.body_bytes == len(DATA)
