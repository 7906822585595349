"""`python -m runner` is `nn-run`."""

from runner.cli.run import main

main()
