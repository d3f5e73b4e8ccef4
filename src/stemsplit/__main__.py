"""``python -m stemsplit`` runs the command-line tool."""

from stemsplit.cli import main

main()
