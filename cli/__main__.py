"""``python -m flamecast.cli`` runs the command line (used to start local worker processes)."""

import sys

from .app import main

sys.exit(main())
