"""The benches' container image: Debian's busybox-static in a FROM-scratch image, built with
the host's docker CLI against the bench's instance (no registry needed); and the environment
the benches run pyd and docker in."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

DOCKERFILE = (
    'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
)


def bench_env(work: Path) -> dict[str, str]:
    """This environment without the user's DOCKER_* settings, with pyd's and docker's own
    directories in `work` (the classic builder: a FROM-scratch build needs no BuildKit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {
        "PYD_HOME": str(work / "home"),
        "DOCKER_CONFIG": str(work / "docker"),
        "DOCKER_BUILDKIT": "0",
    }
    return env


def build_busybox_image(
    env: dict[str, str],
    work: Path,
    tag: str,
    files: Mapping[str, Path] | None = None,
    lines: tuple[str, ...] = (),
) -> None:
    """`files`: more files copied in (name in /bin: host path); `lines`: more Dockerfile lines."""
    ctx = work / "busybox-ctx"
    ctx.mkdir()
    shutil.copy("/bin/busybox", ctx / "busybox")
    extra = [*(f"COPY {name} /bin/{name}" for name in files or {}), *lines]
    for name, path in (files or {}).items():
        shutil.copy(path, ctx / name)
    (ctx / "Dockerfile").write_text(DOCKERFILE + "".join(f"{line}\n" for line in extra))
    r = subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], env=env,
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"docker build of {tag} failed:\n{r.stderr}")
