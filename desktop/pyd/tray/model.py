"""The tray's menu as data: from each instance's state to the icon's kind, its title and a
tree of items (label, enabled, action). Pure, so every state is unit-tested without a desktop;
app.py turns the tree into pystray's menu."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyd.config.settings import context_name
from pyd.lifecycle.run_state import RunState


class IconKind(enum.StrEnum):
    """What the icon shows for all instances together."""

    RUNNING = "running"
    STARTING = "starting"  # starting, reconnecting, restarting, or an action of the tray runs
    STOPPED = "stopped"  # nothing runs (or there are no instances)
    ERROR = "error"  # failed, degraded, broken, or the backend cannot tell


class Verb(enum.StrEnum):
    """A menu action; the value is also the item's key in a path (`find_item`)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"
    LOGS = "logs"
    COPY_CONTEXT = "copy-context"
    QUIT = "quit"


@dataclass(frozen=True)
class InstanceView:
    """What the tray needs of one instance (from lifecycle/status.InstanceStatus)."""

    name: str
    state: RunState
    error: str = ""


@dataclass(frozen=True)
class Action:
    verb: Verb
    instance: str = ""  # "" for QUIT


@dataclass(frozen=True)
class MenuItem:
    key: str  # stable across states, for `find_item`: an instance's name, or a verb's value
    label: str
    enabled: bool = True
    action: Action | None = None
    children: tuple[MenuItem, ...] = ()
    default: bool = False  # what a click on the icon runs (the only action on plain X)
    visible: bool = True


_KIND = {
    RunState.RUNNING: IconKind.RUNNING,
    RunState.STARTING: IconKind.STARTING,
    RunState.RECONNECTING: IconKind.STARTING,
    RunState.RESTARTING: IconKind.STARTING,
    RunState.STOPPED: IconKind.STOPPED,
    RunState.SUSPENDED: IconKind.STOPPED,
    RunState.PAUSED: IconKind.STOPPED,  # not serving Docker; `pyd start` resumes it
    RunState.FAILED: IconKind.ERROR,
    RunState.DEGRADED: IconKind.ERROR,
    RunState.BROKEN: IconKind.ERROR,
    RunState.UNKNOWN: IconKind.ERROR,
}
# Which actions make sense in which state; an action of the tray still running disables all three.
_STARTABLE = {
    RunState.STOPPED,
    RunState.SUSPENDED,
    RunState.PAUSED,
    RunState.FAILED,
    RunState.DEGRADED,
}
_STOPPABLE = {
    RunState.RUNNING,
    RunState.STARTING,
    RunState.RECONNECTING,
    RunState.RESTARTING,
    RunState.PAUSED,
    RunState.FAILED,
    RunState.DEGRADED,
}
_RESTARTABLE = {RunState.RUNNING, RunState.RECONNECTING, RunState.FAILED, RunState.DEGRADED}
# What a running action of the tray is called in the menu ("stopping..."; ASCII: plain X
# takes the title as Latin-1).
_DOING = {Verb.START: "starting", Verb.STOP: "stopping", Verb.RESTART: "restarting"}
_ERROR_LABEL = 60  # characters of an error shown in the menu (a menu is not a log)
_KIND_ORDER = (IconKind.ERROR, IconKind.STARTING, IconKind.RUNNING)


def kind_of(state: RunState) -> IconKind:
    return _KIND[state]


def _urgency(view: InstanceView) -> int:
    """0 for an instance in error, then starting, running; stopped last."""
    kind = kind_of(view.state)
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


def icon_kind(views: Sequence[InstanceView], pending: Mapping[str, Verb]) -> IconKind:
    """The most pressing kind among the instances: error, then starting (a pending action
    counts), then running; stopped when nothing runs."""
    kinds = {IconKind.STARTING if v.name in pending else kind_of(v.state) for v in views}
    return next((k for k in _KIND_ORDER if k in kinds), IconKind.STOPPED)


def state_text(view: InstanceView, pending: Mapping[str, Verb]) -> str:
    verb = pending.get(view.name)
    return f"{_DOING[verb]}..." if verb in _DOING else view.state.value


def title(views: Sequence[InstanceView], pending: Mapping[str, Verb]) -> str:
    """The icon's tooltip (the window name on plain X): every instance and its state."""
    if not views:
        return "pyd: no instances"
    return "pyd: " + ", ".join(f"{v.name} {state_text(v, pending)}" for v in views)


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _ERROR_LABEL else line[: _ERROR_LABEL - 3] + "..."


def instance_menu(view: InstanceView, pending: Mapping[str, Verb]) -> MenuItem:
    idle = view.name not in pending
    state = view.state

    def item(verb: Verb, label: str, enabled: bool = True) -> MenuItem:
        return MenuItem(verb.value, label, enabled, Action(verb, view.name))

    children = [MenuItem("state", f"State: {state_text(view, pending)}", enabled=False)]
    if view.error:
        children.append(MenuItem("error", _short(view.error), enabled=False))
    children += [
        item(Verb.START, "Start", idle and state in _STARTABLE),
        item(Verb.STOP, "Stop", idle and state in _STOPPABLE),
        item(Verb.RESTART, "Restart", idle and state in _RESTARTABLE),
        item(Verb.LOGS, "Open logs"),
        item(Verb.COPY_CONTEXT, f"Copy `docker context use {context_name(view.name)}`"),
    ]
    return MenuItem(
        view.name, f"{view.name}: {state_text(view, pending)}", children=tuple(children)
    )


def menu(views: Sequence[InstanceView], pending: Mapping[str, Verb]) -> tuple[MenuItem, ...]:
    """The whole menu: one submenu per instance, then Quit. The default item (a click on the
    icon) opens the logs of the instance most in need: harmless, and where to look first."""
    items: list[MenuItem] = [instance_menu(v, pending) for v in views]
    if not items:
        items.append(MenuItem("none", "No instances (`pyd start` makes one)", enabled=False))
    else:
        first = min(views, key=_urgency)
        items.append(
            MenuItem(
                "click",
                f"Open logs of {first.name}",
                action=Action(Verb.LOGS, first.name),
                default=True,
                visible=False,
            )
        )
    items.append(MenuItem(Verb.QUIT.value, "Quit", action=Action(Verb.QUIT)))
    return tuple(items)


def find_item(items: Sequence[MenuItem], path: Sequence[str]) -> MenuItem | None:
    """The item at `path` of keys (e.g. ("default", "stop")), or None."""
    if not path:
        return None
    for it in items:
        if it.key == path[0]:
            return it if len(path) == 1 else find_item(it.children, path[1:])
    return None
