"""Results the caller owns: `ReadResult` and `ImprintResult` that wipe their secret on exit.

A `PedSession` hands each result to its caller and keeps no reference to it, so a
session open for months holds nothing per operation.  The caller wipes it, best with
``with``::

    with await ped.read_secret(Color.BLUE) as result:
        secret = bytearray(result.secret)  # copy what must outlive the block
    # result.secret is all zeros here

They are the ``ped.ops`` messages of the same names (``isinstance`` holds), with context
manager support added: the session copies the PED's answer into one and wipes the
answer at once, so the caller's object is the only copy of the secret on this side.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import attrs

from ped.ops import messages


class _WipedOnExit:
    """``with result:`` wipes *result* when the block ends, however it ends."""

    __slots__ = ()

    def wipe(self) -> None:  # the message's own wipe comes first in the MRO
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.wipe()


class ReadResult(messages.ReadResult, _WipedOnExit):
    """The derived secret of a keyset, owned by the caller: wipe it (``with``)."""

    __slots__ = ()


class ImprintResult(messages.ImprintResult, _WipedOnExit):
    """An imprint's outcome and login secret, owned by the caller: wipe it (``with``)."""

    __slots__ = ()


def hand_over(
    answer: messages.ReadResult | messages.ImprintResult,
) -> ReadResult | ImprintResult:
    """The caller's copy of the PED's *answer*; *answer* itself is wiped."""
    try:
        owned: type[ReadResult | ImprintResult] = (
            ReadResult if isinstance(answer, messages.ReadResult) else ImprintResult
        )
        # The fields' converters copy the secret into a new bytearray.
        return owned(*(getattr(answer, field.name) for field in attrs.fields(type(answer))))
    finally:
        answer.wipe()
