"""manifest.json: what an image is (versions, arch, suite, recipe hash) and the size and
sha256 of each of its files. Pure: parsing, validation and rendering only.

A file may also travel packed (compressed for transfer, unpacked on arrival):

    "rootfs.qcow2": {"size": N, "sha256": "...",
                     "packed": {"encoding": "zstd", "name": "rootfs.qcow2.zst",
                                "size": M, "sha256": "..."}}

Both digests are recorded: the packed one is checked as the bytes arrive (so a cut transfer
resumes from verified bytes), the file's own one as it is unpacked into the cache."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pyd.errors import ImageError

MANIFEST = "manifest.json"
# The files every image has; the VM boots the kernel + initrd.img with rootfs.qcow2 as its
# base. x86 images also carry "vmlinux", the same kernel unpacked for QEMU's PVH entry.
IMAGE_FILES = ("vmlinuz", "initrd.img", "rootfs.qcow2")
OPTIONAL_FILES = ("vmlinux",)
FORMAT = 1
ENCODINGS = ("zstd",)
# Used with fullmatch (re.match with "$" lets a trailing newline through). ARCH and SHA256
# are also the index's: arch and recipe_hash name the image's cache directory, ARCH-HASH16.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")
ARCH = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True)
class Packed:
    """The form a file travels in: `name` next to manifest.json on the server."""

    encoding: str
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str
    packed: Packed | None = None

    @property
    def transfer_size(self) -> int:
        return self.packed.size if self.packed else self.size

    def to_dict(self) -> dict[str, Any]:
        # No "packed": null key, so a manifest without packed files renders as before.
        data: dict[str, Any] = {"size": self.size, "sha256": self.sha256}
        if self.packed:
            data["packed"] = asdict(self.packed)
        return data


@dataclass(frozen=True)
class Manifest:
    version: str
    arch: str
    suite: str
    recipe_hash: str
    versions: dict[str, str]
    files: dict[str, FileEntry]
    created: str = ""
    source: str = "built"
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def download_size(self) -> int:
        """Bytes to transfer: packed files count packed."""
        return sum(f.transfer_size for f in self.files.values())

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("extra")
        data["files"] = {name: f.to_dict() for name, f in self.files.items()}
        data.update(self.extra)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse_manifest(text: str, origin: str = MANIFEST) -> Manifest:
    """A Manifest from JSON text; an ImageError says what is wrong with it.

    File names are checked here because a fetched manifest comes from a server: a name like
    "../../.bashrc" must never become a path.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImageError(f"{origin} is not valid JSON: {e}") from None
    except RecursionError:  # "[" * 200000: json recurses once per level
        raise ImageError(f"{origin} is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ImageError(f"{origin} is not a JSON object")
    try:
        files_raw = data.pop("files")
        files = {name: _file_entry(v) for name, v in files_raw.items()}
        m = Manifest(
            version=str(data.pop("version")),
            arch=str(data.pop("arch")),
            suite=str(data.pop("suite")),
            recipe_hash=str(data.pop("recipe_hash")),
            versions={str(k): str(v) for k, v in data.pop("versions").items()},
            files=files,
            created=str(data.pop("created", "")),
            source=str(data.pop("source", "built")),
            format=int(data.pop("format", FORMAT)),
            extra=data,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"{origin} is incomplete or malformed ({e!r})") from None
    problems = manifest_problems(m)
    if problems:
        raise ImageError(f"{origin} is not a usable manifest: " + "; ".join(problems))
    return m


def _file_entry(raw: dict[str, Any]) -> FileEntry:
    packed = raw.get("packed")
    return FileEntry(
        size=_int(raw["size"]),
        sha256=str(raw["sha256"]),
        packed=None
        if packed is None
        else Packed(
            encoding=str(packed["encoding"]),
            name=str(packed["name"]),
            size=_int(packed["size"]),
            sha256=str(packed["sha256"]),
        ),
    )


def _int(value: object) -> int:
    if type(value) is not int:  # "12" or 1.5 or true: not a size
        raise ValueError(f"{value!r} is not an integer")
    return value


def manifest_problems(m: Manifest) -> list[str]:
    problems = []
    if m.format != FORMAT:
        problems.append(f"format {m.format} is not {FORMAT} (a newer pyd made it?)")
    if not ARCH.fullmatch(m.arch):
        problems.append(f"arch {m.arch!r} is not an architecture name")
    if not SHA256.fullmatch(m.recipe_hash):
        problems.append(f"recipe_hash {m.recipe_hash!r} is not a sha256")
    for name in IMAGE_FILES:
        if name not in m.files:
            problems.append(f"{name} is missing")
    for name, entry in m.files.items():
        if not SAFE_NAME.fullmatch(name) or name == MANIFEST:
            problems.append(f"file name {name!r} is not allowed")
        if not SHA256.fullmatch(entry.sha256):
            problems.append(f"{name}: sha256 {entry.sha256!r} is not a sha256")
        if entry.size < 0:
            problems.append(f"{name}: negative size")
        if entry.packed:
            problems += _packed_problems(name, entry.packed)
    # A packed name must not overwrite another file (or another packed one) on the server,
    # nor in the staging directory where it lands.
    taken = [MANIFEST, *m.files, *(e.packed.name for e in m.files.values() if e.packed)]
    for name, entry in m.files.items():
        if entry.packed and taken.count(entry.packed.name) > 1:
            problems.append(f"{name}: packed name {entry.packed.name!r} is taken")
    return problems


def _packed_problems(name: str, p: Packed) -> list[str]:
    problems = []
    if not SAFE_NAME.fullmatch(p.name):
        problems.append(f"{name}: packed name {p.name!r} is not allowed")
    if p.encoding not in ENCODINGS:
        problems.append(f"{name}: encoding {p.encoding!r} is not one of {', '.join(ENCODINGS)}")
    if not SHA256.fullmatch(p.sha256):
        problems.append(f"{name}: packed sha256 {p.sha256!r} is not a sha256")
    if p.size < 0:
        problems.append(f"{name}: negative packed size")
    return problems
