from iugc.cli import main

main()
