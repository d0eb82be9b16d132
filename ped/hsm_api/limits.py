"""The timing parameters of a PED session: their defaults, units and checks.

Every value is in seconds (a float).  docs/integrating.md explains each one; in short:

* *key_timeout*: how long the PED waits for a key, a PIN or an answer from its operator,
  per operation (and for the orange key during the handshake).  The PED enforces it
  and answers `KeyTimeout`.  Carried in whole milliseconds: rounded, at least 1 ms, at
  most `MAX_KEY_TIMEOUT` (one day; a longer value is cut to it).
* *op_timeout*: how long this side waits for one whole operation (or the handshake)
  once the PED is held; then the operation is cancelled and `OperationTimeout` raised.
* *busy_wait*: how long taking the PED may wait while it serves another operation
  before `PedBusy`; 0 means do not wait.
* *cancel_grace*: how long a cancelled operation may take to end on the PED, and the
  bound on every single send, release and goodbye; past it the session is broken.
"""

from __future__ import annotations

import math

from ped.errors import LocalProtocolError
from ped.ops.messages import MAX_KEY_TIMEOUT_MS

DEFAULT_KEY_TIMEOUT = 200.0
DEFAULT_OP_TIMEOUT = 920.0
DEFAULT_BUSY_WAIT = 0.0
DEFAULT_CANCEL_GRACE = 10.0
#: The longest key timeout the protocol carries (one day).
MAX_KEY_TIMEOUT = MAX_KEY_TIMEOUT_MS / 1000


def key_timeout_ms(seconds: float) -> int:
    """*seconds* as the protocol's key timeout: whole milliseconds, 1 ms to one day."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise LocalProtocolError(f"key timeout must be a positive number of seconds: {seconds}")
    return max(1, min(round(seconds * 1000), MAX_KEY_TIMEOUT_MS))


def check_seconds(name: str, value: float, *, zero_ok: bool = False) -> None:
    """Refuse a duration that is not a finite number of seconds > 0 (>= 0 if *zero_ok*)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise LocalProtocolError(f"{name} must be a finite number of seconds {bound}: {value!r}")
