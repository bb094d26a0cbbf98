"""`file_events = false` in a [[mounts]] table turns the replay off for that share only."""

from __future__ import annotations

import pytest

from pyd.config.settings import parse_config
from pyd.config.store import platform_defaults
from pyd.errors import UsageError
from pyd.host.env import Host

HOST = Host("linux", "/home/u")


def _parse(mounts: list[dict[str, object]]) -> tuple[str, ...]:
    cfg = parse_config({"mounts": mounts}, "config.toml", platform_defaults(HOST), HOST)
    return cfg.file_events_off


def test_file_events_are_on_unless_a_share_says_false() -> None:
    assert _parse([{"location": "~/a"}, {"location": "/srv/b", "file_events": True}]) == ()
    off = _parse([{"location": "~/a", "file_events": False}, {"location": "/srv/b"}])
    assert off == ("/home/u/a",)
    cfg = parse_config({}, "config.toml", platform_defaults(HOST), HOST)
    assert cfg.file_events_off == ()  # the default share, the home directory: on


def test_file_events_must_be_a_boolean() -> None:
    with pytest.raises(UsageError) as e:
        _parse([{"location": "~/a", "file_events": "no"}])
    assert "mounts[0].file_events: expected true or false" in e.value.message
