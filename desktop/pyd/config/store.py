"""An instance's config.toml on disk: read with the shipped defaults, rewritten in place.

The file is the user's: a rewrite keeps their comments, key order and spelling of unchanged
values (tomlkit), and a file pyd cannot read is reported, never replaced or deleted.

The host's platform and home directory are read here, at the edge (`this_host`), unless the
caller gives them: the shares depend on them, and the model takes them as a value.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array, Comment, InlineTable, Item, Key, Null, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from pyd.config.settings import (
    IMAGE_SETTINGS,
    MOUNTS,
    InstanceConfig,
    canonical_entry,
    parse_config,
    setting_matches,
    shares_to_toml,
    to_toml_dict,
)
from pyd.errors import PydError
from pyd.host.atomicfile import write_atomic
from pyd.host.env import Host, this_host
from pyd.host.filelocks import holding
from pyd.mounts.shares import Share, default_shares
from pyd.mounts.winpath import guest_path
from pyd.resources import vmconfig

DEFAULTS = "defaults"  # vmconfig/defaults.toml
_NEW_FILE_HEADER = "pyd instance settings; `pyd config set KEY VALUE` edits this file"


EDIT_LOCK_WAIT = 30.0


def edit_config(
    path: Path, change: Callable[[InstanceConfig], InstanceConfig], host: Host | None = None
) -> tuple[InstanceConfig, InstanceConfig]:
    """Loads, changes and saves config.toml as one step: two commands at once (say, two
    `pyd port add`) each see the other's change instead of one losing it. Returns the
    settings before and after; a change that raises leaves the file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with holding(Path(str(path) + ".lock"), EDIT_LOCK_WAIT, str(path)):
        before = load_config(path, host)
        after = change(before)
        if after != before or not path.exists():
            save_config(path, after, host)
    return before, after


def load_config(path: Path, host: Host | None = None) -> InstanceConfig:
    """The instance's settings over the defaults; the defaults alone when there is no file.
    `host` is this machine unless given."""
    host = host or this_host()
    doc = _read(path)
    data = doc.unwrap() if doc is not None else {}
    return parse_config(data, str(path), platform_defaults(host), host)


def platform_defaults(host: Host) -> dict[str, Any]:
    """vmconfig/defaults.toml, and the shares, which depend on the host's home directory
    (backend auto runs QEMU directly on Windows, which has no libvirt QEMU driver)."""
    defaults = dict(vmconfig(DEFAULTS))
    defaults[MOUNTS] = shares_to_toml(default_shares(host))
    return defaults


def save_config(path: Path, cfg: InstanceConfig, host: Host | None = None) -> None:
    """Write every setting of `cfg` to `path` atomically, keeping what the user wrote."""
    host = host or this_host()
    doc = _read(path)
    if doc is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_NEW_FILE_HEADER))
    written = to_toml_dict(cfg)
    for key, value in written.items():
        if key == MOUNTS:
            _update_mounts(doc, cfg, host)
        elif isinstance(value, dict):
            _update_table(doc, key, cfg, value, host)
        elif not _unchanged(doc, key, key, cfg, host):
            _set_top_level(doc, key, value)
    for key in IMAGE_SETTINGS:  # back to the default: the key goes (a default spelled out stays)
        if key not in written and key in doc and not _unchanged(doc, key, key, cfg, host):
            del doc[key]
    write_atomic(path, tomlkit.dumps(doc))


def _unchanged(
    container: Container | Table | InlineTable,
    leaf: str,
    key: str,
    cfg: InstanceConfig,
    host: Host,
) -> bool:
    """Whether the file already says what `cfg` does; then "4G" stays as the user wrote it,
    and so does its comment."""
    if leaf not in container:
        return False
    value = container[leaf]  # tomlkit hands a boolean out as a plain bool
    return setting_matches(cfg, key, value.unwrap() if isinstance(value, Item) else value, host)


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
    doc: TOMLDocument, name: str, cfg: InstanceConfig, values: dict[str, Any], host: Host
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
        if _unchanged(table, leaf, key, cfg, host):
            continue
        current = table.get(leaf)
        inline = isinstance(table, InlineTable)  # stays on one line, as the user wrote it
        if not (isinstance(current, Array) and _edit_list(current, key, value, inline, host)):
            table[leaf] = _toml_value(value, one_line=inline)


def _edit_list(array: Array, key: str, wanted: list[Any], one_line: bool, host: Host) -> bool:
    """Turn `array` into `wanted` by removing and appending entries, so the entries kept keep
    the user's spelling and comments. False, untouched, if that cannot give wanted's order,
    or when the list is to be emptied: `[]` reads better than the bare brackets left behind."""
    if not wanted:
        return False
    spelled = [canonical_entry(key, entry, host) for entry in array.unwrap()]
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


# --- [[mounts]] -----------------------------------------------------------------------------
#
# tomlkit keeps the comment lines above a `[[mounts]]` header, and the blank line before
# them, at the end of the table before it. Removing that table would take them along, and
# leave its own comments above the next share. So the tables are edited with each header's
# comments moved onto the table they stand above (into the text before its header line).


def _update_mounts(doc: TOMLDocument, cfg: InstanceConfig, host: Host) -> None:
    """Write the shares as [[mounts]] tables, keeping the user's tables that stay (with their
    comments and spelling, `~` included). A file without `mounts` stays without it while the
    shares are the default ones, so that the default follows the home directory."""
    current = doc.get(MOUNTS)
    if current is None:
        if cfg.mounts == default_shares(host):
            return
    elif setting_matches(cfg, MOUNTS, current.unwrap(), host):
        return
    if not cfg.mounts:
        if isinstance(current, AoT):
            _remove_aot(doc)
        _set_top_level(doc, MOUNTS, tomlkit.array())  # `mounts = []`: no shares at all
        return
    if isinstance(current, AoT) and _edit_aot(doc, current, cfg.mounts, host):
        return
    if isinstance(current, Array) and current:  # the user's one-line style stays
        current.clear()
        current.extend(_share_table(s, host, tomlkit.inline_table()) for s in cfg.mounts)
        return
    if isinstance(current, AoT):
        _remove_aot(doc)
    elif current is not None:
        doc.remove(MOUNTS)
    doc.append(MOUNTS, tomlkit.aot())
    for share in cfg.mounts:
        doc[MOUNTS].append(_new_table(share, host))


def _share_table(share: Share, host: Host, table: Any) -> Any:
    """A share as the file spells it: mount_point only when it is not the default."""
    table["location"] = share.location
    if share.mount_point != guest_path(share.location, host.platform):
        table["mount_point"] = share.mount_point
    table["writable"] = share.writable
    return table


def _new_table(share: Share, host: Host) -> Table:
    table = tomlkit.table()
    _share_table(share, host, table)
    table.trivia.indent = "\n"  # a blank line above each share's header
    return table


def _edit_aot(doc: TOMLDocument, aot: AoT, wanted: Sequence[Share], host: Host) -> bool:
    """Turn the [[mounts]] tables into `wanted` by removing and appending tables. False,
    untouched, if that cannot give wanted's order."""
    tables = list(aot.body)
    spelled = [canonical_entry(MOUNTS, t.unwrap(), host) for t in tables]
    kept = [s for s in spelled if s in wanted]
    added = [s for s in wanted if s not in kept]
    if [*kept, *added] != list(wanted):
        return False
    _adopt_header(doc)
    for before, table in itertools.pairwise(tables):
        table.trivia.indent = _text(_pop_tail(before)) + table.trivia.indent
    after = _pop_tail(tables[-1])  # the comments above what follows the list
    for i in reversed(range(len(tables))):
        if spelled[i] not in wanted:
            del aot[i]
    if aot.body and aot.body[0] is not tables[0]:
        # A new first table: the blank line above the list is the document's.
        aot.body[0].trivia.indent = aot.body[0].trivia.indent.lstrip("\n")
    for share in added:
        aot.append(_new_table(share, host))
    for _key, item in after:
        aot.body[-1].value.append(None, item)
    return True


def _remove_aot(doc: TOMLDocument) -> None:
    """Remove the [[mounts]] tables and the comments above them; the comments above what
    follows them stay with it."""
    after = _pop_tail(doc[MOUNTS].body[-1])
    at = _adopt_header(doc)
    doc.remove(MOUNTS)
    following = next((item for _k, item in doc.body[at + 1 :] if not isinstance(item, Null)), None)
    if isinstance(following, AoT):
        following = following.body[0]
    if isinstance(following, Table):
        # The blank line above the list is the document's: it now stands above these.
        following.trivia.indent = _text(after).lstrip("\n") + following.trivia.indent
    else:  # the end of the file
        for _key, item in after:
            doc.add(item)


def _adopt_header(doc: TOMLDocument) -> int:
    """Move the comment lines right above the first [[mounts]] header, which tomlkit keeps
    in the document, onto the first table, as with the others. Returns the list's place in
    the document's body."""
    body = doc.body
    at = next(i for i, (k, _item) in enumerate(body) if k is not None and k.key == MOUNTS)
    start = at
    while start > 0 and body[start - 1][0] is None and isinstance(body[start - 1][1], Comment):
        start -= 1
    first = doc[MOUNTS].body[0]
    first.trivia.indent = _text(body[start:at]) + first.trivia.indent
    for i in range(start, at):
        body[i] = (None, Null())  # in place: the document's key index stays right
    return at


def _pop_tail(table: Table) -> list[tuple[Key | None, Item]]:
    """Take the blank line and comment lines at the end of `table`, which stand above the
    next header, out of it. Comments before a blank line there stay: they are the table's
    own (a commented-out key)."""
    body = table.value.body
    start = len(body)
    while (
        start > 0
        and body[start - 1][0] is None
        and isinstance(body[start - 1][1], Whitespace | Comment)
    ):
        start -= 1
    blanks = [i for i in range(start, len(body)) if isinstance(body[i][1], Whitespace)]
    if blanks:
        start = blanks[-1]
    tail = body[start:]
    del body[start:]  # keyless items at the end: the table's key index is unaffected
    return tail


def _text(items: Sequence[tuple[Key | None, Item]]) -> str:
    return "".join(item.as_string() for _key, item in items)
