"""Windows access control for what must be the current user's alone: the instance directory
(its SSH key, QMP client key, logs), where POSIX modes mean nothing, and the named pipes the
relay serves. One rule for both: a protected DACL (no entries inherited from the parent, so
the profile's or the drive's ACL does not leak in) with one entry, for the user's SID.

The SDDL is a pure function of the SID, tested on every OS; the Windows API (advapi32: the
token's SID, SDDL to a security descriptor, SetFileSecurityW) is loaded on first use inside
`win32` blocks that mypy checks with --platform win32 and skips elsewhere.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path


class Securable(Enum):
    """What a DACL is for: each gets its own access-control entry."""

    PIPE = "pipe"  # a named pipe: generic all, as dockerd's pipe is made
    DIRECTORY = "directory"  # full access, inherited by what is later made inside (OI, CI)
    FILE = "file"  # full access


# (flags, rights) of the one entry: OI/CI make files and subdirectories created inside the
# directory later inherit it; GA (generic all) maps to a pipe's full access.
_ACE = {
    Securable.PIPE: ("", "GA"),
    Securable.DIRECTORY: ("OICI", "FA"),
    Securable.FILE: ("", "FA"),
}
# S-R-I-S...: revision 1, an authority, then sub-authorities (ConvertSidToStringSidW's form).
_SID = re.compile(r"S-1-\d+(-\d+)+")


def owner_only_sddl(sid: str, what: Securable) -> str:
    """Pure: the SDDL of a protected DACL (D:P) that allows `sid` alone (A = allow).
    ValueError for anything but a SID string, which would otherwise add entries."""
    if not _SID.fullmatch(sid):
        raise ValueError(f"not a SID: {sid!r}")
    flags, rights = _ACE[what]
    return f"D:P(A;{flags};{rights};;;{sid})"


def protect(path: Path, what: Securable) -> None:
    """`path` (a directory or a file) becomes the current user's alone: its DACL replaced by
    the owner-only one, protected from inheritance. Windows only: elsewhere modes do it."""
    if sys.platform != "win32":
        raise OSError(f"{path}: DACLs exist only on Windows; use POSIX modes here")
    else:
        descriptor = SecurityDescriptor(owner_only_sddl(user_sid(), what))
        try:
            if not _api().SetFileSecurityW(
                str(path),
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                descriptor.pointer,
            ):
                raise win_error(f"SetFileSecurityW {path}")
        finally:
            descriptor.free()


if sys.platform == "win32":
    import ctypes
    import functools
    from ctypes import wintypes
    from typing import Any

    TOKEN_QUERY = 0x0008
    TOKEN_USER_CLASS = 1  # TOKEN_INFORMATION_CLASS TokenUser
    SDDL_REVISION_1 = 1
    DACL_SECURITY_INFORMATION = 0x00000004
    PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000

    class SECURITY_ATTRIBUTES(ctypes.Structure):
        _fields_ = [
            ("nLength", wintypes.DWORD),
            ("lpSecurityDescriptor", wintypes.LPVOID),
            ("bInheritHandle", wintypes.BOOL),
        ]

    class SID_AND_ATTRIBUTES(ctypes.Structure):
        _fields_ = [("Sid", wintypes.LPVOID), ("Attributes", wintypes.DWORD)]

    def win_function(lib: ctypes.WinDLL, name: str, res: object, *args: object) -> Any:
        """`lib`'s function `name` with its C signature (64-bit handles kept intact)."""
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = list(args)
        return f

    class _Api:
        def __init__(self) -> None:
            k32 = ctypes.WinDLL("kernel32", use_last_error=True)
            adv = ctypes.WinDLL("advapi32", use_last_error=True)
            H, B, D = wintypes.HANDLE, wintypes.BOOL, wintypes.DWORD
            P, fn = ctypes.POINTER, win_function
            self.LocalFree = fn(k32, "LocalFree", wintypes.HLOCAL, wintypes.HLOCAL)
            self.CloseHandle = fn(k32, "CloseHandle", B, H)
            self.GetCurrentProcess = fn(k32, "GetCurrentProcess", H)
            self.OpenProcessToken = fn(adv, "OpenProcessToken", B, H, D, P(H))
            self.GetTokenInformation = fn(
                adv, "GetTokenInformation", B, H, ctypes.c_int, wintypes.LPVOID, D, P(D)
            )
            self.ConvertSidToStringSidW = fn(
                adv, "ConvertSidToStringSidW", B, wintypes.LPVOID, P(wintypes.LPWSTR)
            )
            self.ConvertStringSecurityDescriptorToSecurityDescriptorW = fn(
                adv,
                "ConvertStringSecurityDescriptorToSecurityDescriptorW",
                B,
                wintypes.LPCWSTR,
                D,
                P(wintypes.LPVOID),
                P(D),
            )
            self.SetFileSecurityW = fn(
                adv, "SetFileSecurityW", B, wintypes.LPCWSTR, D, wintypes.LPVOID
            )

    @functools.cache
    def _api() -> _Api:
        return _Api()

    def win_error(what: str) -> OSError:
        """The calling thread's last Windows error as an OSError that says what failed."""
        code = ctypes.get_last_error()
        return ctypes.WinError(code, f"{what}: {ctypes.FormatError(code)}")

    @functools.cache
    def user_sid() -> str:
        """The SID of the user this process runs as (its token's), as a string."""
        api = _api()
        token = wintypes.HANDLE()
        if not api.OpenProcessToken(api.GetCurrentProcess(), TOKEN_QUERY, ctypes.byref(token)):
            raise win_error("OpenProcessToken")
        try:
            size = wintypes.DWORD()
            api.GetTokenInformation(token, TOKEN_USER_CLASS, None, 0, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            if not api.GetTokenInformation(token, TOKEN_USER_CLASS, buf, size, ctypes.byref(size)):
                raise win_error("GetTokenInformation")
            user = SID_AND_ATTRIBUTES.from_buffer(buf)
            text = wintypes.LPWSTR()
            if not api.ConvertSidToStringSidW(user.Sid, ctypes.byref(text)):
                raise win_error("ConvertSidToStringSidW")
            try:
                return str(text.value)
            finally:
                api.LocalFree(ctypes.cast(text, wintypes.HLOCAL))
        finally:
            api.CloseHandle(token)

    class SecurityDescriptor:
        """A self-relative security descriptor made from SDDL; free() returns its memory."""

        def __init__(self, sddl: str) -> None:
            self.pointer = wintypes.LPVOID()
            if not _api().ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, SDDL_REVISION_1, ctypes.byref(self.pointer), None
            ):
                raise win_error("ConvertStringSecurityDescriptorToSecurityDescriptorW")

        def free(self) -> None:
            if self.pointer:
                _api().LocalFree(ctypes.cast(self.pointer, wintypes.HLOCAL))
                self.pointer = wintypes.LPVOID()

    class OwnerOnlyAttributes:
        """SECURITY_ATTRIBUTES whose DACL lets only the current user in (a pipe's)."""

        def __init__(self, what: Securable = Securable.PIPE) -> None:
            self._descriptor = SecurityDescriptor(owner_only_sddl(user_sid(), what))
            self.attrs = SECURITY_ATTRIBUTES(
                ctypes.sizeof(SECURITY_ATTRIBUTES), self._descriptor.pointer, False
            )

        def free(self) -> None:
            self._descriptor.free()
