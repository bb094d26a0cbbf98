"""The platforms the guest's engine can run, for `pyd status`: its own architecture, and each
one that binfmt_misc hands to an emulator (guest-image/overlay/usr/lib/pyd/binfmt registers
QEMU's for the other architecture). Pure: the command the agent runs in the guest, and the
parsing of its output."""

from __future__ import annotations

from collections.abc import Iterable

BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
BINFMT_DONE = "/run/pyd/binfmt.done"  # written by the guest's binfmt script, done or failed
BINFMT_WAIT = 30  # seconds the command waits for it (an older image never writes it)

# One round trip: the machine, binfmt_misc's switch, then each entry's file after a
# "entry NAME" line and, when its interpreter is there, "interpreter-present".
COMMAND = (
    f"i=0; while [ ! -e {BINFMT_DONE} ] && [ $i -lt {BINFMT_WAIT * 2} ]; do "
    "sleep 0.5; i=$((i+1)); done; "
    "uname -m; "
    f"echo status $(cat {BINFMT_DIR}/status 2>/dev/null); "
    f"for f in {BINFMT_DIR}/*; do "
    'case "${f##*/}" in register|status|"*") continue ;; esac; '
    'echo "entry ${f##*/}"; cat "$f"; '
    "i=$(sed -n 's/^interpreter //p' \"$f\"); "
    '[ -n "$i" ] && [ -e "$i" ] && echo interpreter-present; '
    "done"
)

# `uname -m` of the guests pyd boots, as Docker names their platform.
NATIVE = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}

# (ELF class, big endian, e_machine) -> Docker's platform; ELFCLASS64 = 2, ELFCLASS32 = 1.
ELF_PLATFORMS = {
    (2, False, 0x3E): "linux/amd64",
    (2, False, 0xB7): "linux/arm64",
    (1, False, 0x03): "linux/386",
    (1, False, 0x28): "linux/arm/v7",
    (2, False, 0xF3): "linux/riscv64",
    (2, False, 0x15): "linux/ppc64le",
    (2, True, 0x16): "linux/s390x",
    (2, False, 0x08): "linux/mips64le",
    (2, False, 0x102): "linux/loong64",
}
ELFDATA2MSB = 2  # big endian, in the ELF header's byte 5

_ELF = b"\x7fELF"


def parse_platforms(text: str) -> tuple[str, ...]:
    """The platforms in COMMAND's output: the native one first, then each enabled entry's
    whose interpreter exists, whose magic is an ELF header of a known machine; in order,
    once each. () when the output does not even name the machine."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        return ()
    machine = lines[0].strip()
    found = [NATIVE.get(machine, f"linux/{machine}")]
    enabled = True
    entries: list[list[str]] = []
    for line in lines[1:]:
        if line.startswith("status "):
            enabled = line.split()[1:] == ["enabled"]
        elif line.startswith("entry "):
            entries.append([])
        elif entries:
            entries[-1].append(line)
    if enabled:
        found += (p for p in map(_entry_platform, entries) if p)
    return tuple(dict.fromkeys(found))


def _entry_platform(lines: Iterable[str]) -> str | None:
    """Pure: one binfmt_misc entry's file ("enabled", "interpreter PATH", "flags: POF",
    "offset 0", "magic HEX", "mask HEX") plus our "interpreter-present"."""
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.strip().partition(" ")
        fields[key.rstrip(":")] = value.strip()
    if "enabled" not in fields or "interpreter-present" not in fields:
        return None
    if fields.get("offset", "0") != "0":
        return None
    try:
        magic = bytes.fromhex(fields.get("magic", ""))
        mask = bytes.fromhex(fields["mask"]) if fields.get("mask") else b"\xff" * len(magic)
    except ValueError:
        return None
    if len(magic) < 20 or len(mask) < 20:
        return None
    # The kernel stores the magic already masked. The class and machine bytes must be kept
    # whole; the byte order may be masked in part (Debian's x86_64 entry keeps 0xfe of it).
    if magic[:4] != _ELF or mask[:5] != b"\xff" * 5 or mask[18:20] != b"\xff\xff":
        return None
    big = magic[5] == ELFDATA2MSB
    machine = int.from_bytes(magic[18:20], "big" if big else "little")
    return ELF_PLATFORMS.get((magic[4], big, machine))
