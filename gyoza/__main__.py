from gyoza.cli.main import main

main()
