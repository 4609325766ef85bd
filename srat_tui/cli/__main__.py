from srat_tui.cli.app import main

main()
