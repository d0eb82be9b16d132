"""``pedserver`` with the test FakeDriver instead of a real PED (run as a real process)."""

import sys

from pedserver.cli import main
from tests.pedserver.fakes import FakeDriver

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], driver_factory=lambda uri: FakeDriver(uri)))
