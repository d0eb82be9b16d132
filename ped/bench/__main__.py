"""``python -m ped.bench`` (``make bench``): see `ped.bench`."""

import sys

from ped.bench.run import main

sys.exit(main())
