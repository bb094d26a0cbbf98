"""`pyd status` shows how full Docker's data disk is, from the guest's df (issue 13)."""

from __future__ import annotations

import json
from dataclasses import asdict

from pyd.agent.disk_usage import DiskUsage, parse_df
from pyd.agent.status_file import AgentState, AgentStatus, parse_status

DF = """Filesystem     1024-blocks    Used Available Capacity Mounted on
/dev/vdb           8154588 7748000    406588      95% /var/lib/docker
"""


def test_df_of_the_docker_directory_is_read() -> None:
    assert parse_df(DF) == DiskUsage(used_kib=7748000, size_kib=8154588)


def test_a_nearly_full_disk_says_so_and_how_to_free_it() -> None:
    text = DiskUsage(used_kib=7748000, size_kib=8154588).describe()
    assert text.startswith("7.4 GiB of 7.8 GiB used (95%)")
    assert "nearly full" in text and "docker system prune" in text
    assert "nearly" not in DiskUsage(used_kib=1024**2, size_kib=8 * 1024**2).describe()


def test_what_is_not_df_output_is_no_usage() -> None:
    for text in ("", "df: /var/lib/docker: No such file or directory\n", "a\nb c d\n"):
        assert parse_df(text) is None


def test_the_agent_status_file_carries_it_and_older_files_read_without_it() -> None:
    status = AgentStatus(AgentState.READY, 42, data_disk="1.0 GiB of 7.8 GiB used (13%)")
    assert parse_status(json.dumps(asdict(status))) == status
    older = asdict(status)
    del older["data_disk"]
    parsed = parse_status(json.dumps(older))
    assert parsed is not None and parsed.data_disk == ""
