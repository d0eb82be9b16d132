"""``python -m ped.device.emulated``: the same as ``pedemu`` (the emulated: driver uses it)."""

import sys

from ped.device.emulated.cli import main

sys.exit(main())
