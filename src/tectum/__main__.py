"""``python -m tectum`` runs the CLI."""

from tectum.cli.main import main

main()
