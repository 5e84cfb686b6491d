"""`python -m kdiff_cli` runs the command-line interface."""

from kdiff_cli.cli import main

main()
