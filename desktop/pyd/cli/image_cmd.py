"""`pyd image build|ls|verify|fetch`."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from pyd.cli.progress import transfer_bars
from pyd.cli.render import err_console, human_size, out_console, print_columns
from pyd.config.arches import get_arch, host_arch
from pyd.errors import ImageError, ImageMismatchError, UsageError
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.fetch import fetch_image
from pyd.image.recipe import default_suite, recipe_dir
from pyd.image.verify import image_problems

app = typer.Typer(help="Build, list, verify and fetch guest images.", no_args_is_help=True)

ArchOpt = Annotated[str | None, typer.Option("--arch", help="guest architecture (default: host's)")]


def _cache() -> ImageCache:
    return ImageCache(images_dir())


@app.command()
def build(
    arch: ArchOpt = None,
    suite: Annotated[str | None, typer.Option(help="Debian suite")] = None,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror URL")] = None,
) -> None:
    """Build the guest image from Debian's archive (reused while the recipe is unchanged)."""
    a = get_arch(arch)
    started = time.monotonic()

    def progress(line: str) -> None:
        elapsed = time.monotonic() - started
        err_console.print(f"[dim]{elapsed:6.1f}s[/] {line.removeprefix('==> ')}")

    image, built = build_image(
        _cache(), a, suite or default_suite(), recipe_dir(), progress, mirror=mirror
    )
    verb = "built" if built else "cached"
    err_console.print(
        f"{verb} image [bold]{image.key}[/] ({human_size(image.manifest.total_size)}) "
        f"in {time.monotonic() - started:.1f}s"
    )
    typer.echo(str(image.path))


@app.command("ls")
def list_images(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List cached images."""
    entries = _cache().entries()
    if as_json:
        out_console.print_json(json.dumps([_image_json(e) for e in entries]))
        return
    rows = [["KEY", "ARCH", "VERSION", "DOCKER", "KERNEL", "SIZE", "CREATED", "SOURCE"]]
    for e in entries:
        m = e.manifest
        rows.append(
            [
                e.key,
                m.arch,
                m.version,
                m.versions.get("docker", "?"),
                m.versions.get("kernel", "?"),
                human_size(m.total_size),
                m.created,
                m.source,
            ]
        )
    print_columns(rows)


def _image_json(e: CachedImage) -> dict[str, object]:
    m = e.manifest
    return {
        "key": e.key,
        "path": str(e.path),
        "arch": m.arch,
        "version": m.version,
        "suite": m.suite,
        "versions": m.versions,
        "size": m.total_size,
        "created": m.created,
        "source": m.source,
    }


@app.command()
def verify(
    key: Annotated[str | None, typer.Argument(help="image key (default: all)")] = None,
) -> None:
    """Check every file of cached images against its manifest's sha256."""
    cache = _cache()
    if key:
        found = cache.get(key)
        if not found:
            raise ImageError(f"no cached image {key!r}", hint="see `pyd image ls`")
        entries = [found]
    else:
        entries = cache.entries()
        if not entries:
            raise ImageError("no cached images", hint="run `pyd image build` or `pyd image fetch`")
    bad = 0
    for e in entries:
        problems = image_problems(e.path, e.manifest)
        if problems:
            bad += 1
            err_console.print(f"[red]FAIL[/] {e.key}: " + "; ".join(problems))
        else:
            out_console.print(f"ok   {e.key}")
    if bad:
        raise ImageMismatchError(
            f"{bad} image(s) do not match their manifest",
            hint="remove them from the cache and build or fetch again",
        )


@app.command("boot-check")
def boot_check(
    key: Annotated[
        str | None, typer.Argument(help="image key (default: newest for the arch)")
    ] = None,
    accel: Annotated[str | None, typer.Option(help="kvm, hvf, whpx or tcg")] = None,
    arch: ArchOpt = None,
) -> None:
    """Boot a cached image once in a throwaway VM and ask its Docker engine for its version."""
    image = boot_check_image(_cache(), key, arch)
    # paramiko is slow to import; only this command needs it.
    from pyd.vm.throwaway import booted, check, elapsed, prepare, wait_for_docker

    with tempfile.TemporaryDirectory(prefix="pyd-boot-check-") as tmp:
        files = prepare(Path(tmp) / "vm", image, hostname="pyd-boot-check")
        with (
            err_console.status("booting (software emulation takes ~20 s)…"),
            booted(files, image, accel) as (vm, ssh),
        ):
            t_ssh = elapsed(vm)
            server = wait_for_docker(ssh)
            t_docker = elapsed(vm)
            version = check(ssh, "docker version")
    err_console.print(f"SSH after {t_ssh:.1f}s, Docker {server} answered after {t_docker:.1f}s")
    out_console.print(version.rstrip())


def boot_check_image(cache: ImageCache, key: str | None, arch: str | None) -> CachedImage:
    """The image `pyd image boot-check` boots: `key`, else the newest of `arch` (default: the
    host's). An unknown arch, or a key of another arch than the one named, is a UsageError."""
    a = get_arch(arch)
    build = f"`pyd image build{'' if a.name == host_arch() else f' --arch {a.name}'}`"
    if key is None:
        found = cache.find(a.name)
        if found is None:
            raise ImageError(
                f"there is no {a.name} image in the cache ({cache.root})",
                hint=f"build one: {build}, or `pyd image fetch URL` one",
            )
        return found
    image = cache.get(key)
    if image is None:
        raise ImageError(f"no cached image {key!r}", hint=f"`pyd image ls` lists them; {build}")
    if arch is not None and image.manifest.arch != a.name:
        raise UsageError(
            f"image {key} is an {image.manifest.arch} image, not {a.name}",
            hint=f"leave out --arch, or name an {a.name} image (`pyd image ls`)",
        )
    return image


@app.command()
def fetch(
    url: Annotated[str, typer.Argument(help="URL of manifest.json or its directory")],
) -> None:
    """Download a prebuilt image, verifying every file before it is used."""
    with transfer_bars() as (transfer, _):
        image = fetch_image(_cache(), url, transfer)
    err_console.print(f"fetched and verified image [bold]{image.key}[/]")
    typer.echo(str(image.path))


# More `pyd image` commands live in modules of their own (publish, pull, export/import,
# prune); each registers on `app` when cli/main.py imports it.
