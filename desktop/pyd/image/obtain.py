"""The newest image for a new instance (`pyd start`, `pyd upgrade`): built where this host
can build it, downloaded from the configured index everywhere else (`image_source`).

Building needs Linux, root and mmdebstrap; macOS and Windows never try. Another
architecture's image is never built on the fly (that needs binfmt_misc, a step of its own:
`sudo pyd image build --arch A`), so it comes from the cache or the index.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence

from pyd.config.arches import Arch, host_arch
from pyd.config.settings import InstanceConfig
from pyd.errors import ImageError
from pyd.image.build import build_image, build_params
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.pull import IndexUnreachable, Keys, PullProgress, line_progress, pull_newest
from pyd.image.recipe import default_suite, read_recipe, recipe_dir, recipe_hash
from pyd.image.trust import index_urls, trusted_keys

BuildFn = Callable[..., tuple[CachedImage, bool]]
_NO_INDEX = (
    "no image index is configured: set image_index or PYD_IMAGE_INDEX, or build on Linux "
    "with `sudo pyd image build`"
)


def can_build(
    platform: str, which: Callable[[str], str | None], euid: int | None
) -> tuple[bool, str]:
    """Whether this host can build the guest image, and if not, why not (for messages)."""
    if platform != "linux":
        return False, f"the image is built on Linux only (this is {platform})"
    if euid != 0:
        return False, "building the image needs root (mmdebstrap installs packages into it)"
    if which("mmdebstrap") is None:
        return False, "mmdebstrap is not installed"
    return True, ""


def can_build_here() -> tuple[bool, str]:
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    return can_build(sys.platform, shutil.which, euid)


def obtain_image(
    cache: ImageCache,
    arch: Arch,
    source: str,
    index_urls: Sequence[str],
    keys: Keys | Callable[[], Keys],
    progress: PullProgress,
    *,
    insecure: bool = False,
    build: BuildFn = build_image,
) -> CachedImage:
    """The newest `arch` image per `source` ("auto", "build" or "download"). `keys` may be
    a function giving them: then a host that builds never reads them (a bad PYD_IMAGE_KEY
    stops only a download)."""
    able, why_not = can_build_here()
    if source == "build" and not able:
        raise ImageError(
            f"image_source is build, but this host cannot build the image: {why_not}",
            hint="`pyd config set image_source auto` downloads it from the image index instead",
        )
    foreign = arch.name != host_arch()
    if source != "download":
        if foreign:
            found = cache.find(arch.name)
            if found is not None and (able or not index_urls):
                return found
            if not index_urls or source == "build":
                raise ImageError(
                    f"there is no {arch.name} image in the cache ({cache.root})",
                    hint=f"build it: `sudo pyd image build --arch {arch.name}`, or set "
                    "image_index (or PYD_IMAGE_INDEX) to download one",
                )
        elif able:
            image, built = build(cache, arch, default_suite(), recipe_dir(), progress.info)
            if built:
                progress.info(f"built image {image.key}")
            return image
        elif (hit := _recipe_image(cache, arch)) is not None:
            return hit  # built here before (by root): the same recipe needs no download
    if not index_urls:
        hint = f"this host does not build it: {why_not}" if why_not else ""
        raise ImageError(_NO_INDEX, hint=hint)
    try:
        trusted = keys() if callable(keys) else keys
        return pull_newest(cache, arch.name, index_urls, trusted, progress, insecure=insecure)
    except IndexUnreachable as e:
        return cached_instead(cache, arch, e, progress.info)


def cached_instead(
    cache: ImageCache, arch: Arch, why: ImageError, info: Callable[[str], None]
) -> CachedImage:
    """The newest cached `arch` image when the newest could not be obtained, saying why;
    `why` raised when the cache has none."""
    found = cache.find(arch.name)
    if found is None:
        raise why
    info(f"{why.message}; taking the newest cached image, {found.key}")
    return found


def obtain_for_config(
    cache: ImageCache,
    arch: Arch,
    cfg: InstanceConfig,
    info: Callable[[str], None],
    *,
    insecure: bool = False,
    build: BuildFn = build_image,
) -> CachedImage:
    """obtain_image as an instance's config says (image_source, image_index, image_keys,
    with PYD_IMAGE_INDEX and PYD_IMAGE_KEY), a download's progress as lines to `info`."""
    return obtain_image(
        cache,
        arch,
        cfg.image_source,
        index_urls(cfg.image_index, os.environ),
        lambda: trusted_keys(cfg.image_keys, os.environ),  # read only for a download
        PullProgress(info, line_progress(info)),
        insecure=insecure,
        build=build,
    )


def _recipe_image(cache: ImageCache, arch: Arch) -> CachedImage | None:
    """This checkout's recipe's image, when the cache has it."""
    try:
        digest = recipe_hash(read_recipe(recipe_dir()), build_params(arch, default_suite()))
    except OSError:  # an installation without the recipe: nothing was built here
        return None
    return cache.get(image_key(arch.name, digest))
