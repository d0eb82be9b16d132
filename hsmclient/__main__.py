"""``python -m hsmclient``: the same as the ``hsmclient`` console script."""

import sys

from hsmclient.cli import main

sys.exit(main())
