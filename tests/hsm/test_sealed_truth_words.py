"""`ped.hsm_api.session_end`: why a dead PED session died, in words; nothing for a live one."""

from __future__ import annotations

from typing import Any, cast

import attrs
import pytest

from ped.channel.errors import DecryptFailed
from ped.errors import RemoteProtocolError
from ped.hsm_api.session import PedSession, SessionBroken
from ped.hsm_api.session_end import CHANNEL_BROKEN, session_end
from ped.ops.errors import OperationTimeout


@attrs.frozen
class _Session:
    usable: bool


def _of(usable: bool) -> PedSession:
    return cast(PedSession, _Session(usable))


@pytest.mark.parametrize(
    "error", [None, DecryptFailed("x"), OperationTimeout("no answer within 1 s")]
)
def test_a_usable_session_has_no_end(error: BaseException | None) -> None:
    assert session_end(_of(True), error) is None


@pytest.mark.parametrize(
    ("error", "why", "detail"),
    [
        (DecryptFailed("a 560-byte message failed authentication"),
         f"{CHANNEL_BROKEN}: a frame failed authentication",
         "tampered with or corrupted on the way: a 560-byte message failed authentication"),
        (RemoteProtocolError("an answer to no request"),
         f"{CHANNEL_BROKEN}: an answer broke the protocol",
         "(garbage, or out of order): an answer to no request"),
        (SessionBroken("sending to the PED timed out; open a new session"),
         "the path to the PED failed", "sending to the PED timed out"),
        (OperationTimeout("no answer within 9 s; the operation was cancelled"),
         "the PED did not end an operation", "gave up on: the PED operation did not finish"),
        (None, "session broken", "(cause unknown)"),
        (ValueError("odd"), "session broken", "can no longer be used: odd"),
    ],
)
def test_a_dead_session_says_why(error: Any, why: str, detail: str) -> None:
    end = session_end(_of(False), error)
    assert end is not None
    assert end.why == why
    assert detail in end.detail, end.detail
