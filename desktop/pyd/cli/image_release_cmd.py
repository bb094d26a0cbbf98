"""`pyd image publish` and `pyd image pull`: the release tree, written and read."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from pyd.cli.image_cmd import app as image_app
from pyd.cli.progress import timed_lines, transfer_bars
from pyd.cli.render import err_console, human_size
from pyd.config.arches import get_arch
from pyd.config.settings import DEFAULT_INSTANCE, check_index_url
from pyd.config.store import load_config
from pyd.host.paths import images_dir
from pyd.image.cache import ImageCache
from pyd.image.index import SIGNATURE
from pyd.image.publish import publish as publish_tree
from pyd.image.pull import PullProgress, pull_newest
from pyd.image.signing import load_private_key_file
from pyd.image.trust import index_urls, trusted_keys
from pyd.instance.registry import instance


@image_app.command()
def publish(
    outdir: Annotated[Path, typer.Argument(help="directory of the release tree (made if missing)")],
    keys: Annotated[
        list[str] | None, typer.Argument(help="image keys (default: every cached image)")
    ] = None,
    sign: Annotated[
        Path | None,
        typer.Option(
            "--sign",
            metavar="KEYFILE",
            help="ed25519 PEM private key (openssl genpkey -algorithm ed25519) to sign with",
        ),
    ] = None,
) -> None:
    """Write cached images as a static release tree (index.json, manifests, packed files)
    that any web server can host; clients download from it with `pyd image pull`."""
    key = None if sign is None else load_private_key_file(sign)
    started = time.monotonic()
    progress = timed_lines()

    index = publish_tree(ImageCache(images_dir()), outdir, keys or [], key, progress)
    size = sum(e.download_size for e in index.images)
    err_console.print(
        f"published {len(index.images)} image(s), {human_size(size)} to download in all, "
        f"in {time.monotonic() - started:.1f}s"
    )
    if key is None:
        err_console.print(
            f"[bold yellow]warning:[/] the tree is UNSIGNED (no {SIGNATURE}): clients refuse "
            "it unless they pass --insecure; sign it with --sign KEYFILE",
            soft_wrap=True,
        )
    typer.echo(str(outdir.resolve()))


@image_app.command()
def pull(
    arch: Annotated[
        str | None, typer.Option("--arch", help="guest architecture (default: host's)")
    ] = None,
    index: Annotated[
        list[str] | None,
        typer.Option(
            "--index",
            metavar="URL",
            help="URL of a release index.json; repeat it for mirrors (default: PYD_IMAGE_INDEX, "
            "then image_index in the config)",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="accept an unsigned or wrongly signed index (warns)"),
    ] = False,
) -> None:
    """Download the newest image for an architecture from a signed release index, verifying
    the index's signature and every file before the image is used."""
    a = get_arch(arch)
    cfg = load_config(instance(DEFAULT_INSTANCE).files.config)
    for url in index or []:
        check_index_url(url, "--index")
    urls = list(dict.fromkeys(index)) if index else index_urls(cfg.image_index, os.environ)
    keys = trusted_keys(cfg.image_keys, os.environ)
    cache = ImageCache(images_dir())
    before = {e.key for e in cache.entries()}
    with transfer_bars() as (transfer, info):
        image = pull_newest(
            cache, a.name, urls, keys, PullProgress(info, transfer), insecure=insecure
        )
    if image.key in before:
        err_console.print(f"already newest: [bold]{image.key}[/] is in the cache")
    elif insecure:
        err_console.print(
            f"pulled image [bold]{image.key}[/]: its files match its manifest, but the index "
            "was [bold red]not verified[/] (--insecure)"
        )
    else:
        err_console.print(
            f"pulled and verified image [bold]{image.key}[/] "
            f"({human_size(image.manifest.total_size)})"
        )
    typer.echo(str(image.path))
