"""``python -m pypacs.cli`` runs the command line."""

from pypacs.cli import main

raise SystemExit(main())
