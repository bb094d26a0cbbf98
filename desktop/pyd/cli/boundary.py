"""The error boundary every `pyd` command shares: an expected failure becomes a message, a
hint and an exit code, never a traceback (`pyd --debug ...` shows the traceback instead).

Light on purpose: pyd.cli.entry runs `pyd docker` through it without importing typer; the
printing (rich) is only imported when there is something to print.
"""

from __future__ import annotations

from pyd.errors import PydError

EXPECTED = (KeyboardInterrupt, PydError, OSError)


def expected_failure(e: BaseException, debug: bool) -> int | None:
    """Prints `e` when it is an expected failure (one of EXPECTED) and returns the exit code
    for it; None when the caller should re-raise it: anything else, and with `debug` any
    failure but Ctrl-C."""
    if isinstance(e, KeyboardInterrupt):
        return 130
    if debug or not isinstance(e, EXPECTED):
        return None
    from pyd.cli.render import print_error

    if isinstance(e, PydError):
        print_error(e)
        return e.exit_code
    assert isinstance(e, OSError)
    # A file pyd needs is not where or how it should be (permissions, full disk…).
    where = f" ({e.filename})" if e.filename else ""
    print_error(
        PydError(
            f"{e.strerror or e}{where}",
            hint="check that the file or directory exists, is yours and the disk has room; "
            "`pyd --debug …` shows where it happened",
        )
    )
    return 1
