"""The tray's menu model (pyd/tray/model.py): every instance state gives the icon kind, the
menu's labels and which actions are enabled; a running action of the tray disables the
lifecycle items and shows as starting."""

from __future__ import annotations

import pytest

from pyd.lifecycle.run_state import RunState
from pyd.tray.model import (
    Action,
    IconKind,
    InstanceView,
    MenuItem,
    Verb,
    find_item,
    icon_kind,
    instance_menu,
    kind_of,
    menu,
    title,
)

# state -> (kind, Start, Stop, Restart enabled)
EXPECTED = {
    RunState.RUNNING: (IconKind.RUNNING, False, True, True),
    RunState.STARTING: (IconKind.STARTING, False, True, False),
    RunState.RECONNECTING: (IconKind.STARTING, False, True, True),
    RunState.RESTARTING: (IconKind.STARTING, False, True, False),
    RunState.STOPPED: (IconKind.STOPPED, True, False, False),
    RunState.SUSPENDED: (IconKind.STOPPED, True, False, False),
    RunState.PAUSED: (IconKind.STOPPED, True, True, False),
    RunState.FAILED: (IconKind.ERROR, True, True, True),
    RunState.DEGRADED: (IconKind.ERROR, True, True, True),
    RunState.BROKEN: (IconKind.ERROR, False, False, False),
    RunState.UNKNOWN: (IconKind.ERROR, False, False, False),
}


def _enabled(item: MenuItem, key: str) -> bool:
    found = find_item(item.children, [key])
    assert found is not None, key
    return found.enabled


def test_every_run_state_has_an_expectation() -> None:
    assert set(EXPECTED) == set(RunState)


@pytest.mark.parametrize("state", list(RunState))
def test_each_state_gives_its_kind_and_enabled_actions(state: RunState) -> None:
    kind, start, stop, restart = EXPECTED[state]
    view = InstanceView("dev", state)
    assert kind_of(state) is kind
    assert icon_kind([view], {}) is kind
    sub = instance_menu(view, {})
    assert sub.label == f"dev: {state.value}"
    assert sub.children[0].label == f"State: {state.value}" and not sub.children[0].enabled
    assert (_enabled(sub, "start"), _enabled(sub, "stop"), _enabled(sub, "restart")) == (
        start,
        stop,
        restart,
    )
    # Logs and the context line are there in every state.
    assert _enabled(sub, "logs") and _enabled(sub, "copy-context")


@pytest.mark.parametrize("state", list(RunState))
def test_an_action_in_progress_disables_start_stop_restart(state: RunState) -> None:
    view = InstanceView("dev", state)
    pending = {"dev": Verb.STOP}
    sub = instance_menu(view, pending)
    assert sub.label == "dev: stopping..."
    assert not any(_enabled(sub, k) for k in ("start", "stop", "restart"))
    assert _enabled(sub, "logs")
    assert icon_kind([view], pending) is IconKind.STARTING


def test_the_icon_shows_the_most_pressing_kind() -> None:
    run, stop = InstanceView("a", RunState.RUNNING), InstanceView("b", RunState.STOPPED)
    starting, failed = InstanceView("c", RunState.STARTING), InstanceView("d", RunState.FAILED)
    assert icon_kind([], {}) is IconKind.STOPPED
    assert icon_kind([stop], {}) is IconKind.STOPPED
    assert icon_kind([stop, run], {}) is IconKind.RUNNING
    assert icon_kind([run, starting, stop], {}) is IconKind.STARTING
    assert icon_kind([run, starting, failed], {}) is IconKind.ERROR


def test_menu_items_carry_their_instance_and_the_default_context_name() -> None:
    items = menu(
        [InstanceView("default", RunState.RUNNING), InstanceView("x", RunState.STOPPED)], {}
    )
    assert [i.key for i in items] == ["default", "x", "click", "quit"]
    stop = find_item(items, ["default", "stop"])
    assert stop is not None and stop.action == Action(Verb.STOP, "default")
    copy = find_item(items, ["default", "copy-context"])
    assert copy is not None and copy.label == "Copy `docker context use pyd`"
    copy_x = find_item(items, ["x", "copy-context"])
    assert copy_x is not None and copy_x.label == "Copy `docker context use pyd-x`"
    quit_ = find_item(items, ["quit"])
    assert quit_ is not None and quit_.action == Action(Verb.QUIT)


def test_a_click_opens_the_logs_of_the_instance_most_in_need() -> None:
    items = menu(
        [
            InstanceView("a", RunState.RUNNING),
            InstanceView("b", RunState.STOPPED),
            InstanceView("c", RunState.FAILED, "the VM died"),
        ],
        {},
    )
    defaults = [i for i in items if i.default]
    assert len(defaults) == 1 and not defaults[0].visible
    assert defaults[0].action == Action(Verb.LOGS, "c")


def test_no_instances_says_how_to_make_one() -> None:
    items = menu([], {})
    assert [i.key for i in items] == ["none", "quit"]
    assert not items[0].enabled and "pyd start" in items[0].label
    assert title([], {}) == "pyd: no instances"


def test_an_error_shows_its_first_line_shortened() -> None:
    long = "x" * 200 + "\nsecond line"
    sub = instance_menu(InstanceView("dev", RunState.FAILED, long), {})
    error = find_item(sub.children, ["error"])
    assert error is not None and not error.enabled
    assert len(error.label) == 60 and error.label.endswith("...") and "second" not in error.label
    assert (
        find_item(instance_menu(InstanceView("d", RunState.RUNNING), {}).children, ["error"])
        is None
    )


def test_the_title_names_every_instance_and_its_state() -> None:
    views = [InstanceView("default", RunState.RUNNING), InstanceView("x", RunState.STOPPED)]
    assert title(views, {}) == "pyd: default running, x stopped"
    assert title(views, {"x": Verb.START}) == "pyd: default running, x starting..."


def test_find_item_misses_unknown_paths() -> None:
    items = menu([InstanceView("default", RunState.RUNNING)], {})
    assert find_item(items, []) is None
    assert find_item(items, ["nope", "stop"]) is None
    assert find_item(items, ["default", "nope"]) is None


@pytest.mark.parametrize("verb", [None, Verb.START, Verb.STOP, Verb.RESTART])
def test_the_title_is_latin_1_as_plain_x_needs(verb: Verb | None) -> None:
    """pystray's xorg backend sets the title as a Latin-1 WM_NAME: anything else raised."""
    views = [InstanceView(f"i{n}", s) for n, s in enumerate(RunState)]
    pending = {v.name: verb for v in views} if verb else {}
    title(views, pending).encode("latin-1")
