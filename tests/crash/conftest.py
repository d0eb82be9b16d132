# The real pedhsm daemon with a local emulated PED, from the daemon's own tests.
from tests.hsm.test_daemon import shell

__all__ = ["shell"]
