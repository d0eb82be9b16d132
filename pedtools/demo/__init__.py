"""``make demo`` (``python -m pedtools.demo``): the Remote PED's main job, start to finish.

In a scratch directory it makes a keyring of blank PED keys and PIN files, starts
pedserver (an emulated PED worked by the auto operator) on 127.0.0.1, pedclient and pedhsm
(with a PED cabled to it, for the orange key), then runs, as an administrator would type
them: ``hsm ped vector init``, ``hsm ped connect`` across the network, ``hsm init`` (blue
2 of 3 with a PED PIN, red), ``hsm login``, a partition with a black key and a challenge
secret, a Crypto Officer login, activation, one login with a wrong PED PIN (at a second
PED, whose operator mistypes) showing the counter, and the disconnect.  Each command is
printed with its output and timing; a summary ends it.  Every daemon is stopped and the
scratch directory removed at the end, on failure and on Ctrl-C too.

Exit status: 0 the whole flow worked; 1 a step failed (its output is printed); 130 Ctrl-C.
"""

from pedtools.demo.console import DemoFailed
from pedtools.demo.flow import main, run_demo

__all__ = ["DemoFailed", "main", "run_demo"]
