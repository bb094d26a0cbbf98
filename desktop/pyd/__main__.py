from pyd.cli.entry import main

main()
