"""manifest.json: what an image is (versions, arch, suite, recipe hash) and the size and
sha256 of each of its files. Pure: parsing, validation and rendering only."""

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
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


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

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("extra")
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
    if not isinstance(data, dict):
        raise ImageError(f"{origin} is not a JSON object")
    try:
        files_raw = data.pop("files")
        files = {
            name: FileEntry(size=int(v["size"]), sha256=str(v["sha256"]))
            for name, v in files_raw.items()
        }
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


def manifest_problems(m: Manifest) -> list[str]:
    problems = []
    if m.format != FORMAT:
        problems.append(f"format {m.format} is not {FORMAT} (a newer pyd made it?)")
    for name in IMAGE_FILES:
        if name not in m.files:
            problems.append(f"{name} is missing")
    for name, entry in m.files.items():
        if not _SAFE_NAME.match(name) or name == MANIFEST:
            problems.append(f"file name {name!r} is not allowed")
        if not _SHA256.match(entry.sha256):
            problems.append(f"{name}: sha256 {entry.sha256!r} is not a sha256")
        if entry.size < 0:
            problems.append(f"{name}: negative size")
    return problems
