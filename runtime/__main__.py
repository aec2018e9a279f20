"""``python -m runtime``: the ``notifier`` command without the installed script."""

import sys

from runtime.cli import main

sys.exit(main())
