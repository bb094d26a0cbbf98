"""`python -m pyd.tray`: the tray in a process that loads none of the CLI's commands
(`pyd tray` execs it), with the CLI's one error boundary for its expected failures."""

from __future__ import annotations

import os
import sys

from pyd.cli.boundary import EXPECTED, expected_failure
from pyd.tray.app import Tray


def main() -> None:
    try:
        Tray(dict(os.environ)).run()
    except EXPECTED as e:
        code = expected_failure(e, debug="--debug" in sys.argv)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":
    main()
