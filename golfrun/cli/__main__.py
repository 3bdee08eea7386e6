from golfrun.cli import main

main()
