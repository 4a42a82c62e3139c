"""`python -m meshsync` runs the command line."""

import sys

from meshsync.cli.main import main

sys.exit(main())
