import json
import re

import pytest

from pyd.errors import ImageError
from pyd.image.manifest import FileEntry, Manifest, parse_manifest

SHA = "a" * 64


def _manifest(**files: FileEntry) -> Manifest:
    base = {n: FileEntry(1, SHA) for n in ("vmlinuz", "initrd.img", "rootfs.qcow2")}
    return Manifest(
        version="trixie-abc",
        arch="x86_64",
        suite="trixie",
        recipe_hash="f" * 64,
        versions={"docker": "26.1.5"},
        files={**base, **files},
        created="2026-11-29T00:00:00Z",
    )


def test_manifest_round_trips_through_json() -> None:
    m = _manifest(vmlinux=FileEntry(5, "b" * 64))
    assert parse_manifest(m.to_json()) == m


def test_manifest_refuses_path_traversal_names() -> None:
    data = json.loads(_manifest().to_json())
    data["files"]["../../.bashrc"] = {"size": 1, "sha256": SHA}
    with pytest.raises(ImageError, match="not allowed"):
        parse_manifest(json.dumps(data))


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        ("name", "vmlinux\n", "file name 'vmlinux\\n' is not allowed"),
        ("sha256", SHA + "\n", "is not a sha256"),
        ("packed", "vmlinux.zst\n", "packed name 'vmlinux.zst\\n' is not allowed"),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_name_or_digest(
    where: str, value: str, message: str
) -> None:
    data = json.loads(_manifest().to_json())
    entry = {"size": 1, "sha256": value if where == "sha256" else SHA}
    if where == "packed":
        entry["packed"] = {"encoding": "zstd", "name": value, "size": 1, "sha256": SHA}
    data["files"][value if where == "name" else "vmlinux"] = entry
    with pytest.raises(ImageError, match=re.escape(message)):
        parse_manifest(json.dumps(data))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("arch", "../../../../tmp/x"),
        ("arch", "x86_64\n"),
        ("arch", ""),
        ("recipe_hash", "../" + "f" * 61),
        ("recipe_hash", "F" * 64),
    ],
)
def test_manifest_refuses_an_arch_or_recipe_hash_that_is_no_name(field: str, value: str) -> None:
    data = json.loads(_manifest().to_json())
    data[field] = value
    with pytest.raises(ImageError, match=f"{field} .* is not a"):
        parse_manifest(json.dumps(data))


def test_manifest_refuses_missing_image_file() -> None:
    data = json.loads(_manifest().to_json())
    del data["files"]["rootfs.qcow2"]
    with pytest.raises(ImageError, match=r"rootfs\.qcow2 is missing"):
        parse_manifest(json.dumps(data))


def test_manifest_refuses_bad_digest_and_garbage() -> None:
    data = json.loads(_manifest().to_json())
    data["files"]["vmlinuz"]["sha256"] = "xyz"
    with pytest.raises(ImageError, match="is not a sha256"):
        parse_manifest(json.dumps(data))
    with pytest.raises(ImageError, match="not valid JSON"):
        parse_manifest("{not json")
    with pytest.raises(ImageError, match="nested too deeply"):
        parse_manifest("[" * 200_000)  # a RecursionError, not a traceback
    with pytest.raises(ImageError, match="incomplete or malformed"):
        parse_manifest("{}")


def test_manifest_total_size_sums_files() -> None:
    assert _manifest(vmlinux=FileEntry(10, SHA)).total_size == 13
