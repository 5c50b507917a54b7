import sys

from notifier.tools.cli import main

sys.exit(main())
