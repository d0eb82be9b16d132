"""``python -m pedclient``: the same as the ``pedclient`` console script."""

import sys

from pedclient.cli import main

sys.exit(main())
