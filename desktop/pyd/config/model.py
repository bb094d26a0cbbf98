"""Instance settings as values: parsing, defaults and validation, with no file IO.

The order is Lima's: take the user's keys, merge them over the defaults, then check each
value. Every problem is collected and reported at once, so one edit of the file fixes all.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyd.errors import UsageError

DEFAULT_INSTANCE = "default"
KEYS = ("cpus", "memory", "disk", "accel", "backend", "libvirt_uri")
ACCELS = ("auto", "kvm", "hvf", "whpx", "tcg")
BACKENDS = ("libvirt", "qemu")
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
    kind = {bool: "a boolean", str: "a string", int: "a number", float: "a number"}
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


def _one_of(key: str, choices: tuple[str, ...]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in choices:
            raise UsageError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")

    return check


def _uri(value: Any) -> None:
    if value and "://" not in value:
        raise UsageError(
            f"libvirt_uri: {value!r} is not a URI",
            hint="e.g. qemu:///session, or empty for the default connection",
        )


@dataclass(frozen=True)
class _Field:
    attr: str
    convert: Callable[[Any], Any]
    check: Callable[[Any], None]


def _gib(gib: int) -> str:
    return f"{gib}GiB"


_FIELDS: dict[str, _Field] = {
    "cpus": _Field("cpus", _whole_number("cpus"), _within("cpus", 1, MAX_CPUS, str)),
    "memory": _Field(
        "memory_mib", _memory, _within("memory", MIN_MEMORY_MIB, MAX_MEMORY_MIB, format_size)
    ),
    "disk": _Field("disk_gib", _disk, _within("disk", 1, MAX_DISK_GIB, _gib)),
    "accel": _Field("accel", _text("accel"), _one_of("accel", ACCELS)),
    "backend": _Field("backend", _text("backend"), _one_of("backend", BACKENDS)),
    "libvirt_uri": _Field("libvirt_uri", _text("libvirt_uri"), _uri),
}
assert tuple(_FIELDS) == KEYS


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


def parse_config(
    data: Mapping[str, Any], origin: str, defaults: Mapping[str, Any]
) -> InstanceConfig:
    """The settings in `data` (a parsed file) over `defaults`; `origin` names the file in errors."""
    if set(defaults) != set(KEYS):  # a packaging bug, not the user's
        raise ValueError(f"the defaults must have exactly the keys {KEYS}, got {list(defaults)}")
    problems = [_unknown_key(key) for key in data if key not in _FIELDS]
    merged = {**defaults, **data}
    values: dict[str, Any] = {}
    for key, field in _FIELDS.items():
        try:
            values[field.attr] = field.convert(merged[key])
            field.check(values[field.attr])
        except UsageError as e:
            problems.append(e)
    _raise_all(problems, origin)
    return InstanceConfig(**values)


def validate(cfg: InstanceConfig, origin: str) -> InstanceConfig:
    """`cfg` unchanged if every value is in range; for configs built in code."""
    problems = []
    for field in _FIELDS.values():
        try:
            field.check(getattr(cfg, field.attr))
        except UsageError as e:
            problems.append(e)
    _raise_all(problems, origin)
    return cfg


def with_value(cfg: InstanceConfig, key: str, raw: str) -> InstanceConfig:
    """`pyd config set KEY VALUE`: `cfg` with one setting changed, checked."""
    field = _FIELDS.get(key)
    if field is None:
        raise _unknown_key(key)
    text = raw.strip()
    if key == "cpus":
        if not _INTEGER.fullmatch(text):
            raise UsageError(f"cpus: expected a whole number, got {raw!r}", hint="e.g. 4")
        converted: Any = int(text)
    else:
        converted = field.convert(text)
    field.check(converted)
    return dataclasses.replace(cfg, **{field.attr: converted})


def setting_matches(cfg: InstanceConfig, key: str, value: Any) -> bool:
    """Whether a file's `value` for `key` already means cfg's setting ("4G" is 4096 MiB).

    Lets a rewrite keep the user's own spelling of unchanged settings.
    """
    field = _FIELDS[key]
    try:
        return bool(field.convert(value) == getattr(cfg, field.attr))
    except UsageError:
        return False


def to_toml_dict(cfg: InstanceConfig) -> dict[str, Any]:
    """The settings as a config file holds them (sizes spelled with units)."""
    return {
        "cpus": cfg.cpus,
        "memory": format_size(cfg.memory_mib),
        "disk": _gib(cfg.disk_gib),
        "accel": cfg.accel,
        "backend": cfg.backend,
        "libvirt_uri": cfg.libvirt_uri,
    }
