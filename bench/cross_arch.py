"""A container of the other architecture against a native one, on the x86_64 guest under this
machine's accelerator (2 vCPU, 2 GiB): `docker run --rm --platform linux/arm64 IMG true`
(QEMU's user-mode emulator through binfmt_misc) against `docker run --rm IMG true` of the
same-shaped amd64 image (Debian's busybox-static, FROM scratch). Prints medians and the ratio.

    python bench/cross_arch.py [--runs 5]

The arm64 busybox is Debian's busybox-static:arm64 (`apt-get download`, after `dpkg
--add-architecture arm64`), kept in ~/.cache/pyd/test as the e2e tests keep it. Timed from the
host around one SSH command each, interleaved; one unmeasured run of each first.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import paramiko

from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.recipe import default_suite, recipe_dir
from pyd.vm.throwaway import booted, check, prepare, wait_for_docker

NATIVE, FOREIGN = "bench/busybox-amd64", "bench/busybox-arm64"
CACHED_ARM64 = Path.home() / ".cache" / "pyd" / "test" / "busybox-arm64"
DOCKERFILE = (
    'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
)


def arm64_busybox() -> Path:
    if CACHED_ARM64.exists():
        return CACHED_ARM64
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o777)  # apt downloads as _apt
        r = subprocess.run(["apt-get", "download", "-q", "busybox-static:arm64"], cwd=work,
                           capture_output=True, text=True, check=False)  # fmt: skip
        debs = list(work.glob("busybox-static_*_arm64.deb"))
        if r.returncode != 0 or len(debs) != 1:
            raise SystemExit(
                f"apt-get download busybox-static:arm64 failed: {r.stderr.strip()}\n"
                "hint: dpkg --add-architecture arm64 && apt-get update "
                "(packaging/linux/install-deps does both)"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], check=True)
        CACHED_ARM64.parent.mkdir(parents=True, exist_ok=True)
        (work / "root" / "bin" / "busybox").replace(CACHED_ARM64)
    return CACHED_ARM64


def build(client: paramiko.SSHClient, busybox: Path, tag: str, platform: str) -> None:
    ctx = f"/tmp/{tag.replace('/', '-')}"
    check(client, f"mkdir -p {ctx}")
    with client.open_sftp() as sftp:
        sftp.put(str(busybox), f"{ctx}/busybox")
        sftp.chmod(f"{ctx}/busybox", 0o755)
        with sftp.open(f"{ctx}/Dockerfile", "w") as f:
            f.write(DOCKERFILE)
    check(client, f"DOCKER_BUILDKIT=0 docker build -q --platform {platform} -t {tag} {ctx}")


def timed(client: paramiko.SSHClient, command: str) -> float:
    start = time.monotonic()
    check(client, command)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    arch = get_arch("x86_64")
    image, _ = build_image(
        ImageCache(images_dir()), arch, default_suite(), recipe_dir(), progress=print
    )
    foreign_busybox = arm64_busybox()
    native_cmd = f"docker run --rm --platform linux/amd64 {NATIVE} true"
    foreign_cmd = f"docker run --rm --platform linux/arm64 {FOREIGN} true"
    native: list[float] = []
    foreign: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as tmp:
        files = prepare(Path(tmp) / "vm", image)
        with booted(files, image) as (_vm, client):
            wait_for_docker(client)
            build(client, Path("/bin/busybox"), NATIVE, "linux/amd64")
            build(client, foreign_busybox, FOREIGN, "linux/arm64")
            timed(client, native_cmd)
            timed(client, foreign_cmd)
            for _ in range(args.runs):
                native.append(timed(client, native_cmd))
                foreign.append(timed(client, foreign_cmd))
    n, f = statistics.median(native), statistics.median(foreign)
    print(f"\n`docker run --rm IMG true` on the x86_64 guest ({args.runs} runs), seconds")
    print(f"  linux/amd64 (native)    {n:6.2f}  [{min(native):.2f}-{max(native):.2f}]")
    print(f"  linux/arm64 (emulated)  {f:6.2f}  [{min(foreign):.2f}-{max(foreign):.2f}]")
    print(f"  ratio emulated/native   {f / n:6.2f}")


if __name__ == "__main__":
    main()
