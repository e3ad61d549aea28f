from nuages.cli import main

main()
