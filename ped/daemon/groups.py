"""Turning trio's ExceptionGroups back into the one error a daemon reports."""

from __future__ import annotations

import trio


def single_error(exc: BaseException) -> BaseException:
    """The one meaningful exception inside nested ExceptionGroups (else *exc* itself)."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(leaves) != 1:
            return exc
        exc = leaves[0]
    return exc
