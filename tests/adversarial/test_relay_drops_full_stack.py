"""Dropped frames through the real trio API: the HSM's timeouts turn silence into errors.

The sans-IO suite (`test_relay_attacks`) stops when nothing moves and stands in the
HSM's operation timeout.  Here the real ``ped.hsm_api`` runs (with trio's autojump
clock, so no real time passes) through the hostile relay of
``tests/ped/channel/test_over_streams.py``: a relay that swallows the HSM's handshake
or its request leaves the HSM with `OperationTimeout`, and the CANCEL the HSM then sends
does not authenticate at the PED either, so nothing is served late.
"""

from __future__ import annotations

from ped.channel import DecryptFailed
from ped.ops import OperationTimeout
from ped.ops import events as ev

from ..ped.channel.test_over_streams import run_session


def _drop(index: int):  # type: ignore[no-untyped-def]
    def mutate(seen: list[bytes]) -> list[bytes]:
        return [] if len(seen) - 1 == index else [seen[-1]]

    return mutate


async def test_dropped_handshake_ends_in_operation_timeout(autojump_clock: object) -> None:
    outcome = await run_session(to_ped_frames=_drop(0))
    assert isinstance(outcome.hsm, OperationTimeout)
    assert not any(isinstance(e, ev.RpvRequired) for e in outcome.ped_events)


async def test_dropped_request_times_out_and_the_late_cancel_is_refused(
    autojump_clock: object,
) -> None:
    outcome = await run_session(to_ped_frames=_drop(1))
    assert isinstance(outcome.hsm, OperationTimeout)
    assert not any(isinstance(e, ev.ReadSecretRequested) for e in outcome.ped_events)
    failures = [e for e in outcome.ped_events if isinstance(e, ev.SessionFailed)]
    assert failures and isinstance(failures[0].error, DecryptFailed)
