"""``pedconform ped`` against the emulated PED, sound and deliberately broken, in-process.

A sound PED passes every case; each broken double fails the cases that check what it
breaks, and only those.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from keys import errors as kerr
from ped.channel import LOCAL_RPV, RpvMismatch
from ped.channel.handshake import ChannelResponder, HandshakeRefusal, RefuseReason
from ped.device.emulated import read_flow
from ped.device.emulated.session import EmulatedSession
from ped.device.messages import SessionData
from ped.ops.ped_side import PedState
from tests.conform.ped_doubles import FilteredStream, not_passed, ped_under_test


async def test_the_emulated_ped_passes_every_case(tmp_path: Path) -> None:
    async with ped_under_test(tmp_path) as ped:
        report = await ped.run_suite()
    assert not_passed(report) == set(), [c for c in report.cases if c.failed()]
    assert report.exit_code() == 0
    assert {c.case for c in report.cases} >= {"1.1", "2.9", "3.13"}


async def test_local_mode_accepts_local_rpv_after_yes(tmp_path: Path) -> None:
    async with ped_under_test(tmp_path, mode="local") as ped:
        report = await ped.run_suite("1.1,2.1,2.3,3.1")
    assert not_passed(report) == set()
    assert "local mode: accepted" in {c.case: c.seen for c in report.cases}["2.3"]


async def test_an_orange_keyset_of_two_keys_and_a_pin_in_local_mode(tmp_path: Path) -> None:
    # `rpv`: NO to "without an orange key?", then both orange keys and the operator's PIN.
    async with ped_under_test(tmp_path, mode="local", orange=(2, 2, "8642")) as ped:
        report = await ped.run_suite("2.1,3.1")
    assert not_passed(report) == set(), [c.seen for c in report.cases]


async def test_a_ped_that_skips_a_frame_with_a_bad_magic_fails_1_5(tmp_path: Path) -> None:
    def bad_magic(frame: bytes) -> bool:
        return frame[:2] != b"RP"

    async with ped_under_test(tmp_path, wrap=lambda s: FilteredStream(s, bad_magic)) as ped:
        report = await ped.run_suite()
    assert not_passed(report) == {"1.5"}
    assert "went on" in {c.case: c.seen for c in report.cases}["1.5"]


async def test_a_ped_that_reads_a_key_of_the_wrong_colour_fails_3_7(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class AnyColour(read_flow.ShareCollector):  # type: ignore[misc,name-defined]
        def add(self, image: object) -> int:
            try:
                return super().add(image)  # type: ignore[no-any-return]
            except kerr.WrongImageColor:
                self.color = image.color  # type: ignore[attr-defined]
                return super().add(image)  # type: ignore[no-any-return]

    monkeypatch.setattr(read_flow, "ShareCollector", AnyColour)
    async with ped_under_test(tmp_path) as ped:
        report = await ped.run_suite()
    assert not_passed(report) == {"3.7"}


async def test_a_ped_that_takes_local_rpv_in_remote_mode_fails_2_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accept = ChannelResponder.accept

    def lenient(self: ChannelResponder, rpv: bytes | bytearray) -> object:
        try:
            return accept(self, rpv)
        except RpvMismatch:
            self._done = False  # and tries the public vector as well: the fault
            return accept(self, LOCAL_RPV)

    monkeypatch.setattr(ChannelResponder, "accept", lenient)
    async with ped_under_test(tmp_path) as ped:
        report = await ped.run_suite()
    assert not_passed(report) == {"2.3"}
    assert "accepted LOCAL_RPV" in {c.case: c.seen for c in report.cases}["2.3"]


async def test_a_ped_that_answers_a_forged_sealed_frame_in_the_clear_fails_2_5_to_2_7(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = EmulatedSession.end

    def chatty_end(self: EmulatedSession) -> None:
        if not self.ending and self.side.state is PedState.FAILED:
            # The fault: a readable reaction to a frame that did not authenticate.
            refusal = HandshakeRefusal(RefuseReason.UNSUPPORTED, "bad frame").to_frame()
            self.host.send(SessionData(self.id, refusal))
        end(self)

    monkeypatch.setattr(EmulatedSession, "end", chatty_end)
    async with ped_under_test(tmp_path) as ped:
        report = await ped.run_suite()
    assert not_passed(report) == {"2.5", "2.6", "2.7"}
    assert "type 0x22" in {c.case: c.seen for c in report.cases}["2.6"]


async def test_cases_run_with_what_they_need_and_skip_when_it_failed(tmp_path: Path) -> None:
    async with ped_under_test(tmp_path) as ped:
        wrong = type(ped)(ped.uri, bytes(32), ped.operator)  # not the orange key's RPV
        report = await wrong.run_suite("3.6")
    seen = {c.case: (c.outcome.name, c.seen) for c in report.cases}
    assert list(seen) == ["1.1", "2.1", "3.2", "3.6"]
    assert seen["2.1"] == ("FAIL", "HANDSHAKE_REFUSED RPV_MISMATCH")
    assert seen["3.2"] == ("SKIP", "not run: needs case 2.1, which did not pass")
    assert seen["3.6"] == ("SKIP", "not run: needs case 3.2, which did not pass")
    assert report.exit_code() == 1


async def test_a_ped_that_never_answers_fails_the_case_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    def swallow_pings(frame: bytes) -> bool:
        return frame[3] == 0x38  # PING

    async with ped_under_test(tmp_path, wrap=lambda s: FilteredStream(s, swallow_pings)) as ped:
        with trio.fail_after(60):
            report = await ped.run_suite("1.3,1.11", timeout=2)
    seen = {c.case: c.seen for c in report.cases}
    assert not_passed(report) == {"1.3"}
    assert seen["1.3"] == "no answer in 2 s"
