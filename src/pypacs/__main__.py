"""``python -m pypacs`` runs the command line."""

from pypacs.cli import main

raise SystemExit(main())
