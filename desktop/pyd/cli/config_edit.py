"""A command's change to an instance's config.toml: load, change, save, and say when the
change takes effect. A change the model refuses raises before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyd.config.settings import InstanceConfig
from pyd.config.store import edit_config as edit_config_file
from pyd.instance.registry import Instance, existing
from pyd.lifecycle.agent_proc import agent_running


@dataclass(frozen=True)
class Edit:
    inst: Instance
    before: InstanceConfig
    after: InstanceConfig


def edit_config(name: str, change: Callable[[InstanceConfig], InstanceConfig]) -> Edit:
    """Apply `change` to the settings of the existing instance `name` and save them."""
    inst = existing(name)
    before, after = edit_config_file(inst.files.config, change)
    return Edit(inst, before, after)


def when_applied(inst: Instance, listing: str) -> str:
    """When a saved change reaches the instance: a running host agent watches config.toml
    and applies it within about a second; a stopped instance, at its next start. `listing`
    is the command that shows the result."""
    if agent_running(inst.files):
        return f"applied to the running instance (`{listing}` shows its state)"
    return "applies at the next start"
