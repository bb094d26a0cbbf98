"""config.toml changed by several pyd commands at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pyd.config.store import load_config


def test_concurrent_edits_of_config_toml_lose_nothing(tmp_path: Path) -> None:
    """Eight processes each add a forward at once; the file ends with all eight."""
    path = tmp_path / "config.toml"
    path.write_text("# mine\ncpus = 2\n")
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pyd.config.settings import with_forward_added\n"
        "from pyd.config.store import edit_config\n"
        "def slow(cfg):\n"
        "    time.sleep(0.2)  # under test, not a wait: a slow read-change-write holds the lock\n"
        "    return with_forward_added(cfg, sys.argv[2])\n"
        "edit_config(Path(sys.argv[1]), slow)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), f"{9000 + i}:80"])
        for i in range(8)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * 8
    cfg = load_config(path)
    assert sorted(cfg.port_forwards) == [f"127.0.0.1:{9000 + i}:80" for i in range(8)]
    assert path.read_text().startswith("# mine\n")
