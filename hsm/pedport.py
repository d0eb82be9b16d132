"""The HSM's port to a PED: the three things the HSM asks of one.

The engine talks to this small interface only, so that its rules (what counts as a failed
login, what is imprinted when) do not depend on how a PED is reached.  `hsm.pedlink`
implements it over ``ped.hsm_api`` for a local or a remote PED; tests may use a fake.

Errors a port raises, and what the engine makes of them:

* `WrongKeyColor`: the PED refused a key of another colour.  Not counted.
* `WrongKeyset`: a key of the right colour from another keyset.  Counted.
* `PedUnavailable` (from hsm.errors): no PED, link down, busy, timed out, cancelled.
  Not counted (a network failure never costs a login attempt).
"""

from __future__ import annotations

from typing import Protocol

import attrs

from hsm.crypto import wipe
from hsm.errors import HsmError, LoginRefused
from keys.colors import Color


class WrongKeyColor(LoginRefused):
    code = "wrong-colour"


class WrongKeyset(HsmError):
    code = "keyset-mismatch"


@attrs.define(repr=False)
class PedSecret:
    """A secret the PED handed over, and the id of the keyset it came from."""

    secret: bytearray
    keyset_id: bytes
    #: An imprint reused an existing keyset: no key was written.
    reused: bool = False

    def __repr__(self) -> str:
        return f"PedSecret(keyset_id={self.keyset_id.hex()}, secret=<hidden>)"

    def wipe(self) -> None:
        wipe(self.secret)


class PedPort(Protocol):
    description: str

    async def read_secret(self, color: Color, keyset_id: bytes | None, label: str) -> PedSecret:
        """Read a key of *color* (from keyset *keyset_id* if given)."""

    async def imprint(self, color: Color, label: str, secret: bytes | bytearray) -> PedSecret:
        """Imprint *secret* on key(s) of *color*; the operator may reuse an existing keyset,
        in which case the returned secret is that keyset's, not *secret*."""

    async def show(self, text: str) -> None:
        """Show a message on the PED screen."""
