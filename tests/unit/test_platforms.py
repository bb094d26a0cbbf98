"""guestdocker/platforms.py: what the guest's engine can run, from /proc/sys/fs/binfmt_misc."""

from __future__ import annotations

from pyd.guestdocker.platforms import COMMAND, parse_platforms

# As the kernel shows Debian's qemu-user entries (guest-image/overlay/usr/lib/pyd/binfmt).
AARCH64 = """entry qemu-aarch64
enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
interpreter-present
"""
# The kernel keeps the magic masked: byte 5 (byte order) is 0x01 & 0xfe here.
X86_64 = """entry qemu-x86_64
enabled
interpreter /usr/libexec/qemu-binfmt/x86_64-binfmt-P
flags: POF
offset 0
magic 7f454c4602000000000000000000000002003e00
mask fffffffffffefefcfffffffffffffffffeffffff
interpreter-present
"""
RISCV64 = """entry qemu-riscv64
enabled
interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P
flags: POCF
offset 0
magic 7f454c460201010000000000000000000200f300
mask ffffffffffffff00fffffffffffffffffeffffff
interpreter-present
"""


def test_the_native_platform_comes_first_then_the_emulated_one() -> None:
    out = "x86_64\nstatus enabled\n" + AARCH64
    assert parse_platforms(out) == ("linux/amd64", "linux/arm64")
    assert parse_platforms("aarch64\nstatus enabled\n" + X86_64) == ("linux/arm64", "linux/amd64")


def test_without_binfmt_entries_only_the_native_platform() -> None:
    assert parse_platforms("x86_64\nstatus enabled\n") == ("linux/amd64",)
    assert parse_platforms("aarch64\nstatus\n") == ("linux/arm64",)  # binfmt_misc not mounted


def test_a_disabled_entry_or_a_disabled_binfmt_misc_adds_nothing() -> None:
    disabled = AARCH64.replace("\nenabled\n", "\ndisabled\n")
    assert parse_platforms("x86_64\nstatus enabled\n" + disabled) == ("linux/amd64",)
    assert parse_platforms("x86_64\nstatus disabled\n" + AARCH64) == ("linux/amd64",)


def test_an_entry_whose_interpreter_is_gone_adds_nothing() -> None:
    gone = AARCH64.replace("interpreter-present\n", "")
    assert parse_platforms("x86_64\nstatus enabled\n" + gone) == ("linux/amd64",)


def test_other_known_machines_are_named_and_unknown_ones_skipped() -> None:
    unknown_machine = AARCH64.replace("0200b700", "0200ff00").replace("qemu-aarch64", "odd")
    not_elf = """entry python3
enabled
interpreter /usr/bin/python3
flags:
offset 0
magic 550d0d0a
interpreter-present
"""
    extension = "entry wine\nenabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n"
    out = "x86_64\nstatus enabled\n" + unknown_machine + not_elf + extension + RISCV64
    assert parse_platforms(out) == ("linux/amd64", "linux/riscv64")


def test_a_machine_pyd_does_not_name_keeps_its_uname() -> None:
    assert parse_platforms("riscv64\nstatus enabled\n") == ("linux/riscv64",)


def test_the_native_platform_emulated_too_is_listed_once() -> None:
    out = "aarch64\nstatus enabled\n" + AARCH64 + X86_64
    assert parse_platforms(out) == ("linux/arm64", "linux/amd64")


def test_empty_or_damaged_output_gives_nothing() -> None:
    assert parse_platforms("") == ()
    assert parse_platforms("\n") == ()
    damaged = AARCH64.replace("magic 7f45", "magic zz45")
    assert parse_platforms("x86_64\nstatus enabled\n" + damaged) == ("linux/amd64",)
    short = AARCH64.replace("0000000000000200b700", "")
    assert parse_platforms("x86_64\nstatus enabled\n" + short) == ("linux/amd64",)


def test_the_command_waits_for_the_guests_registration_and_reads_each_entry() -> None:
    assert "/run/pyd/binfmt.done" in COMMAND and "uname -m" in COMMAND
    assert "/proc/sys/fs/binfmt_misc/*" in COMMAND
