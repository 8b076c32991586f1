"""`python -m marginal`: the same as the `marginal` command."""

from marginal.cli import main

main()
