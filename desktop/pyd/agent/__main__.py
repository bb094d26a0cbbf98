import sys

from pyd.agent.main import main

sys.exit(main(sys.argv[1:]))
