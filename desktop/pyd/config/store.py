"""An instance's config.toml on disk: read with the shipped defaults, rewritten in place.

The file is the user's: a rewrite keeps their comments, key order and spelling of unchanged
values (tomlkit), and a file pyd cannot read is reported, never replaced or deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array, Comment, InlineTable, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from pyd.atomicfile import write_atomic
from pyd.config.model import (
    InstanceConfig,
    canonical_entry,
    parse_config,
    setting_matches,
    to_toml_dict,
)
from pyd.errors import PydError
from pyd.resources import vmconfig

DEFAULTS = "defaults"  # vmconfig/defaults.toml
_NEW_FILE_HEADER = "pyd instance settings; `pyd config set KEY VALUE` edits this file"


def load_config(path: Path) -> InstanceConfig:
    """The instance's settings over the defaults; the defaults alone when there is no file."""
    doc = _read(path)
    data = doc.unwrap() if doc is not None else {}
    return parse_config(data, str(path), platform_defaults(sys.platform))


def platform_defaults(platform: str) -> dict[str, Any]:
    """vmconfig/defaults.toml, except that Windows has no libvirt QEMU driver: QEMU runs
    directly there."""
    defaults = dict(vmconfig(DEFAULTS))
    if platform == "win32":
        defaults["backend"] = "qemu"
    return defaults


def save_config(path: Path, cfg: InstanceConfig) -> None:
    """Write every setting of `cfg` to `path` atomically, keeping what the user wrote."""
    doc = _read(path)
    if doc is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_NEW_FILE_HEADER))
    for key, value in to_toml_dict(cfg).items():
        if isinstance(value, dict):
            _update_table(doc, key, cfg, value)
        elif not _unchanged(doc, key, key, cfg):
            _set_top_level(doc, key, value)
    write_atomic(path, tomlkit.dumps(doc))


def _unchanged(
    container: Container | Table | InlineTable, leaf: str, key: str, cfg: InstanceConfig
) -> bool:
    """Whether the file already says what `cfg` does; then "4G" stays as the user wrote it,
    and so does its comment."""
    return leaf in container and setting_matches(cfg, key, container[leaf].unwrap())


def _set_top_level(doc: TOMLDocument, key: str, value: Any) -> None:
    """Set a top-level key; a new one goes after the last top-level setting, so that the
    comment above a [table] stays with the table (tomlkit puts it under the comment)."""
    if key in doc:
        doc[key] = value
        return
    body = doc.body
    first_table = next(
        (
            i
            for i, (k, item) in enumerate(body)
            if isinstance(item, Table | AoT) and k is not None and not k.is_dotted()
        ),
        None,
    )
    if first_table is None:
        doc[key] = value
        return
    at = first_table
    while at > 0 and isinstance(body[at - 1][1], Comment):
        at -= 1
    settings_before = [i for i, (k, _item) in enumerate(body[:at]) if k is not None]
    if settings_before:
        at = settings_before[-1] + 1
    doc._insert_at(at, key, value)  # tomlkit has no public "insert at"
    following = body[at + 1][1]
    if not isinstance(following, Whitespace) and "\n" not in following.trivia.indent:
        following.trivia.indent = "\n" + following.trivia.indent


def _update_table(
    doc: TOMLDocument, name: str, cfg: InstanceConfig, values: dict[str, Any]
) -> None:
    """Write the settings of table `name` ([ports]), in the table the user wrote: under a
    [ports] header, as dotted keys (ports.bind = …) or inline."""
    table = doc.get(name)
    if not isinstance(table, Table | InlineTable):
        new = tomlkit.table()
        for leaf, value in values.items():
            new[leaf] = _toml_value(value)
        doc[name] = new
        return
    for leaf, value in values.items():
        key = f"{name}.{leaf}"
        if _unchanged(table, leaf, key, cfg):
            continue
        current = table.get(leaf)
        inline = isinstance(table, InlineTable)  # stays on one line, as the user wrote it
        if not (isinstance(current, Array) and _edit_list(current, key, value, inline)):
            table[leaf] = _toml_value(value, one_line=inline)


def _edit_list(array: Array, key: str, wanted: list[Any], one_line: bool) -> bool:
    """Turn `array` into `wanted` by removing and appending entries, so the entries kept keep
    the user's spelling and comments. False, untouched, if that cannot give wanted's order,
    or when the list is to be emptied: `[]` reads better than the bare brackets left behind."""
    if not wanted:
        return False
    spelled = [canonical_entry(key, entry) for entry in array.unwrap()]
    kept = [entry for entry in spelled if entry in wanted]
    added = [entry for entry in wanted if entry not in kept]
    if [*kept, *added] != wanted:
        return False
    for i in reversed(range(len(spelled))):
        if spelled[i] not in wanted:
            del array[i]
    for entry in added:
        array.append(entry)
    if len(array) > 1 and not one_line and "\n" not in array.as_string():
        array.multiline(True)
    return True


def _toml_value(value: Any, one_line: bool = False) -> Any:
    """Lists of more than one entry one per line, so that a diff shows one changed forward."""
    if isinstance(value, list):
        array = tomlkit.array()
        array.extend(value)
        return array.multiline(len(value) > 1 and not one_line)
    return value


def _read(path: Path) -> TOMLDocument | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise _corrupted(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    except OSError as e:
        raise PydError(
            f"cannot read the config file {path}: {e.strerror}",
            hint="check the file's permissions",
        ) from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as e:
        raise _corrupted(path, str(e)) from None


def _corrupted(path: Path, detail: str) -> PydError:
    return PydError(
        f"the config file {path} is corrupted ({detail})",
        hint=f"fix the TOML in {path}, or remove the file to use the default settings",
    )
