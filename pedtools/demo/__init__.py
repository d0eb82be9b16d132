"""``make demo`` (``python -m pedtools.demo``): the Remote PED's main job, start to finish.

In a scratch directory it makes a keyring of blank PED keys and PIN files, starts an
emulated PED worked by the auto operator (a `pedtools.testing.watched_ped`, whose screens
go to a file) and pedserver using it on 127.0.0.1, pedclient, and pedhsm (with a second
watched PED cabled to it, for the orange key), then runs, as an administrator would type
them: ``hsm ped vector init``, ``hsm ped connect`` across the network, ``hsm init`` (blue
2 of 3 with a PED PIN, red), ``hsm login``, a partition with a black key and a challenge
secret, a Crypto Officer login, activation, one login with a wrong PED PIN (at a second
PED, whose operator mistypes) showing the counter, and the disconnect.  Each command is
printed quoted as it would be pasted (after the ``export`` lines it prints first), with
its output, its timing and what each PED's screen said meanwhile.  Byte taps
(`pedtools.testing.tap`) stand between the HSM and pedclient, pedclient and each
pedserver, each pedserver and its PED; once the daemons are stopped every tapped byte is
searched for every secret of the run (`pedtools.testing.secret_scan`) and the demo ends
with the count: bytes relayed, secrets searched, 0 found.  Every daemon is stopped and
the scratch directory removed at the end (``--dir DIR`` keeps it), on failure and on
Ctrl-C too.

Exit status: 0 the whole flow worked; 1 a step failed (its output is printed); 130 Ctrl-C.
"""

from pedtools.demo.console import DemoFailed
from pedtools.demo.run import main, run_demo

__all__ = ["DemoFailed", "main", "run_demo"]
