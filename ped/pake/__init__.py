"""Remote RPV initialisation keyed by a one-time password: CPace, the password, the run.

Sans-IO.  ``ped.pake.cpace`` is CPACE-X25519-SHA512 (draft-irtf-cfrg-cpace);
``ped.pake.password`` the one-time password (digits, tries, expiry, single use);
``ped.pake.messages`` PAKE_INIT/PAKE_RESPONSE; ``ped.pake.handshake`` both ends of a run,
whose channel key then keys the ordinary end-to-end channel (``ped.channel``).
PROTOCOL.md section "Remote RPV initialisation" has the bytes and vectors.
"""

from ped.pake.handshake import (
    CHANNEL_LABEL,
    CI_LABEL,
    InvalidShare,
    PakeInitiator,
    PakeResponder,
    WrongPassword,
    channel_key,
)
from ped.pake.messages import PAKE_VERSION, SUITE_CPACE_X25519, PakeInit, PakeResponse
from ped.pake.password import DIGITS, LIFETIME, TRIES, OneTimePassword, PasswordVoid

__all__ = [
    "CHANNEL_LABEL",
    "CI_LABEL",
    "DIGITS",
    "LIFETIME",
    "PAKE_VERSION",
    "SUITE_CPACE_X25519",
    "TRIES",
    "InvalidShare",
    "OneTimePassword",
    "PakeInit",
    "PakeInitiator",
    "PakeResponder",
    "PakeResponse",
    "PasswordVoid",
    "WrongPassword",
    "channel_key",
]
