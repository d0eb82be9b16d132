"""Errors of the emulated HSM.

Every error carries a short machine-readable `code` (sent over the control socket and used
for the shell's exit status) and a message that says what was wrong and what to do.  No
message ever contains a secret, a PIN or the RPV.

Translated where: errors of ``ped`` (a PED, its path, its channel) become these in one
place, ``hsm.apiport`` (`map_error`, used by ``hsm.pedlink``); these become control
answers in ``hsm.server`` (``code``) and exit statuses in ``hsm.cli``.
"""

from __future__ import annotations

from ped.errors import PedError


class HsmError(PedError):
    """Base of every error the emulated HSM reports."""

    code = "error"
    exit_status = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCommand(HsmError):
    """The command or one of its arguments is not valid."""

    code = "bad-request"
    exit_status = 2


class NotInitialised(HsmError):
    """The HSM, partition or role has not been initialised yet."""

    code = "not-initialised"


class NotFound(HsmError):
    code = "not-found"


class AlreadyExists(HsmError):
    code = "already-exists"


class NotLoggedIn(HsmError):
    """The command needs a role that is not logged in."""

    code = "not-logged-in"


class ConfirmationRequired(HsmError):
    """A destructive command was not confirmed (`--force` or an interactive yes)."""

    code = "confirmation-required"


class LoginFailed(HsmError):
    """A counted failed login (wrong key of the right colour, wrong PIN, wrong challenge)."""

    code = "login-failed"


class LoginRefused(HsmError):
    """The login did not happen and was not counted (wrong colour, PED gone, cancelled)."""

    code = "login-refused"


class LockedOut(HsmError):
    code = "locked-out"


class Zeroized(HsmError):
    """The failed attempt reached the threshold and the HSM or partition was zeroized."""

    code = "zeroized"


class PolicyError(HsmError):
    code = "policy"


class PedUnavailable(HsmError):
    """No PED could serve the operation (none configured, link down, busy, timeout)."""

    code = "ped-unavailable"

    def __init__(self, message: str, *, outcome: str = "") -> None:
        super().__init__(message)
        #: What the PED reported, for the audit record of a refused attempt
        #: (``key-timeout``, ``cancelled``); "" when the PED said nothing (link, no PED).
        self.outcome = outcome or self.code


class StateCorrupt(HsmError):
    """The durable state failed its integrity check; the HSM refuses to start."""

    code = "state-corrupt"


class CertificateRefused(HsmError):
    """A certificate given to the client registry is not usable (unreadable, expired...)."""

    code = "certificate"
