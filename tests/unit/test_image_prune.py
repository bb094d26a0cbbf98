"""`pyd image prune`: the decision (pure), what an instance directory says it needs, and the
command on a cache of hand-made images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyd.cli.main import app
from pyd.image.cache import ImageCache
from pyd.image.manifest import FileEntry, Manifest
from pyd.image.prune import (
    USERS_DIR,
    Cached,
    Use,
    instance_use,
    open_uses,
    plan,
    qcow2_backing,
    record_use,
    recorded_uses,
)

X1, X2, A1 = "x86_64-" + "1" * 16, "x86_64-" + "2" * 16, "aarch64-" + "3" * 16
IMAGES = [Cached(X1, "x86_64", 10), Cached(X2, "x86_64", 20), Cached(A1, "aarch64", 40)]


def _removed(uses: list[Use]) -> list[str]:
    return [c.key for c in plan(IMAGES, uses).remove]


def test_an_image_in_use_is_never_removed() -> None:
    decided = plan(IMAGES, [Use("default", frozenset({X1})), Use("arm", frozenset({A1}))])
    assert [c.key for c in decided.remove] == [X2]
    assert decided.freed == 20
    assert dict((c.key, why) for c, why in decided.keep) == {
        X1: "used by default",
        A1: "used by arm",
    }


def test_no_instance_removes_every_image() -> None:
    assert _removed([]) == [X1, X2, A1]


def test_an_unreadable_instance_protects_every_image_of_its_arch() -> None:
    unsure = Use("broken", frozenset(), unsure_arch="x86_64", why="cannot read state.json")
    assert _removed([unsure]) == [A1]
    assert _removed([Use("broken", unsure_all=True, why="?")]) == []


def _qcow2(path: Path, backing: str | None) -> None:
    """A qcow2 header as qemu-img writes it: magic, version, backing file offset + size."""
    name = backing.encode() if backing else b""
    header = b"QFI\xfb" + (3).to_bytes(4, "big")
    header += (104 if name else 0).to_bytes(8, "big") + len(name).to_bytes(4, "big")
    path.write_bytes(header.ljust(104, b"\0") + name)


def test_qcow2_backing_file_is_read_from_the_header(tmp_path: Path) -> None:
    _qcow2(tmp_path / "os.qcow2", "/c/images/x/rootfs.qcow2")
    _qcow2(tmp_path / "data.qcow2", None)
    (tmp_path / "seed.iso").write_bytes(b"\0" * 100)
    assert qcow2_backing(tmp_path / "os.qcow2") == "/c/images/x/rootfs.qcow2"
    assert qcow2_backing(tmp_path / "data.qcow2") is None
    assert qcow2_backing(tmp_path / "seed.iso") is None


def _instance(home: Path, name: str, **files: str) -> Path:
    root = home / "instances" / name
    root.mkdir(parents=True)
    for fname, text in files.items():
        (root / fname.replace("_json", ".json")).write_text(text)
    return root


def _use(root: Path, cache_root: Path) -> Use:
    return instance_use(root, root / "state.json", root / "arch", cache_root)


def test_instance_use_reads_state_other_json_and_disk_backing(tmp_path: Path) -> None:
    cache_root = tmp_path / "images"
    root = _instance(
        tmp_path,
        "dev",
        state_json=json.dumps({"ssh_port": 1, "image_key": X1, "accel": "tcg"}),
        upgrade_json=json.dumps({"previous": {"image": X2}}),  # a kept pre-upgrade disk
    )
    _qcow2(root / "os.qcow2.pre-upgrade", str(cache_root / A1 / "rootfs.qcow2"))
    _qcow2(root / "other.qcow2", "/elsewhere/" + "x86_64-" + "9" * 16 + "/rootfs.qcow2")
    use = _use(root, cache_root)
    assert use.keys == {X1, X2, A1} and not use.why
    (root / "state.json").unlink()
    (root / "upgrade.json").unlink()
    _qcow2(root / "os.qcow2", f"../../images/{X2}/rootfs.qcow2")  # relative: to its dir
    assert _use(root, cache_root).keys == {X2, A1}


def test_a_disk_made_before_state_json_protects_its_image(tmp_path: Path) -> None:
    cache_root = tmp_path / "images"
    root = _instance(tmp_path, "new", arch="x86_64\n")
    _qcow2(root / "os.qcow2", str(cache_root / X2 / "rootfs.qcow2"))
    assert _use(root, cache_root).keys == {X2}


@pytest.mark.parametrize(
    ("state", "arch", "unsure_arch", "unsure_all"),
    [
        ("{not json", "aarch64\n", "aarch64", False),
        ('{"ssh_port": 1}', "x86_64\n", "x86_64", False),  # names no image
        ('{"arch": "aarch64"}', None, "aarch64", False),
        ("{not json", None, None, True),
    ],
)
def test_an_unreadable_state_protects_the_arch_or_everything(
    tmp_path: Path, state: str, arch: str | None, unsure_arch: str | None, unsure_all: bool
) -> None:
    files = {"state_json": state} | ({"arch": arch} if arch else {})
    root = _instance(tmp_path, "broken", **files)
    use = _use(root, tmp_path / "images")
    assert (use.unsure_arch, use.unsure_all) == (unsure_arch, unsure_all)
    assert use.why


def _cached(cache: ImageCache, key: str, size: int) -> None:
    with cache.staging() as staging:
        for name in ("vmlinuz", "initrd.img", "rootfs.qcow2"):
            (staging / name).write_bytes(b"x" * size)
        files = {n: FileEntry(size, "0" * 64) for n in ("vmlinuz", "initrd.img", "rootfs.qcow2")}
        arch, recipe = key.rsplit("-", 1)
        cache.commit(staging, key, Manifest("0", arch, "unit", recipe + "0" * 48, {}, files))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageCache:
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    cache = ImageCache(tmp_path / "cache" / "images")
    _cached(cache, X1, 1024)
    _cached(cache, X2, 1024 * 1024)
    _cached(cache, A1, 10)
    _instance(
        tmp_path / "home",
        "default",
        state_json=json.dumps({"ssh_port": 1, "image_key": X1, "accel": "tcg"}),
    )
    (cache.root / ".staging-abc").mkdir()
    (cache.root / ".staging-abc" / "rootfs.qcow2").write_bytes(b"y" * 2048)
    (cache.root / ".staging-partial").mkdir()
    (cache.root / ".staging-partial" / ("f" * 64 + ".part")).write_bytes(b"z" * 100)
    return cache


def _prune(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["image", "prune", *args], env={"COLUMNS": "200"})
    return r.exit_code, r.output


def test_prune_dry_run_removes_nothing(env: ImageCache) -> None:
    before = [*(p.name for p in env.root.iterdir()), ".lock"]
    code, out = _prune("--dry-run")
    assert code == 0, out
    assert f"would remove {X2} (3.0 MiB)" in out and f"would remove {A1} (6" in out
    assert f"kept {X1} (3.6 KiB): used by default" in out  # files + manifest
    assert "would remove leftover .staging-abc (2.0 KiB)" in out
    assert "would free 3.0 MiB" in out
    assert sorted(p.name for p in env.root.iterdir()) == sorted(before)


def test_prune_removes_unused_images_and_leftovers_and_says_how_much(env: ImageCache) -> None:
    code, out = _prune()
    assert code == 0, out
    assert f"removed {X2} (3.0 MiB)" in out and f"removed {A1} (6" in out
    assert "removed leftover .staging-partial (100 B)" in out
    assert "freed 3.0 MiB" in out
    assert sorted(p.name for p in env.root.iterdir()) == [".lock", X1]
    assert [e.key for e in env.entries()] == [X1]
    code, out = _prune()
    assert code == 0 and "freed 0 B" in out


def test_prune_keeps_the_arch_of_an_instance_it_cannot_read(
    env: ImageCache, tmp_path: Path
) -> None:
    _instance(tmp_path / "home", "armq", state_json="{damaged", arch="aarch64\n")
    code, out = _prune()
    assert code == 0, out
    assert "armq may use it (cannot read state.json: not valid JSON)" in out
    assert "instance armq: cannot read state.json" in out
    assert sorted(e.key for e in env.entries()) == [A1, X1]


def test_prune_of_an_absent_cache_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "none"))
    code, out = _prune()
    assert code == 0 and "nothing to remove" in out
    assert not os.path.exists(tmp_path / "none")


def test_an_image_a_process_holds_open_is_in_use(tmp_path: Path) -> None:
    cache_root = tmp_path / "images"
    (cache_root / X1).mkdir(parents=True)
    (cache_root / X1 / "rootfs.qcow2").write_bytes(b"")
    proc = tmp_path / "proc"
    (proc / "4242" / "fd").mkdir(parents=True)
    (proc / "4242" / "comm").write_text("qemu-system-x86\n")
    (proc / "4242" / "fd" / "7").symlink_to(cache_root / X1 / "rootfs.qcow2")
    (proc / "4242" / "fd" / "8").symlink_to("/dev/null")
    (proc / "self").mkdir()
    uses = open_uses(cache_root, proc)
    assert uses == [Use("process 4242 (qemu-system-x86)", frozenset({X1}))]
    assert _removed(uses) == [X2, A1]


def test_this_process_holding_an_image_open_is_seen(tmp_path: Path) -> None:
    (tmp_path / X2).mkdir()
    with (tmp_path / X2 / "rootfs.qcow2").open("wb"):
        uses = open_uses(tmp_path)
    assert [u.keys for u in uses if u.instance.startswith(f"process {os.getpid()} ")] == [{X2}]


def _other_home(tmp_path: Path, cache_root: Path, name: str, key: str, disk: bool) -> Path:
    """An instance of another PYD_HOME sharing the cache, recorded on image `key`; its OS
    disk made on it (`disk`) or not yet (a start between choosing the image and the disk)."""
    root = _instance(tmp_path / "other-home", name)
    if disk:
        _qcow2(root / "os.qcow2", str(cache_root / key / "rootfs.qcow2"))
    record_use(cache_root, key, root / "os.qcow2", root / "state.json", root / "arch")
    return root


def test_an_instance_of_another_home_keeps_its_image(env: ImageCache, tmp_path: Path) -> None:
    other = _other_home(tmp_path, env.root, "dev", X2, disk=True)
    starting = _other_home(tmp_path, env.root, "new", A1, disk=False)
    code, out = _prune()
    assert code == 0, out
    assert f"kept {X2} (3.0 MiB): used by {other.resolve()}" in out
    assert f"kept {A1} (6" in out and f"used by {starting.resolve()}" in out
    assert sorted(e.key for e in env.entries()) == [A1, X1, X2]
    # Its OS disk now on another image (as after an upgrade): the record's image is free.
    _qcow2(starting / "os.qcow2", str(env.root / X1 / "rootfs.qcow2"))
    code, out = _prune()
    assert code == 0 and f"removed {A1}" in out and f"kept {X2}" in out, out


def test_a_stale_use_record_is_dropped_and_said(env: ImageCache, tmp_path: Path) -> None:
    gone = _other_home(tmp_path, env.root, "dev", X2, disk=True)
    shutil.rmtree(gone)  # deleted by hand, or its whole PYD_HOME
    code, out = _prune("--dry-run")
    assert code == 0 and f"would remove the stale use record of {gone.resolve()}" in out, out
    assert len(list((env.root / USERS_DIR).iterdir())) == 1
    code, out = _prune()
    assert code == 0 and f"removed the stale use record of {gone.resolve()}" in out, out
    assert f"removed {X2}" in out and not (env.root / USERS_DIR).exists()  # none left


def test_a_damaged_use_record_keeps_every_image(env: ImageCache) -> None:
    (env.root / USERS_DIR).mkdir()
    (env.root / USERS_DIR / "abc.json").write_text("{damaged")
    code, out = _prune()
    assert code == 0, out
    assert "cannot read the use record" in out and "remove it if no instance uses it" in out
    assert sorted(e.key for e in env.entries()) == [A1, X1, X2]


def test_this_homes_records_are_not_read_twice(tmp_path: Path) -> None:
    cache_root = tmp_path / "images"
    root = _instance(tmp_path / "home", "dev")
    record_use(cache_root, X1, root / "os.qcow2", root / "state.json", root / "arch")
    assert recorded_uses(cache_root, tmp_path / "home" / "instances") == ([], [])
    record_use(cache_root, X2, root / "os.qcow2", root / "state.json", root / "arch")
    uses, stale = recorded_uses(cache_root, tmp_path / "elsewhere")
    assert [u.keys for u in uses] == [{X2}] and not stale  # one record per instance
