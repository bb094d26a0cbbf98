"""The benches' container image: Debian's busybox-static in a FROM-scratch image, built with
the host's docker CLI against the bench's instance (no registry needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DOCKERFILE = (
    'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
)


def build_busybox_image(env: dict[str, str], work: Path, tag: str) -> None:
    ctx = work / "busybox-ctx"
    ctx.mkdir()
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    r = subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], env=env,
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"docker build of {tag} failed:\n{r.stderr}")
