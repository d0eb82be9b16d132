"""`open_pake_session`: a PED session keyed by a one-time password (remote RPV init).

Theory of operation
-------------------
An HSM without an RPV (zeroized) cannot open the ordinary session.  This runs the PAKE
of ``ped.pake`` over the transport first, under one operation hold of the PED:
PAKE_INIT out, the PED asks its operator for the password, PAKE_RESPONSE (or a refusal)
back.  The channel key that both ends derived then goes to `open_ped_session` as the
*rpv*, whose handshake is the key confirmation: a wrong password makes the PED refuse it
(`RpvMismatch`, re-raised here as `ped.pake.WrongPassword`), before any operation.  On
success the password is used up (`OneTimePassword.succeeded`) and the caller gets an
ordinary `PedSession`, in which it imprints the new RPV on orange keys.

The password's rules (tries, expiry) are `ped.pake.password`'s; a try is spent when the
PED's share arrives.  The wait for the PED's answer is bounded by *entry_timeout* (the
operator types the password) plus *cancel_grace*, which the hold announces to a transport
that listens (pedserver closes a hold that outlasts it).  No nursery: no ExceptionGroup leaks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ped.channel.errors import RpvMismatch
from ped.hsm_api.limits import (
    DEFAULT_BUSY_WAIT,
    DEFAULT_CANCEL_GRACE,
    DEFAULT_KEY_TIMEOUT,
    DEFAULT_OP_TIMEOUT,
    check_seconds,
    key_timeout_ms,
)
from ped.hsm_api.session import AnnouncesOpTimeout, PedSession, open_ped_session
from ped.ops.errors import OperationTimeout
from ped.ops.messages import Notice
from ped.pake.handshake import PakeInitiator, WrongPassword
from ped.pake.password import OneTimePassword
from ped.transport import FrameTransport, TransportError


async def _pake(
    transport: FrameTransport,
    initiator: PakeInitiator,
    *,
    entry_timeout: float,
    busy_wait: float,
    cancel_grace: float,
    now: Callable[[], float],
) -> bytearray:
    # pedserver bounds the hold by the operation timeout announced before it (else by its
    # max_op_hold, minutes longer): this hold lasts at most the entry and the grace.
    if isinstance(transport, AnnouncesOpTimeout):
        transport.announce_op_timeout(entry_timeout + cancel_grace)
    await transport.begin_operation(wait=busy_wait)
    try:
        with trio.move_on_after(entry_timeout + cancel_grace) as scope:
            await transport.send(initiator.init_frame())
            frame = await transport.receive()
        if scope.cancelled_caught:
            raise OperationTimeout(
                f"the PED did not answer within {entry_timeout:g} s "
                "(the one-time password was not typed on the PED)"
            )
        return initiator.receive(frame, now())
    finally:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + cancel_grace):
            try:
                await transport.end_operation()
            except TransportError:
                pass


@asynccontextmanager
async def open_pake_session(
    transport: FrameTransport,
    *,
    password: OneTimePassword,
    hsm_serial: str,
    entry_timeout: float = DEFAULT_KEY_TIMEOUT,
    key_timeout: float = DEFAULT_KEY_TIMEOUT,
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    busy_wait: float = DEFAULT_BUSY_WAIT,
    cancel_grace: float = DEFAULT_CANCEL_GRACE,
    on_notice: Callable[[Notice], None] | None = None,
    now: Callable[[], float] = time.time,
) -> AsyncIterator[PedSession]:
    """Run the PAKE, then the confirming handshake; yield a `PedSession`.

    *password*: the `OneTimePassword` the HSM showed; `ped.pake.PasswordVoid` if it is
    used, expired or out of tries.  *entry_timeout*: seconds the PED waits for its
    operator to type it.  The other arguments are `open_ped_session`'s.  Raises
    `WrongPassword` for a wrong password (a try is gone), `HandshakeRefused` when the PED
    refused (no try spent), `OperationTimeout`, or a `TransportError`.
    """
    check_seconds("cancel_grace", cancel_grace)
    check_seconds("busy_wait", busy_wait, zero_ok=True)
    initiator = PakeInitiator(
        password, hsm_serial=hsm_serial, entry_timeout_ms=key_timeout_ms(entry_timeout),
        now=now(),
    )
    key = await _pake(
        transport, initiator, entry_timeout=entry_timeout, busy_wait=busy_wait,
        cancel_grace=cancel_grace, now=now,
    )
    confirmed = False
    try:
        async with open_ped_session(
            transport, rpv=key, hsm_serial=hsm_serial, key_timeout=key_timeout,
            op_timeout=op_timeout, busy_wait=busy_wait, cancel_grace=cancel_grace,
            on_notice=on_notice,
        ) as ped:
            key[:] = bytes(len(key))
            confirmed = True
            password.succeeded()
            yield ped
    except RpvMismatch:
        if confirmed:
            raise
        raise WrongPassword() from None
    finally:
        key[:] = bytes(len(key))
