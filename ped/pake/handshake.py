"""The PAKE run of a remote RPV initialisation, both ends (sans-IO): frames in, key out.

Theory of operation
-------------------
A zeroized HSM has no RPV, so nothing keys the end-to-end channel.  Instead the HSM shows
a one-time password (`ped.pake.password`) and the PED's operator types it; CPace
(`ped.pake.cpace`) turns the shared password into a strong shared key::

    HSM (PakeInitiator)                               PED (PakeResponder)
    g = generator(password, CI, sid); Ya = ya*g
    PAKE_INIT(serial, timeout, digits, sid, Ya) -->   RpvRequired-like prompt: the
                                                      operator types the password;
                                                      g, Yb = yb*g, K = yb*Ya, ISK
                                        <-- PAKE_RESPONSE(Yb)   (or HANDSHAKE_REFUSED)
    spend one try; K = ya*Yb, ISK
    channel key = HKDF-SHA256(ISK, salt=sid, info=CHANNEL_LABEL)   (both ends)

CI binds the run to this purpose and this HSM (``lv_cat(CI_LABEL, serial)``); sid is 16
random bytes of the HSM, fresh per run.  The *channel key* then stands where the RPV
stands in an ordinary session: the HSM opens the usual end-to-end channel
(``ped.channel``, Noise NNpsk0 suite 2, PSK = `ped.channel.derive_psk` of the channel
key) on the same transport.  Its handshake is the key confirmation: Noise message 1 is
authenticated under the PSK, so the PED learns whether the HSM holds the same key (a
wrong password: the PED refuses with RPV_MISMATCH, nothing else learned), and message 2
proves the PED's key to the HSM, all before the HSM sends the IMPRINT of the new RPV.

A try of the password is spent when the HSM receives the PED's share, before it derives
anything from it: that is the first moment a guess can be tested (an attacker posing as
the PED learns from the HSM's Noise message 1 whether its guess was right).  A PED that
refuses (HANDSHAKE_REFUSED: the operator cancelled, no password in time) spends none.

Both objects are single-use.  Scalars may be fixed only for test vectors.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ped.channel.errors import HandshakeFailed
from ped.channel.handshake import HandshakeRefusal, RefuseReason
from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.pake import cpace
from ped.pake.messages import SID_SIZE, PakeInit, PakeResponse
from ped.pake.password import OneTimePassword
from ped.wire.framing import Frame
from ped.wire.types import E2EType

#: First part of CPace's channel identifier CI (the HSM's serial follows).
CI_LABEL = b"remote-ped rpv-init v1"
#: HKDF-SHA256 info turning CPace's ISK into the channel key.
CHANNEL_LABEL = b"remote-ped v1 pake channel key"
CHANNEL_KEY_SIZE = 32


class InvalidShare(RemoteProtocolError):
    """The peer's CPace share is a low-order point (an attack or a broken peer)."""


class WrongPassword(HandshakeFailed):
    """The two ends did not derive the same key: the password typed on the PED is not
    the one the HSM showed (or a relay altered the run, which looks the same)."""

    def __init__(self, message: str = "the one-time password typed on the PED was wrong") -> None:
        super().__init__(message)


def channel_identifier(hsm_serial: str) -> bytes:
    return cpace.lv_cat(CI_LABEL, hsm_serial.encode("ascii"))


def channel_key(isk: bytes | bytearray, sid: bytes) -> bytearray:
    """The 32-byte key that keys the end-to-end channel in place of an RPV."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=CHANNEL_KEY_SIZE, salt=sid, info=CHANNEL_LABEL)
    return bytearray(hkdf.derive(bytes(isk)))


def _scalar(scalar: bytes | None) -> bytearray:
    if scalar is None:
        return bytearray(os.urandom(cpace.FIELD_SIZE))
    if len(scalar) != cpace.FIELD_SIZE:
        raise LocalProtocolError(f"a scalar is {cpace.FIELD_SIZE} bytes")
    return bytearray(scalar)


def _key(scalar: bytearray, peer_share: bytes, sid: bytes, transcript: bytes) -> bytearray:
    try:
        k = cpace.scalar_mult(scalar, peer_share)
    except cpace.InvalidPoint:
        raise InvalidShare("the peer's PAKE share is a low-order point; run aborted") from None
    finally:
        scalar[:] = bytes(len(scalar))
    isk = cpace.intermediate_key(sid, k, transcript)
    try:
        return channel_key(isk, sid)
    finally:
        isk[:] = bytes(len(isk))


class PakeInitiator:
    """The HSM's end of one PAKE run (see the module docstring)."""

    def __init__(
        self,
        password: OneTimePassword,
        *,
        hsm_serial: str,
        entry_timeout_ms: int,
        now: float,
        sid: bytes | None = None,
        scalar: bytes | None = None,
    ) -> None:
        self.password = password
        sid = os.urandom(SID_SIZE) if sid is None else bytes(sid)
        prs = password.prs(now)
        generator = cpace.calculate_generator(prs, channel_identifier(hsm_serial), sid)
        del prs
        self._scalar = _scalar(scalar)
        share = cpace.scalar_mult(self._scalar, generator)
        self.init = PakeInit(hsm_serial, entry_timeout_ms, password.length, sid, share)
        self._done = False

    def __repr__(self) -> str:
        return f"PakeInitiator(hsm_serial={self.init.hsm_serial!r}, done={self._done})"

    def init_frame(self) -> Frame:
        return self.init.to_frame()

    def receive(self, frame: Frame, now: float) -> bytearray:
        """The PED's answer -> the channel key; raises the refusal or a protocol error."""
        if self._done:
            raise LocalProtocolError("this PAKE run is over; start a new one")
        self._done = True
        if frame.type == E2EType.HANDSHAKE_REFUSED:
            self._scalar[:] = bytes(len(self._scalar))
            raise HandshakeRefusal.from_frame(frame).error()
        try:
            response = PakeResponse.from_frame(frame)
        except RemoteProtocolError:
            self._scalar[:] = bytes(len(self._scalar))
            raise
        self.password.spend_try(now)
        transcript = cpace.transcript_ir(
            self.init.share, self.init.associated_data(), response.share,
            response.associated_data(),
        )
        return _key(self._scalar, response.share, self.init.sid, transcript)


class PakeResponder:
    """The PED's end of one PAKE run (see the module docstring)."""

    def __init__(self) -> None:
        self.init: PakeInit | None = None

    def __repr__(self) -> str:
        serial = self.init.hsm_serial if self.init is not None else None
        return f"PakeResponder(hsm_serial={serial!r})"

    def receive_init(self, frame: Frame) -> PakeInit:
        """Parse PAKE_INIT (raises a `RemoteProtocolError` for a malformed one)."""
        if self.init is not None:
            raise RemoteProtocolError("a second PAKE_INIT in one run")
        self.init = PakeInit.from_frame(frame)
        return self.init

    def answer(
        self, password: bytes | bytearray, *, scalar: bytes | None = None
    ) -> tuple[Frame, bytearray]:
        """The typed password -> (PAKE_RESPONSE, channel key)."""
        init = self.init
        if init is None:
            raise LocalProtocolError("answer() before PAKE_INIT")
        generator = cpace.calculate_generator(
            bytes(password), channel_identifier(init.hsm_serial), init.sid
        )
        ours = _scalar(scalar)
        try:
            share = cpace.scalar_mult(ours, generator)
        except BaseException:
            ours[:] = bytes(len(ours))
            raise
        response = PakeResponse(share)
        transcript = cpace.transcript_ir(
            init.share, init.associated_data(), share, response.associated_data()
        )
        key = _key(ours, init.share, init.sid, transcript)
        return response.to_frame(), key

    @staticmethod
    def refuse(reason: RefuseReason, detail: str = "") -> Frame:
        """HANDSHAKE_REFUSED for this run (operator cancelled, password not typed...)."""
        return HandshakeRefusal(reason, detail).to_frame()
