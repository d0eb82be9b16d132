"""Typed results for PED operations that did not succeed.

The PED answers a failed operation with an ``OP_ERROR`` message carrying an `ErrorCode`
and a short non-secret text; the HSM side turns it into the matching exception below.
None of these is a counted failed login by itself: the HSM decides what counts (a key of
the wrong colour does not; a wrong secret, found by the HSM, does).

Translated where: on the PED side into ``OP_ERROR`` codes (the emulated PED does it in
``ped.device.emulated.session``, which is also where a ``keys`` error that ends an
operation becomes DEVICE_ERROR); on the HSM side from the wire back into these classes
by `error_for` (and a refused handshake by ``ped.ops.hsm_side``'s refusal table), raised
unchanged through ``ped.hsm_api``; the HSM maps them in ``hsm.apiport.map_error``.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from ped.errors import PedError
from ped.transport import PedBusy


class ErrorCode(enum.IntEnum):
    """Why a PED operation failed (u16 in ``OP_ERROR``)."""

    WRONG_COLOR = 1  # the presented key is not of the requested colour
    KEYSET_MISMATCH = 2  # the key belongs to another keyset than the HSM expects
    KEY_TIMEOUT = 3  # no key (or PIN, or answer) in the key timeout
    CANCELLED = 4  # cancelled by the HSM or by the operator (CLR)
    NO_BLANK_KEY = 5  # imprint: no blank (or overwritable) key presented
    DEVICE_ERROR = 6  # the PED or the key could not be read or written
    BUSY = 7  # the PED is serving something else
    BAD_REQUEST = 8  # the request made no sense to the PED (a bug on the HSM side)
    UNSUPPORTED = 9  # the PED does not implement this operation


class OperationError(PedError):
    """A PED operation ended without a result.  ``op_id`` names it, ``detail`` explains."""

    code: ClassVar[ErrorCode | None] = None
    #: A retry may succeed without anything changing on the HSM (True) or not (False).
    #: The kinds differ, so each kind says its own (a base never says what a kind denies).
    retriable: ClassVar[bool]
    default_text: ClassVar[str] = "the PED operation failed"

    def __init__(self, detail: str = "", *, op_id: int | None = None) -> None:
        self.detail = detail
        self.op_id = op_id
        text = self.default_text + (f": {detail}" if detail else "")
        super().__init__(text)


class WrongColor(OperationError):
    code = ErrorCode.WRONG_COLOR
    retriable = True
    default_text = "the key presented on the PED is of the wrong colour; present the right one"


class KeysetMismatch(OperationError):
    code = ErrorCode.KEYSET_MISMATCH
    retriable = True
    default_text = "the key presented on the PED belongs to another keyset than this HSM expects"


class KeyTimeout(OperationError):
    code = ErrorCode.KEY_TIMEOUT
    retriable = True
    default_text = "no PED key was presented in time; attend to the PED and try again"


class OperationCancelled(OperationError):
    code = ErrorCode.CANCELLED
    retriable = True
    default_text = "the PED operation was cancelled"


class NoBlankKey(OperationError):
    code = ErrorCode.NO_BLANK_KEY
    retriable = True
    default_text = "no blank PED key was presented to imprint; insert a blank key"


class PedFault(OperationError):
    code = ErrorCode.DEVICE_ERROR
    retriable = True
    default_text = "the PED reported a device or key error"


class BadRequest(OperationError):
    code = ErrorCode.BAD_REQUEST
    retriable = False
    default_text = "the PED rejected the request as malformed"


class Unsupported(OperationError):
    code = ErrorCode.UNSUPPORTED
    retriable = False
    default_text = "the PED does not support this operation"


class OperationTimeout(OperationError):
    """The whole operation took longer than the HSM's operation timeout (pedo)."""

    retriable = True
    default_text = "the PED operation did not finish within the operation timeout"


_BY_CODE: dict[ErrorCode, type[OperationError]] = {
    cls.code: cls
    for cls in (
        WrongColor,
        KeysetMismatch,
        KeyTimeout,
        OperationCancelled,
        NoBlankKey,
        PedFault,
        BadRequest,
        Unsupported,
    )
    if cls.code is not None
}


def error_for(code: ErrorCode, detail: str = "", *, op_id: int | None = None) -> PedError:
    """The exception for an ``OP_ERROR`` code (`PedBusy` for BUSY: it is retriable)."""
    if code is ErrorCode.BUSY:
        return PedBusy(
            "the PED is busy with another operation; try again" + (f": {detail}" if detail else "")
        )
    return _BY_CODE[code](detail, op_id=op_id)
