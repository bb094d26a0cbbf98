"""Instance settings as values: parsing, defaults and validation, with no file IO.

The order is Lima's: take the user's keys, merge them over the defaults, then check each
value. Every problem is collected and reported at once, so one edit of the file fixes all.

A setting in a TOML table has a dotted name: `[ports]` `bind = "localhost"` is the setting
"ports.bind", which is also how `pyd config set` and the error messages name it. The
shares are a list of tables, `[[mounts]]`, as Lima writes them; an error names one by its
place in the list, counted from 0 as Lima does: "mounts[1].location".

Reading the shares needs two facts about the host, its platform (path convention) and the
user's home directory (`~`, and the default share): they come in as a `Host`, taken at the
edge, so that this module stays pure.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyd.config.machine import AUTO, Accel
from pyd.errors import UsageError
from pyd.host.env import Host
from pyd.host.loopback import address_text
from pyd.mounts.shares import (
    Share,
    check_mount_point,
    host_location,
    share_conflicts,
    with_share_added,
    with_share_removed,
)
from pyd.mounts.winpath import guest_path
from pyd.ports.forwards import (
    BIND_POLICIES,
    Forward,
    format_port_spec,
    overlaps,
    parse_port_spec,
    removal_matcher,
)

DEFAULT_INSTANCE = "default"
KEYS = (
    "cpus",
    "memory",
    "disk",
    "accel",
    "backend",
    "libvirt_uri",
    "stop",
    "ports.bind",
    "ports.forwards",
    "network.host_access",
    "network.host_dns",
    "image_index",
    "image_keys",
    "image_source",
    "mounts",
)
TABLES = ("ports", "network")  # the TOML tables that hold settings: [ports] holds "ports.*"
ACCELS = (AUTO, *(a.value for a in Accel))


class BackendName(enum.StrEnum):
    """What runs the VM, as the `backend` setting names it (vm/backends/choice.py)."""

    AUTO = "auto"  # libvirt where its daemon answers on Linux, else QEMU directly
    LIBVIRT = "libvirt"  # libvirtd
    QEMU = "qemu"  # QEMU directly, as pyd's own child


BACKENDS = tuple(b.value for b in BackendName)
MAX_CPUS = 64
MIN_MEMORY_MIB = 256
MAX_MEMORY_MIB = 1024 * 1024  # 1 TiB: the host's RAM is not known to pure code
MAX_DISK_GIB = 16384

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
_SIZE = re.compile(r"(\d+)\s*([a-z]*)", re.IGNORECASE)
# Binary units only; the one-letter forms mean the same, as in `docker run --memory 2g`.
_UNIT_MIB = {"m": 1, "mib": 1, "g": 1024, "gib": 1024, "t": 1024 * 1024, "tib": 1024 * 1024}
_DECIMAL_UNITS = {"mb", "gb", "tb"}
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class InstanceConfig:
    cpus: int
    memory_mib: int
    disk_gib: int
    accel: str
    backend: str
    libvirt_uri: str
    ports_bind: str  # one of BIND_POLICIES
    # Manual forwards as format_port_spec writes them ("127.0.0.1:8080:80"), in file order.
    port_forwards: tuple[str, ...]
    # The host directories shared into the guest, in file order.
    mounts: tuple[Share, ...]
    # Whether containers reach the host's loopback at 10.0.2.2 (QEMU's gateway), as Docker
    # Desktop's host.docker.internal does; the guest enforces false (seed, next start).
    host_access: bool = True
    # Whether the guest's A and AAAA queries are answered through this host's own resolver
    # (pyd.dns: hosts file, VPN split DNS, mDNS); false: QEMU's DNS answers all (at once).
    host_dns: bool = True
    # Where a host that does not build its image downloads it (image/obtain.py): URLs of a
    # release index.json, tried in order; PEM public keys trusted besides the project's;
    # and whether to build or download ("auto": build where this host can).
    image_index: tuple[str, ...] = ()
    image_keys: tuple[str, ...] = ()
    image_source: str = "auto"
    # What `pyd stop` does: power off, or save the VM's memory as `pyd suspend` does.
    stop: str = "shutdown"
    # Locations of the shares whose [[mounts]] table says file_events = false: host changes
    # in them are not replayed in the guest (pyd.fileevents). Apart from `mounts`, so that
    # turning it off does not remount the share.
    file_events_off: tuple[str, ...] = ()


def validate_name(name: str) -> str:
    """The instance name, if usable in file names, libvirt domain names and docker contexts."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid instance name {name!r}",
            hint="use 1-31 lowercase letters, digits and '-', starting with a letter or digit "
            "(e.g. dev, build-2)",
        )
    return name


def context_name(instance: str) -> str:
    """The docker context of an instance: `pyd` for the default one, `pyd-NAME` otherwise."""
    validate_name(instance)
    return "pyd" if instance == DEFAULT_INSTANCE else f"pyd-{instance}"


def parse_size(text: str | int, unit_default: str, key: str = "size") -> int:
    """A size in MiB from "2GiB", "2G", "512MiB", "512M" or a bare number in `unit_default`.

    Only binary units: "2GB" is refused rather than guessed as 2000 or 2048 MiB.
    """
    default_factor = _UNIT_MIB[unit_default.lower()]
    hint = (
        "write a whole number and a unit: MiB, GiB or TiB (M, G and T mean the same), "
        f"e.g. 2GiB or 1536MiB; a bare number means {unit_default}"
    )
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise UsageError(f'{key}: expected a size such as "2GiB", got {_describe(text)}', hint)
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{key}: a size cannot be negative, got {text}", hint)
        return text * default_factor
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{key}: {text!r} is not a size", hint)
    number, unit = int(match[1]), match[2].lower()
    if unit in _DECIMAL_UNITS:
        binary = unit[0].upper() + "iB"
        raise UsageError(
            f"{key}: {text!r} is ambiguous (decimal or binary {unit.upper()}?)",
            hint=f"pyd sizes are binary: write {number}{binary}",
        )
    if unit and unit not in _UNIT_MIB:
        raise UsageError(f"{key}: {text!r} has an unknown unit {match[2]!r}", hint)
    return number * (_UNIT_MIB[unit] if unit else default_factor)


def format_size(mib: int) -> str:
    """The shortest exact spelling that parse_size reads back: "2GiB", "1536MiB"."""
    return f"{mib // 1024}GiB" if mib % 1024 == 0 else f"{mib}MiB"


# --- one entry per key: convert the TOML value, then check the range -----------------------


def _describe(value: object) -> str:
    kind = {bool: "a boolean", str: "a string", int: "a number", float: "a number", dict: "a table"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"


def _whole_number(key: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key}: expected a whole number, got {_describe(value)}")
        return value

    return convert


def _text(key: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise UsageError(f"{key}: expected a string, got {_describe(value)}")
        return value

    return convert


def _memory(value: Any) -> int:
    return parse_size(value, "MiB", key="memory")


def _disk(value: Any) -> int:
    mib = parse_size(value, "GiB", key="disk")
    if mib % 1024:
        raise UsageError(
            f"disk: must be a whole number of GiB, got {format_size(mib)}",
            hint=f"e.g. {-(-mib // 1024)}GiB",
        )
    return mib // 1024


def _within(key: str, low: int, high: int, show: Callable[[int], str]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not low <= value <= high:
            raise UsageError(
                f"{key}: must be from {show(low)} to {show(high)}, got {show(value)}",
                hint=f"e.g. {show(max(low, min(value, high)))}",
            )

    return check


def _one_of(key: str, choices: tuple[str, ...], hint: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in choices:
            raise UsageError(f"{key}: must be one of {', '.join(choices)}; got {value!r}", hint)

    return check


def _uri(value: Any) -> None:
    if value and "://" not in value:
        raise UsageError(
            f"libvirt_uri: {value!r} is not a URI",
            hint="e.g. qemu:///session, or empty for the default connection",
        )


def _bind_policy(value: Any) -> None:
    if value not in BIND_POLICIES:
        raise UsageError(
            f"ports.bind: must be one of {', '.join(BIND_POLICIES)}; got {value!r}",
            hint='"docker" binds published ports as Docker on Linux does (-p 8080:80 listens on '
            'every interface); "localhost" keeps them on this machine\'s loopback',
        )


_HOST_ACCESS = "network.host_access"
_HOST_ACCESS_HINT = (
    "true lets containers reach services on this machine's loopback at 10.0.2.2 (as "
    "host.docker.internal does in Docker Desktop); false cuts that off at the next start"
)

_HOST_DNS = "network.host_dns"
_HOST_DNS_HINT = (
    "true answers containers' DNS through this machine's own resolver (its hosts file, a "
    "VPN's names, .local); false leaves it to QEMU's DNS, which asks the configured servers"
)
_BOOLEANS = {_HOST_ACCESS: _HOST_ACCESS_HINT, _HOST_DNS: _HOST_DNS_HINT}


def _boolean(key: str, hint: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> bool:
        if not isinstance(value, bool):
            raise UsageError(f"{key}: expected true or false, got {_describe(value)}", hint)
        return value

    return convert


def _no_check(_value: Any) -> None:
    return None


IMAGE_SOURCES = ("auto", "build", "download")
STOP_SHUTDOWN, STOP_SUSPEND = "shutdown", "suspend"
STOP_MODES = (STOP_SHUTDOWN, STOP_SUSPEND)
_STOP_HINT = (
    "shutdown powers the guest off; suspend saves its memory as `pyd suspend` does (the next "
    "`pyd start` resumes it); `pyd stop --shutdown` always powers off"
)
_IMAGE_DEFAULTS = {"image_index": (), "image_keys": (), "image_source": "auto"}
IMAGE_SETTINGS = tuple(_IMAGE_DEFAULTS)  # written to config.toml only when set
_INDEX_HINT = (
    'URLs of a release index.json, tried in order: image_index = ["https://host/pyd/index.json"]'
    " (http://, https:// or file://)"
)
_KEYS_HINT = 'PEM ed25519 public keys: image_keys = ["~/keys/releases.pem"]'
_SOURCE_HINT = (
    "auto builds the image where this host can (Linux, root, mmdebstrap) and downloads it "
    "elsewhere; build always builds; download always downloads"
)


def split_list(text: str) -> tuple[str, ...]:
    """A list given as one string (`pyd config set`, PYD_IMAGE_INDEX): separated by spaces
    or commas."""
    return tuple(p for p in re.split(r"[\s,]+", text.strip()) if p)


def _text_list(key: str, hint: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{key}: expected a list of strings, got {_describe(value)}", hint)
        return tuple(value)

    return convert


def check_index_url(url: str, key: str = "image_index") -> None:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("http", "https", "file"):
        raise UsageError(f"{key}: {url!r} is not an http://, https:// or file:// URL", _INDEX_HINT)


def _index_urls(value: Any) -> None:
    problems = []
    for url in value:
        try:
            check_index_url(url)
        except UsageError as e:
            problems.append(e)
    if problems:
        raise _joined(problems)


def _key_paths(value: Any) -> None:
    """Only the spelling here: whether each file exists and holds an ed25519 key is checked
    when a download uses it (image/trust.py), naming the file."""
    if any(not v.strip() for v in value):
        raise UsageError("image_keys: an entry is empty", _KEYS_HINT)


_FORWARDS_HINT = "manage them with `pyd port add SPEC` and `pyd port rm SPEC`"


def _parse_forwards(specs: Sequence[str]) -> list[Forward]:
    """Every spec parsed, or one error naming each that does not parse."""
    forwards: list[Forward] = []
    problems: list[UsageError] = []
    for spec in specs:
        try:
            forwards.append(parse_port_spec(spec))
        except UsageError as e:
            problems.append(e)
    if problems:
        raise _joined(problems, "ports.forwards: ")
    return forwards


def _forwards(value: Any) -> tuple[str, ...]:
    """The forwards in the spelling format_port_spec gives them, so "8080:80" and
    "127.0.0.1:8080:80" are one forward."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise UsageError(
            'ports.forwards: expected a list of forwards such as ["127.0.0.1:8080:80"], '
            f"got {_describe(value)}",
            hint=_FORWARDS_HINT,
        )
    return tuple(format_port_spec(f) for f in _parse_forwards(value))


def _distinct_forwards(value: Any) -> None:
    """No two forwards may need one host listener: the host could open only one of them."""
    forwards = _parse_forwards(value)
    for i, a in enumerate(forwards):
        for b in forwards[i + 1 :]:
            if overlaps(a, b):
                raise UsageError(
                    f"ports.forwards: {format_port_spec(a)!r} and {format_port_spec(b)!r} "
                    f"both need host port {a.host_port}",
                    hint=f"keep one of them, e.g. `pyd port rm {format_port_spec(b)}`",
                )


_FILE_EVENTS = "file_events"
_MOUNT_KEYS = ("location", "mount_point", "writable", _FILE_EVENTS)
_MOUNTS_HINT = (
    'each share is a [[mounts]] table: location = "~/src", and optionally mount_point = '
    '"/src", writable = false and file_events = false; `pyd mount add PATH` and `pyd mount '
    "rm PATH` manage them"
)


def _joined(problems: Sequence[UsageError], prefix: str = "") -> UsageError:
    """One error for a list setting, naming every entry that is wrong."""
    hints = dict.fromkeys(p.hint for p in problems if p.hint)
    return UsageError(prefix + "; ".join(p.message for p in problems), "\n".join(hints))


def _path(value: Any) -> str:
    if value is None:
        raise UsageError("missing", _MOUNTS_HINT)
    if not isinstance(value, str):
        raise UsageError(f"expected a path, got {_describe(value)}")
    return value


def _share_entry(name: str, entry: Any, host: Host) -> Share:
    """One [[mounts]] table as a share; `name` ("mounts[1]") starts each problem's message."""
    if not isinstance(entry, Mapping):
        raise UsageError(f"{name}: expected a table, got {_describe(entry)}", _MOUNTS_HINT)
    problems = [
        UsageError(f"{name}: unknown key {key!r}", _MOUNTS_HINT)
        for key in entry
        if key not in _MOUNT_KEYS
    ]

    def checked(key: str, check: Callable[[], str]) -> str:
        try:
            return check()
        except UsageError as e:
            problems.append(UsageError(f"{name}.{key}: {e.message}", e.hint))
            return ""

    location = checked("location", lambda: host_location(_path(entry.get("location")), host))
    written = entry.get("mount_point")
    point = ""
    if written is not None:
        point = checked("mount_point", lambda: check_mount_point(_path(written)))
    elif location:
        default = guest_path(location, host.platform)
        point = checked(
            "mount_point (by default location's path)", lambda: check_mount_point(default)
        )
    writable = entry.get("writable", True)
    if not isinstance(writable, bool):
        problems.append(
            UsageError(f"{name}.writable: expected true or false, got {_describe(writable)}")
        )
    events = entry.get(_FILE_EVENTS, True)
    if not isinstance(events, bool):
        problems.append(
            UsageError(
                f"{name}.{_FILE_EVENTS}: expected true or false, got {_describe(events)}",
                "true (the default) replays host changes in the guest for inotify watchers; "
                "false stops that for this share",
            )
        )
    if problems:
        raise _joined(problems)
    return Share(location, point, writable)


def _shares(host: Host) -> Callable[[Any], Any]:
    def convert(value: Any) -> tuple[Share, ...]:
        if not isinstance(value, list | tuple):
            raise UsageError(
                f"mounts: expected a list of [[mounts]] tables, got {_describe(value)}",
                _MOUNTS_HINT,
            )
        shares: list[Share] = []
        problems: list[UsageError] = []
        for i, entry in enumerate(value):
            try:
                shares.append(_share_entry(f"mounts[{i}]", entry, host))
            except UsageError as e:
                problems.append(e)
        if problems:
            raise _joined(problems)
        return tuple(shares)

    return convert


def _distinct_shares(value: Any) -> None:
    """Every mount point usable, and no two shares of one directory or at nested points."""
    problems = []
    for share in value:
        try:
            check_mount_point(share.mount_point)
        except UsageError as e:
            problems.append(e)
    problems += share_conflicts(value)
    if problems:
        raise _joined(problems, "mounts: ")


@dataclass(frozen=True)
class _Field:
    attr: str
    convert: Callable[[Any], Any]
    check: Callable[[Any], None]


_ACCEL_HINT = (
    "auto picks this host's hypervisor (kvm on Linux, hvf on macOS, whpx on Windows) and "
    "falls back to tcg, QEMU's slow software emulation"
)
_BACKEND_HINT = (
    "auto uses libvirt where its daemon answers (Linux) and QEMU directly elsewhere; libvirt "
    "runs the VM through libvirtd; qemu runs QEMU directly"
)


def _gib(gib: int) -> str:
    return f"{gib}GiB"


_FIELDS: dict[str, _Field] = {
    "cpus": _Field("cpus", _whole_number("cpus"), _within("cpus", 1, MAX_CPUS, str)),
    "memory": _Field(
        "memory_mib", _memory, _within("memory", MIN_MEMORY_MIB, MAX_MEMORY_MIB, format_size)
    ),
    "disk": _Field("disk_gib", _disk, _within("disk", 1, MAX_DISK_GIB, _gib)),
    "accel": _Field("accel", _text("accel"), _one_of("accel", ACCELS, _ACCEL_HINT)),
    "backend": _Field("backend", _text("backend"), _one_of("backend", BACKENDS, _BACKEND_HINT)),
    "libvirt_uri": _Field("libvirt_uri", _text("libvirt_uri"), _uri),
    "stop": _Field("stop", _text("stop"), _one_of("stop", STOP_MODES, _STOP_HINT)),
    "ports.bind": _Field("ports_bind", _text("ports.bind"), _bind_policy),
    "ports.forwards": _Field("port_forwards", _forwards, _distinct_forwards),
    _HOST_ACCESS: _Field("host_access", _boolean(_HOST_ACCESS, _HOST_ACCESS_HINT), _no_check),
    _HOST_DNS: _Field("host_dns", _boolean(_HOST_DNS, _HOST_DNS_HINT), _no_check),
    "image_index": _Field("image_index", _text_list("image_index", _INDEX_HINT), _index_urls),
    "image_keys": _Field("image_keys", _text_list("image_keys", _KEYS_HINT), _key_paths),
    "image_source": _Field(
        "image_source",
        _text("image_source"),
        _one_of("image_source", IMAGE_SOURCES, _SOURCE_HINT),
    ),
}
MOUNTS = "mounts"
assert (*_FIELDS, MOUNTS) == KEYS


def _fields(host: Host) -> dict[str, _Field]:
    """Every setting's field: reading the shares takes the host's home and path convention."""
    return {**_FIELDS, MOUNTS: _Field(MOUNTS, _shares(host), _distinct_shares)}


def _raise_all(problems: list[UsageError], origin: str) -> None:
    if not problems:
        return
    fix = f"fix {origin}, or use `pyd config set KEY VALUE`"
    if len(problems) == 1:
        raise UsageError(f"{origin}: {problems[0].message}", problems[0].hint or fix)
    lines = "\n".join(f"  {p.message}" for p in problems)
    hints = "\n".join(dict.fromkeys(p.hint for p in problems if p.hint))
    raise UsageError(f"{origin}: {len(problems)} invalid settings:\n{lines}", hints or fix)


def _unknown_key(key: str) -> UsageError:
    return UsageError(f"unknown setting {key!r}", hint=f"known settings: {', '.join(KEYS)}")


def _flatten(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[UsageError]]:
    """A parsed file's settings by their dotted names: {"ports": {"bind": x}} gives
    {"ports.bind": x}. A table setting spelled as one quoted key is refused, not guessed."""
    flat: dict[str, Any] = {}
    problems: list[UsageError] = []
    for key, value in data.items():
        if key in TABLES:
            if isinstance(value, Mapping):
                flat.update((f"{key}.{leaf}", inner) for leaf, inner in value.items())
            else:
                problems.append(
                    UsageError(
                        f"{key}: expected a table, got {_describe(value)}",
                        hint=f"write a [{key}] line, then its settings below it, one per line",
                    )
                )
        elif "." in key and key in _FIELDS:
            table, _, leaf = key.partition(".")
            problems.append(
                UsageError(
                    f"the key {key!r} is quoted, so it is not the setting {key}",
                    hint=f"write {key} = … without quotes, or {leaf} = … under [{table}]",
                )
            )
        else:
            flat[key] = value
    return flat, problems


def parse_config(
    data: Mapping[str, Any], origin: str, defaults: Mapping[str, Any], host: Host
) -> InstanceConfig:
    """The settings in `data` (a parsed file) over `defaults`; `origin` names the file in errors.

    `defaults` hold every setting, the shares too (`shares_to_toml(default_shares(host))`).
    """
    flat_defaults, bad_defaults = _flatten(defaults)
    if bad_defaults or set(flat_defaults) != set(KEYS):  # a packaging bug, not the user's
        raise ValueError(f"the defaults must have exactly the keys {KEYS}, got {list(defaults)}")
    flat, problems = _flatten(data)
    problems += [_unknown_key(key) for key in flat if key not in KEYS]
    merged = {**flat_defaults, **flat}
    values: dict[str, Any] = {}
    for key, field in _fields(host).items():
        try:
            values[field.attr] = field.convert(merged[key])
            field.check(values[field.attr])
        except UsageError as e:
            problems.append(e)
    _raise_all(problems, origin)
    return InstanceConfig(**values, file_events_off=_file_events_off(merged[MOUNTS], values))


def _file_events_off(entries: Any, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The locations of the shares whose table says file_events = false (the entries are
    valid here, and in the order of the shares they gave)."""
    shares: tuple[Share, ...] = values[MOUNTS]
    return tuple(
        share.location
        for entry, share in zip(entries, shares, strict=True)
        if isinstance(entry, Mapping) and entry.get(_FILE_EVENTS) is False
    )


def with_value(cfg: InstanceConfig, key: str, raw: str) -> InstanceConfig:
    """`pyd config set KEY VALUE`: `cfg` with one setting changed, checked."""
    if key == MOUNTS:
        raise UsageError(
            "mounts is not set as a whole",
            hint="share a directory with `pyd mount add PATH`, stop sharing it with `pyd mount "
            "rm PATH`; `pyd mount ls` lists the shares",
        )
    field = _FIELDS.get(key)
    if field is None:
        raise _unknown_key(key)
    if key == "ports.forwards":
        raise UsageError(
            "ports.forwards is not set as a whole",
            hint="add or remove one forward with `pyd port add SPEC` or `pyd port rm SPEC`; "
            "`pyd port ls` lists them",
        )
    text = raw.strip()
    if key == "cpus":
        if not _INTEGER.fullmatch(text):
            raise UsageError(f"cpus: expected a whole number, got {raw!r}", hint="e.g. 4")
        converted: Any = int(text)
    elif key in _BOOLEANS:
        spelled = {"true": True, "false": False}.get(text.lower())
        if spelled is None:
            raise UsageError(f"{key}: expected true or false, got {raw!r}", _BOOLEANS[key])
        converted = spelled
    elif key in ("image_index", "image_keys"):
        converted = split_list(text)
    else:
        converted = field.convert(text)
    field.check(converted)
    return dataclasses.replace(cfg, **{field.attr: converted})


def setting_matches(cfg: InstanceConfig, key: str, value: Any, host: Host) -> bool:
    """Whether a file's `value` for `key` already means cfg's setting ("4G" is 4096 MiB,
    "~" is the home directory).

    Lets a rewrite keep the user's own spelling of unchanged settings.
    """
    field = _fields(host)[key]
    try:
        return bool(field.convert(value) == getattr(cfg, field.attr))
    except UsageError:
        return False


def canonical_entry(key: str, entry: Any, host: Host) -> Any:
    """One entry of the list setting `key` as a config holds it ("8080:80" is held as
    "127.0.0.1:8080:80", a [[mounts]] table as a Share), or None when it is not valid. Lets a
    rewrite of the list keep the user's spelling, and comment, of each entry that stays."""
    try:
        (spelled,) = _fields(host)[key].convert([entry])
    except UsageError:
        return None
    return spelled


def to_toml_dict(cfg: InstanceConfig) -> dict[str, Any]:
    """The settings as a config file holds them (sizes spelled with units)."""
    return {
        "cpus": cfg.cpus,
        "memory": format_size(cfg.memory_mib),
        "disk": _gib(cfg.disk_gib),
        "accel": cfg.accel,
        "backend": cfg.backend,
        "libvirt_uri": cfg.libvirt_uri,
        # Only when set, as the image settings: older config files stay as they were.
        **({"stop": cfg.stop} if cfg.stop != STOP_SHUTDOWN else {}),
        "ports": {"bind": cfg.ports_bind, "forwards": list(cfg.port_forwards)},
        "network": {"host_access": cfg.host_access, "host_dns": cfg.host_dns},
        # Only when set: a config that repeats today's default would pin it, and the shipped
        # defaults may later name the project's own index.
        **{
            key: list(value) if isinstance(value, tuple) else value
            for key, default in _IMAGE_DEFAULTS.items()
            if (value := getattr(cfg, key)) != default
        },
        MOUNTS: shares_to_toml(cfg.mounts),
    }


def shares_to_toml(shares: Iterable[Share]) -> list[dict[str, Any]]:
    """The [[mounts]] tables for `shares`, every key written out."""
    return [
        {"location": s.location, "mount_point": s.mount_point, "writable": s.writable}
        for s in shares
    ]


# --- manual port forwards (`pyd port add|rm`) -----------------------------------------------


def _manual(cfg: InstanceConfig) -> list[Forward]:
    return [parse_port_spec(spec) for spec in cfg.port_forwards]


def with_forward_added(cfg: InstanceConfig, spec: str) -> InstanceConfig:
    """`pyd port add SPEC`: `cfg` with one more manual forward, after those it has.

    Refused when a forward already holds (or overlaps) its host address: the host could
    open only one of the two listeners.
    """
    new = parse_port_spec(spec)
    text = format_port_spec(new)
    for held in _manual(cfg):
        if held == new:
            raise UsageError(f"{text} is already forwarded", hint="see `pyd port ls`")
        if overlaps(held, new):
            reason = f"host {address_text(new.host_ip, new.host_port)} is already forwarded "
            reason += f"by {format_port_spec(held)}"
            if held.host_ip != new.host_ip:
                reason += " (a wildcard and a specific address cannot share a port)"
            raise UsageError(
                reason,
                hint=f"choose another host port, or `pyd port rm {format_port_spec(held)}` first",
            )
    return dataclasses.replace(cfg, port_forwards=(*cfg.port_forwards, text))


def with_forward_removed(cfg: InstanceConfig, spec_or_hostport: str) -> InstanceConfig:
    """`pyd port rm`: `cfg` without the manual forward named by its spec ("8080:80",
    "0.0.0.0:8080:80") or by its host side ("8080", "127.0.0.1:8080").

    Refused, with the list of manual forwards, when nothing or more than one forward matches.
    """
    matches = removal_matcher(spec_or_hostport)
    manual = _manual(cfg)
    found = [f for f in manual if matches(f)]
    listing = ", ".join(cfg.port_forwards)
    if not found:
        if not manual:
            raise UsageError(
                f"no manual forward matches {spec_or_hostport!r}: there are none",
                hint="ports that containers publish are forwarded while they run; `pyd port "
                "ls` lists them",
            )
        raise UsageError(
            f"no manual forward matches {spec_or_hostport!r}",
            hint=f"the manual forwards are: {listing} (ports that containers publish go "
            "away with the container)",
        )
    if len(found) > 1:
        raise UsageError(
            f"{spec_or_hostport!r} matches {len(found)} forwards: "
            + ", ".join(map(format_port_spec, found)),
            hint=f"give the whole forward, e.g. `pyd port rm {format_port_spec(found[-1])}`",
        )
    kept = tuple(s for s, f in zip(cfg.port_forwards, manual, strict=True) if f != found[0])
    return dataclasses.replace(cfg, port_forwards=kept)


# --- shares (`pyd mount add|rm`) -------------------------------------------------------------


def with_mount_added(cfg: InstanceConfig, share: Share) -> InstanceConfig:
    """`pyd mount add`: `cfg` with one more share, after those it has. Refused when the
    directory is shared already or the mount point is taken, inside or around another."""
    return dataclasses.replace(cfg, mounts=with_share_added(cfg.mounts, share))


def with_mount_removed(cfg: InstanceConfig, named: str, location: str | None) -> InstanceConfig:
    """`pyd mount rm`: `cfg` without the share `named` by its mount point or by its host
    directory (`location`, what `named` means on the host; None when it cannot be one)."""
    return dataclasses.replace(cfg, mounts=with_share_removed(cfg.mounts, named, location))
