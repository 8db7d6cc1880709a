"""`python -m ddl` runs the command-line interface."""

from ddl.cli import main

raise SystemExit(main())
