"""What the fuzzers feed the remote RPV initialisation (``ped.pake``): its two decoders
and the PED's side of a run.

* `DECODERS`: PAKE_INIT as the PED parses it, PAKE_RESPONSE as an HSM whose run is
  waiting for it takes it (a low-order share, a wrong version, any length).
* `one_pake(data)`: byte 0 picks the password length typed on the PED, the next bytes
  are a PAKE_INIT payload; the PED parses it and, when it parses, answers with digits
  from the input.  Only the project's typed errors may come out (`targets.EXPECTED`).

Registered in ``fuzz.targets`` (the messages harness) and as the ``pake`` harness.
"""

from __future__ import annotations

from collections.abc import Callable

from ped.errors import PedError
from ped.pake import OneTimePassword, PakeInitiator, PakeResponder
from ped.wire.framing import Frame
from ped.wire.types import E2EType

Decoder = Callable[[bytes], object]
PASSWORD = "12345678"  # noqa: S105 (the fuzzed HSM's test password)
HSM_SERIAL = "150001"


def _pake_init(payload: bytes) -> object:
    return PakeResponder().receive_init(Frame(E2EType.PAKE_INIT, payload))


def _pake_response(payload: bytes) -> object:
    password = OneTimePassword(PASSWORD, issued_at=0.0)
    hsm = PakeInitiator(password, hsm_serial=HSM_SERIAL, entry_timeout_ms=1000, now=0.0)
    return hsm.receive(Frame(E2EType.PAKE_RESPONSE, payload), 0.0)


DECODERS: dict[str, tuple[int, Decoder]] = {
    "e2e.PAKE_INIT": (int(E2EType.PAKE_INIT), _pake_init),
    "e2e.PAKE_RESPONSE": (int(E2EType.PAKE_RESPONSE), _pake_response),
}


def one_pake(data: bytes) -> None:
    """Byte 0: digits typed (mod 17); then a PAKE_INIT payload."""
    if not data:
        return
    digits = (str(data[0]) * 17)[: data[0] % 17]
    responder = PakeResponder()
    try:
        responder.receive_init(Frame(E2EType.PAKE_INIT, data[1:]))
        frame, key = responder.answer(digits.encode())
    except PedError:
        return
    if frame.type != E2EType.PAKE_RESPONSE or len(key) != 32:
        raise AssertionError("a parsed PAKE_INIT gave no PAKE_RESPONSE and key")
