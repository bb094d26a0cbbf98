"""`pyd image export|import|prune`: images kept offline and the cache kept lean."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pyd.cli.image_cmd import app as image_app
from pyd.cli.render import err_console, human_size, out_console
from pyd.host.paths import images_dir, instances_dir
from pyd.image import prune as pruning
from pyd.image.cache import ImageCache
from pyd.instance.files import InstanceFiles


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
        uses = instance_uses(instances_dir(), cache.root)
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
