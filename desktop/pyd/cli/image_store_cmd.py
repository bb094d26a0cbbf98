"""`pyd image export|import|prune`: images kept offline and the cache kept lean."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from pyd.cli.image_cmd import app as image_app
from pyd.cli.progress import timed_lines, transfer_bars
from pyd.cli.render import err_console, human_size, out_console
from pyd.config.settings import DEFAULT_INSTANCE
from pyd.config.store import load_config
from pyd.host.paths import images_dir, instances_dir
from pyd.image import prune as pruning
from pyd.image.archive import export_archive, import_archive
from pyd.image.cache import ImageCache
from pyd.image.index import SIGNATURE
from pyd.image.signing import load_private_key_file
from pyd.image.trust import trusted_keys
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import instance


@image_app.command("export")
def export_(
    key: Annotated[str, typer.Argument(help="image key (`pyd image ls`)")],
    file: Annotated[Path, typer.Argument(help="the archive to write (a plain tar)")],
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            metavar="KEYFILE",
            help="ed25519 PEM private key to sign the archive's index with",
        ),
    ] = None,
) -> None:
    """Write a cached image as one archive, for `pyd image import` on a machine without
    network (checked there exactly as a download)."""
    signer = None if sign is None else load_private_key_file(sign)
    started = time.monotonic()
    progress = timed_lines()

    export_archive(ImageCache(images_dir()), key, file, signer, progress)
    err_console.print(
        f"exported [bold]{key}[/] ({human_size(file.stat().st_size)}) "
        f"in {time.monotonic() - started:.1f}s"
    )
    if signer is None:
        err_console.print(
            f"[bold yellow]warning:[/] the archive is UNSIGNED (no {SIGNATURE}): "
            "`pyd image import` refuses it unless given --insecure; sign it with --sign KEYFILE",
            soft_wrap=True,
        )
    typer.echo(str(file.resolve()))


@image_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="an archive `pyd image export` wrote")],
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="accept an unsigned or wrongly signed archive (warns)"),
    ] = False,
) -> None:
    """Add the image of an exported archive to the cache, verifying its signature and every
    file as a download is."""
    cfg = load_config(instance(DEFAULT_INSTANCE).files.config)
    keys = [k for _, k in trusted_keys(cfg.image_keys, os.environ)]
    cache = ImageCache(images_dir())
    before = {e.key for e in cache.entries()}
    with transfer_bars() as (transfer, info):
        image = import_archive(cache, file, keys, transfer, insecure=insecure, info=info)
    if image.key in before:
        err_console.print(f"image [bold]{image.key}[/] was in the cache already")
    else:
        err_console.print(
            f"imported and verified image [bold]{image.key}[/] "
            f"({human_size(image.manifest.total_size)})"
        )
    typer.echo(str(image.path))


def instance_uses(root: Path, cache_root: Path) -> list[pruning.Use]:
    """What every instance under `root` needs of the cache."""
    if not root.is_dir():
        return []
    uses = []
    for path in sorted(root.iterdir()):
        if path.is_dir():
            files = InstanceFiles(path)
            uses.append(pruning.instance_use(path, files.state, files.arch, cache_root))
    return uses


@image_app.command()
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be removed, remove nothing")
    ] = False,
) -> None:
    """Remove cached images no instance uses, and leftovers of cut builds and fetches."""
    cache = ImageCache(images_dir())
    if not cache.root.is_dir():
        out_console.print("the image cache is empty; nothing to remove")
        return
    verb = "would remove" if dry_run else "removed"
    # Under the lock: no build or fetch is using a staging directory, and none commits
    # an image between the listing and the removal.
    with cache.locked():
        recorded, stale = pruning.recorded_uses(cache.root, instances_dir())
        uses = instance_uses(instances_dir(), cache.root) + recorded
        uses += pruning.open_uses(cache.root)
        for record in stale:  # its instance is gone (deleted by hand, or its PYD_HOME)
            if not dry_run:
                pruning.forget_stale(record)
            out_console.print(f"{verb} the stale use record of {record.instance_dir} (gone)")
        decided = pruning.plan(pruning.cached_images(cache), uses)
        for image, why in decided.keep:
            out_console.print(f"kept {image.key} ({human_size(image.size)}): {why}")
        freed = decided.freed
        for image in decided.remove:
            if not dry_run:
                pruning.remove_image(cache, image.key)
            out_console.print(f"{verb} {image.key} ({human_size(image.size)})")
        for path in pruning.leftovers(cache):
            size = pruning.size_of(path)
            if not dry_run:
                pruning.remove_tree(path)
            freed += size
            out_console.print(f"{verb} leftover {path.name} ({human_size(size)})")
    for use in uses:
        if use.why:
            err_console.print(
                f"[yellow]note:[/] instance {use.instance}: {use.why}; every image it may "
                "use was kept"
            )
    total = "would free" if dry_run else "freed"
    out_console.print(f"{total} {human_size(freed)}")
