"""``python -m notifier``: the command line (notifier/tools/cli.py)."""

import sys

from notifier.tools.cli import main

sys.exit(main())
