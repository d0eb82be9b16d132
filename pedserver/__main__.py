"""``python -m pedserver``: the same as the ``pedserver`` console script."""

import sys

from pedserver.cli import main

sys.exit(main())
