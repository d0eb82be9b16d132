"""The one-time password of a remote RPV initialisation: digits, tries, expiry, single use.

Theory of operation
-------------------
The HSM issues a `OneTimePassword` (`issue`): `DIGITS` random decimal digits, shown on
the HSM side and typed on the PED.  It is good for one successful PAKE run, for at most
`TRIES` runs in all, and for `LIFETIME` seconds; after any of these it is *void* and every
use raises `PasswordVoid` (a new ``hsm ped vector init --remote`` issues a new one).

A try is spent when a run reaches the point where a guess could be tested: when the HSM
receives the PED's share (`ped.pake.handshake.PakeInitiator.receive`), before it derives
anything from it.  Runs the PED refused or never answered cost nothing.  So an attacker
posing as the PED gets at most `TRIES` guesses per password: with 8 digits a chance of
3 in 10^8 per password issued (SECURITY.md).

Sans-IO: the clock is the caller's (``now`` arguments, in seconds).  The digits live in a
bytearray wiped when the password is void; nothing here prints them (`display` is the
one way out, for the HSM's own terminal).
"""

from __future__ import annotations

import secrets

from ped.errors import PedError

DIGITS = 8
TRIES = 3
LIFETIME = 600.0


class PasswordVoid(PedError):
    """The one-time password can no longer be used (used, expired or out of tries)."""


class OneTimePassword:
    """See the module docstring."""

    def __init__(
        self, digits: str, *, issued_at: float, tries: int = TRIES, lifetime: float = LIFETIME
    ) -> None:
        if not digits.isdigit() or not digits.isascii():
            raise ValueError("a one-time password is decimal digits")
        self._digits = bytearray(digits.encode("ascii"))
        self.length = len(digits)
        self.issued_at = issued_at
        self.expires_at = issued_at + lifetime
        self.tries_left = tries
        self._void_reason = ""

    @classmethod
    def issue(cls, now: float, *, digits: int = DIGITS, tries: int = TRIES,
              lifetime: float = LIFETIME) -> OneTimePassword:
        """A fresh random password of *digits* digits."""
        text = "".join(secrets.choice("0123456789") for _ in range(digits))
        return cls(text, issued_at=now, tries=tries, lifetime=lifetime)

    def __repr__(self) -> str:
        return (f"OneTimePassword(length={self.length}, tries_left={self.tries_left}, "
                f"void={bool(self._void_reason)})")

    def display(self) -> str:
        """The digits in groups of four, for the HSM's terminal only."""
        text = self._digits.decode("ascii")
        return " ".join(text[i:i + 4] for i in range(0, len(text), 4))

    def void_reason(self, now: float) -> str:
        """Why the password is void ('' while it is good)."""
        if not self._void_reason and now >= self.expires_at:
            self._void(f"expired {int(self.expires_at - self.issued_at)} s after it was issued")
        return self._void_reason

    def check(self, now: float) -> None:
        """Raise `PasswordVoid` if the password can no longer start a run."""
        reason = self.void_reason(now)
        if reason:
            raise PasswordVoid(f"the one-time password is void ({reason}); issue a new one")

    def prs(self, now: float) -> bytes:
        """The password as CPace's PRS (ASCII digits), while it is good."""
        self.check(now)
        return bytes(self._digits)

    def spend_try(self, now: float) -> None:
        """A run reached the point where a guess could be tested: one try fewer.  The
        last try voids the password for any later run (this run goes on: its generator
        was computed when it started)."""
        self.check(now)
        self.tries_left -= 1
        if self.tries_left <= 0:
            self._void("all its tries were spent")

    def succeeded(self) -> None:
        """The run confirmed the key: the password is used up."""
        self._void("used")

    def wipe(self) -> None:
        self._void("wiped")

    def _void(self, reason: str) -> None:
        if not self._void_reason:
            self._void_reason = reason
        self._digits[:] = bytes(len(self._digits))
