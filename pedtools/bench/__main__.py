"""``python -m pedtools.bench`` (``make bench``): see `pedtools.bench`."""

import sys

from pedtools.bench.run import main

sys.exit(main())
