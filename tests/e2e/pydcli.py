"""Running the real `pyd` command against a temporary PYD_HOME and DOCKER_CONFIG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PydEnv:
    home: Path
    docker_config: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYD_HOME=str(self.home), DOCKER_CONFIG=str(self.docker_config), **extra)
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_CONTEXT", None)
        return env

    def pyd(
        self, *args: str, timeout: float = 600, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "pyd", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(**extra),
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"pyd {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
        return r

    def docker(
        self, *args: str, input: str | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=self.env(DOCKER_BUILDKIT="0"),
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
        return r

    def status(self, name: str = "default") -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.pyd("status", "--json", "-n", name).stdout)
        return data
