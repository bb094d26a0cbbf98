"""`pyd autostart`: start an instance at login, in the user's own scope only: a launchd
LaunchAgent on macOS, a systemd user unit on Linux, a Task Scheduler logon task on Windows.

Each runs `pyd start -n NAME` with the interpreter pyd is installed in. No step of its own
cleans what a crash or a reboot left: `pyd start` already does (the agent's lock is the
OS's file lock, gone with its process; QEMU's and the agent's records carry their start time,
so a reused pid is never taken for them; a stale socket, stop request or status file is
removed before the agent starts; a VM a reboot ended is booted again).

job (the value: names, paths, the command) -> render (the files, from one template per OS)
-> plan (the commands per OS, pure) -> manager (the edge: files and processes).
"""
