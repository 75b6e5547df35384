"""`python -m interfaces.cli`: the `courier` command."""

from interfaces.cli import main

main()
