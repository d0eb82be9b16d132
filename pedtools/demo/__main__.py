"""``python -m pedtools.demo``: the same as ``make demo``."""

import sys

from pedtools.demo.run import main

sys.exit(main())
