"""`pyd start|stop|restart|status|list|delete|ssh|env|logs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from pyd.cli.progress import TerminalProgress
from pyd.cli.render import err_console, out_console, print_columns
from pyd.config.settings import DEFAULT_INSTANCE
from pyd.dockercli.shell_env import SHELLS, detect_shell, env_script
from pyd.errors import EnvironmentProblem, PydError, UsageError
from pyd.host.atomicfile import write_atomic
from pyd.host.programs import find_ssh
from pyd.instance.registry import Instance, all_instances, existing, name_option
from pyd.instance.state import load_state
from pyd.lifecycle.run_state import RunState
from pyd.lifecycle.status import InstanceStatus, broken_status, instance_status
from pyd.ssh.openssh import known_hosts_line, ssh_argv

if TYPE_CHECKING:  # the lifecycle is imported when a command runs: a fast `pyd --help`
    from pyd.lifecycle.suspend import SuspendResult

NameOpt = Annotated[str, typer.Option("--name", "-n", help="instance name")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@contextmanager
def _progress() -> Iterator[TerminalProgress]:
    progress = TerminalProgress()
    try:
        yield progress
    finally:
        progress.close()


def start(
    name: NameOpt = DEFAULT_INSTANCE,
    cpus: Annotated[str | None, typer.Option(help="virtual CPUs (stored in the config)")] = None,
    memory: Annotated[str | None, typer.Option(help="memory, e.g. 4GiB (stored)")] = None,
    disk: Annotated[
        str | None, typer.Option(help="data disk size, e.g. 40GiB (first start only)")
    ] = None,
    accel: Annotated[str | None, typer.Option(help="auto, kvm, hvf, whpx or tcg (stored)")] = None,
    context: Annotated[
        bool, typer.Option("--context/--no-context", help="create and use docker context pyd")
    ] = True,
    arch: Annotated[
        str | None,
        typer.Option(
            help="guest architecture, x86_64 or aarch64 (first start only; default: this machine's)"
        ),
    ] = None,
    new_keys: Annotated[
        bool,
        typer.Option(
            "--new-keys",
            help="replace lost SSH keys with new ones; a running VM restarts to get them",
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="accept an unsigned or wrongly signed image index (a new instance's download)",
        ),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="a suspended instance whose settings changed: resume it, shut it down "
            "cleanly, boot it with the new settings",
        ),
    ] = False,
) -> None:
    """Start an instance (created on first start) and make the docker CLI use it."""
    overrides = {
        k: v
        for k, v in {"cpus": cpus, "memory": memory, "disk": disk, "accel": accel}.items()
        if v is not None
    }
    from pyd.lifecycle.start import start as start_instance

    try:
        with _progress() as progress:
            result = start_instance(
                name,
                overrides,
                context,
                progress,
                new_keys=new_keys,
                arch=arch,
                insecure=insecure,
                restart=restart,
            )
    except KeyboardInterrupt:
        _interrupted(name)
        raise
    except PydError as e:  # what `pyd doctor` finds wrong here goes into the hint
        from pyd.cli.doctor_cmd import add_doctor_fixes

        add_doctor_fixes(e, name)
        raise
    what = "is already running" if result.already_running else "is running"
    err_console.print(f"[bold]pyd instance {result.name!r} {what}[/]")
    if result.already_running and overrides:
        err_console.print(f"new settings are saved; they apply after `pyd restart -n {name}`")
    for var in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        if os.environ.get(var):
            err_console.print(
                f"[yellow]note:[/] {var} is set in this shell and overrides the docker context; "
                f'unset it, or use `eval "$(pyd env -n {name})"`'
            )
    if result.context:
        err_console.print(f"docker context [bold]{result.context}[/] is current; try `docker info`")
    else:
        err_console.print(f"docker endpoint: {result.docker_host} (see `pyd env`)")


def _interrupted(name: str) -> None:
    """Ctrl-C stops `pyd start`, not what it started: the VM boots on and the detached host
    agent still connects. Say so, and how to go on."""
    opt = name_option(name)
    err_console.print(
        "[yellow]interrupted:[/] pyd start stopped waiting; a VM it started keeps booting and "
        f"its host agent keeps starting in the background. `pyd status{opt}` shows when "
        f"Docker is ready, `pyd start{opt}` waits for it again, `pyd stop{opt}` stops it."
    )


def stop(
    name: NameOpt = DEFAULT_INSTANCE,
    shutdown: Annotated[
        bool,
        typer.Option("--shutdown", help='power off even where the config says stop = "suspend"'),
    ] = False,
) -> None:
    """Stop an instance: its host agent, then the guest (clean poweroff; or a suspend, where
    its config says stop = "suspend")."""
    from pyd.lifecycle.stop import stop as stop_instance
    from pyd.lifecycle.suspend import suspend_instead_of_stop, suspended

    with _progress() as progress:
        saved = None if shutdown else suspend_instead_of_stop(name, progress)
        was_running = saved is None and stop_instance(name, progress)
    if saved is not None:
        said = _suspended(saved)
    elif was_running:
        said = "stopped"
    elif suspended(existing(name).files):  # its save is kept: the guest's unwritten data
        opt = name_option(name)
        said = (
            f"is suspended (its memory is saved): `pyd start{opt}` resumes it, "
            f"then `pyd stop{opt} --shutdown` powers it off"
        )
    else:
        said = "was not running"
    err_console.print(f"pyd instance {name!r} {said}")


def suspend(name: NameOpt = DEFAULT_INSTANCE) -> None:
    """Suspend an instance: save its VM's memory to disk and stop it; `pyd start` resumes it
    with its containers running where they were."""
    from pyd.lifecycle.suspend import suspend as suspend_instance

    with _progress() as progress:
        result = suspend_instance(name, progress)
    err_console.print(f"pyd instance {name!r} {_suspended(result)}")


def _suspended(result: SuspendResult) -> str:
    what = "was already suspended" if result.already else "is suspended"
    size = f"{result.save_bytes / 2**20:.0f} MiB"
    return f"{what} ({size} saved); `pyd start{name_option(result.name)}` resumes it"


def restart(name: NameOpt = DEFAULT_INSTANCE) -> None:
    """Stop (a poweroff, whatever the stop setting), then start an instance."""
    stop(name, shutdown=True)
    start(name)


def delete(
    name: NameOpt = DEFAULT_INSTANCE,
    force: Annotated[bool, typer.Option("--force", "-f", help="do not ask")] = False,
) -> None:
    """Delete an instance: its VM, disks (Docker's images, containers and volumes too)
    and its docker context."""
    inst = existing(name)
    if not force:
        if not sys.stdin.isatty():
            raise UsageError(
                f"deleting {name!r} removes its data disk (images, containers, volumes)",
                hint=f"confirm with `pyd delete -f -n {name}`",
            )
        typer.confirm(
            f"Delete instance {name!r} with all its images, containers and volumes?", abort=True
        )
    from pyd.lifecycle.stop import delete as delete_instance

    with _progress() as progress:
        delete_instance(inst.name, progress)
    err_console.print(f"pyd instance {name!r} deleted")
    _forget_autostart(inst.name)


def _forget_autostart(name: str) -> None:
    """A deleted instance's start at login goes with it: left, it would start a new, empty
    instance of that name at the next login."""
    from pyd.autostart import manager

    try:
        host = manager.this_host()
        if manager.status(host, name).installed:
            manager.disable(host, name)
            err_console.print(f"start at login of {name!r} removed")
    except PydError as e:
        err_console.print(
            f"[yellow]warning[/]: start at login of {name!r} could not be removed: {e.message}"
            f" (hint: `pyd autostart disable -n {name}`)"
        )


def status(name: NameOpt = DEFAULT_INSTANCE, as_json: JsonOpt = False) -> None:
    """Show an instance's state (VM, host agent, Docker endpoint, settings)."""
    st = instance_status(existing(name))
    if as_json:
        out_console.print_json(json.dumps(st.to_json()))
        return
    for key, value in st.to_json().items():
        if key in ("newer_image", "backend_reason"):
            continue  # told on the image and backend lines
        if key == "backend" and st.backend_reason:
            value = f"{value}: {st.backend_reason}"
        if key == "image" and st.newer_image:
            value = f"{value} (newer: {st.newer_image} — `pyd upgrade{name_option(name)}`)"
        elif key == "phases":
            value = ", ".join(f"{k} {v:.2f} s" for k, v in value.items())
        elif key == "ports":
            value = f"{len(value)} (`pyd port ls -n {name}` lists them)"
        elif key == "mounts":
            value = "; ".join(f"{m['location']} {m['state']}" for m in value) or "-"
        elif key == "platforms":
            value = ", ".join(value) or "-"
        elif key == "warnings":
            if not value:
                continue
            value = "; ".join(value)
        out_console.print(f"{key:<12} {value}", markup=False, highlight=False)
    if st.state is not RunState.RUNNING:
        raise typer.Exit(0 if st.state in (RunState.STOPPED, RunState.SUSPENDED) else 1)


def list_(as_json: JsonOpt = False) -> None:
    """List instances."""
    statuses = [_status_or_broken(i) for i in all_instances()]
    if as_json:
        out_console.print_json(json.dumps([s.to_json() for s in statuses]))
        return
    print_columns(
        [["NAME", "STATE", "ARCH", "CPUS", "MEMORY", "DISK", "SSH", "DOCKER"], *map(_row, statuses)]
    )


def _status_or_broken(inst: Instance) -> InstanceStatus:
    """One damaged instance (corrupted config or state) must not hide the others."""
    try:
        return instance_status(inst)
    except PydError as e:
        return broken_status(inst.name, e.message)


def _row(s: InstanceStatus) -> list[str]:
    return [
        s.name,
        s.state,
        s.arch or "-",
        str(s.cpus),
        f"{s.memory_mib / 1024:g} GiB",
        f"{s.disk_gib} GiB",
        f"127.0.0.1:{s.ssh_port}" if s.ssh_port else "-",
        s.docker_host or "-",
    ]


def ssh(
    command: Annotated[list[str] | None, typer.Argument(help="command to run (after --)")] = None,
    name: NameOpt = DEFAULT_INSTANCE,
) -> None:
    """Open a shell in the guest, or run `pyd ssh -- CMD` and exit with its code."""
    inst = existing(name)
    state = load_state(inst.files.state)
    if state is None:
        raise UsageError(f"{name!r} has never started", hint="run `pyd start` first")
    client = find_ssh(sys.platform)  # where `pyd doctor` looks too
    if client is None:
        raise EnvironmentProblem(
            "no OpenSSH client (ssh) found",
            hint="install it (Debian: apt-get install openssh-client; Windows: the "
            "OpenSSH Client optional feature); `pyd doctor` says where it looked",
        )
    from pyd.instance.provision import instance_keys

    _key, host = instance_keys(inst.files)
    write_atomic(inst.files.known_hosts, known_hosts_line(state.ssh_port, host.public_openssh))
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    argv = ssh_argv(
        client, state.ssh_port, inst.files.client_key, inst.files.known_hosts, command or [], tty
    )
    raise typer.Exit(subprocess.run(argv, check=False).returncode)


def env(
    name: NameOpt = DEFAULT_INSTANCE,
    shell: Annotated[str | None, typer.Option(help=f"one of {', '.join(SHELLS)}")] = None,
) -> None:
    """Print the shell commands that point DOCKER_HOST at an instance."""
    st = instance_status(existing(name))
    if not st.docker_host:
        raise PydError(f"{name!r} is not running", hint=f"run `pyd start -n {name}` first")
    chosen = shell or detect_shell(os.environ.get("SHELL", ""), sys.platform == "win32")
    out_console.out(env_script(chosen, st.docker_host, name), end="")


def logs(
    name: NameOpt = DEFAULT_INSTANCE,
    lines: Annotated[int, typer.Option("--lines", "-l", help="lines of each log")] = 50,
) -> None:
    """Show the end of the host agent's log and of the guest console."""
    inst = existing(name)
    for title, path in (
        ("host agent", inst.files.agent_log),
        ("guest console", inst.files.serial_log),
    ):
        out_console.rule(f"{title}: {path}")
        try:
            text = path.read_text(errors="replace")
        except OSError:
            out_console.print("(no log yet)")
            continue
        out_console.out("\n".join(text.splitlines()[-lines:]), highlight=False)
