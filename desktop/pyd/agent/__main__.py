import sys

from pyd.agent.main import exit_now, main

exit_now(main(sys.argv[1:]))
