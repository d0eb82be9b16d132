"""Results have one owner, the caller: a session keeps none of them (issue 20, section 1).

A session open for months must hold nothing per operation: 10,000 operations on one
session over the in-memory transport leave at most the caller's last result alive and
no traced memory growth beyond a small bound.  And the caller's ``with`` wipes the
result it owns, however the block ends.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import pytest
import trio

from keys.colors import Color
from ped import hsm_api
from ped.hsm_api import ImprintResult, open_ped_session
from ped.ops import events as ev
from ped.ops import messages

from .ops.memory import TinyPed, answer_imprint, answer_secret, transport_pair

RPV = bytes(range(32))
OPERATIONS = 10_000
TRACED = 2_000  # the last operations run under tracemalloc (it makes each ~3x slower)
# What the ``ped`` code may still hold after TRACED more operations: allocator noise.
# Keeping every result would be ~190 bytes each (object and secret), ~380 kB here.
GROWTH_BOUND = 16 * 1024
# Measured: everything ``ped`` allocates, except the session's own lines: trio keeps the
# session's expired cancel scopes in its deadline heap and prunes them in batches (its
# own bounded cache, up to ~1,000 stale entries), which would hide a real leak in noise.
MEASURED = [
    tracemalloc.Filter(True, "*/ped/*"),
    tracemalloc.Filter(False, "*/ped/hsm_api/session.py"),
]


async def test_ten_thousand_operations_on_one_session_keep_no_result() -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_secret})
    handed_out, freed = 0, [0]

    def count_freed() -> None:
        freed[0] += 1

    def forget_the_fakes_records() -> None:
        # The fakes record what passed (for other tests); only the session is measured.
        ped.events.clear()
        hsm_t.sent.clear()
        ped_t.sent.clear()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            for i in range(OPERATIONS):
                if i == OPERATIONS - TRACED:
                    gc.collect()
                    tracemalloc.start()
                    before = tracemalloc.take_snapshot().filter_traces(MEASURED)
                with await session.read_secret(Color.BLUE, label="HSM SO") as result:
                    assert result.secret == bytearray([7]) * 32
                handed_out += 1
                weakref.finalize(result, count_freed)
                assert result.secret == bytearray(32)  # the owner's with wiped it
                forget_the_fakes_records()
            del result
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(MEASURED)
            tracemalloc.stop()
            kept = handed_out - freed[0]
            assert kept == 0, f"{kept} of {handed_out} results are still alive"
            grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            assert grown < GROWTH_BOUND, f"{grown} bytes kept over {TRACED} operations"
            assert session.usable
        nursery.cancel_scope.cancel()


async def test_a_result_is_wiped_when_its_owner_closes_it_and_not_before() -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_secret, ev.ImprintRequested: answer_imprint})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            kept = await session.read_secret(Color.BLUE)
            assert isinstance(kept, hsm_api.ReadResult) and isinstance(kept, messages.ReadResult)
            # The next operation does not touch a result another caller still holds.
            with pytest.raises(RuntimeError, match="the owner's own failure"):
                with await session.imprint(Color.BLACK, new_secret=bytes(32)) as imprinted:
                    assert isinstance(imprinted, ImprintResult)
                    assert imprinted.secret == bytearray([8]) * 32
                    raise RuntimeError("the owner's own failure")
            assert imprinted.secret == bytearray(32)  # wiped on the way out, too
            assert kept.secret == bytearray([7]) * 32
        # Closing the session leaves the owner's result alone: its owner wipes it.
        assert kept.secret == bytearray([7]) * 32
        with kept:
            pass
        assert kept.secret == bytearray(32)
        nursery.cancel_scope.cancel()
