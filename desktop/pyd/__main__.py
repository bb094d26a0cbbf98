from pyd.cli.main import main

main()
