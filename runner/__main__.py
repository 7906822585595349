"""`python -m runner` is `nn-run`."""

from runner.app import main

main()
