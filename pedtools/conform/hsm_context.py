"""What every case of `pedconform hsm` shares: the cases' list (`CASES`), and `Context`,
the PED, its wire, the HSM's steps and what the suite knows of the HSM between cases.

`Context.link_shown` asks the HSM's ``show-link`` step whether it says it is connected
to the PED (``--connected-pattern``): the cases check that an HSM's own account of its
link is the truth, the moment a session breaks or the link is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from pedtools.conform.faulty_ped import Fault, FaultyPed, Wire
from pedtools.conform.hsm_steps import (
    DEFAULT_CONNECTED_PATTERN,
    StepResult,
    StepRunner,
    counter_value,
    says_connected,
)
from pedtools.conform.report import CaseOutcome, CaseResult


@attrs.frozen
class CaseSpec:
    """One case as listed: its number, what it checks, where that is written, what is due."""

    case: str
    title: str
    section: str
    expected: str
    required: bool = True


CASES: tuple[CaseSpec, ...] = (
    CaseSpec("1.1", "right RPV", "PROTOCOL.md 3.1-3.4, 6",
             "connect succeeds: HANDSHAKE_INIT of suite 2, sent inside a hold; show-link "
             "says connected"),
    CaseSpec("1.2", "initialise on this PED", "PROTOCOL.md 4 (IMPRINT)",
             "init succeeds: the HSM imprints its keys with new secrets"),
    CaseSpec("1.3", "login, right key", "PROTOCOL.md 4 (READ_SECRET)",
             "login succeeds: READ_SECRET answered, secret accepted"),
    CaseSpec("2.1", "wrong RPV", "PROTOCOL.md 3.5, 7",
             "connect refused on RPV_MISMATCH; nothing sealed sent; not counted"),
    CaseSpec("2.2", "altered HANDSHAKE_RESPONSE", "PROTOCOL.md 3.5, 7",
             "connect refused as an RPV mismatch; nothing sealed sent; not counted"),
    CaseSpec("3.1", "PED answers garbage", "PROTOCOL.md 3.6, 7",
             "login refused (DecryptFailed); no SEALED frame on that session after; not "
             "counted; show-link no longer says connected"),
    CaseSpec("3.2", "tampered SEALED frame", "PROTOCOL.md 3.6, 7",
             "login refused (DecryptFailed); no SEALED frame on that session after; not "
             "counted; show-link no longer says connected"),
    CaseSpec("3.3", "wrong-colour answer", "PROTOCOL.md 4 (errors, counting), 7",
             "login refused; not counted"),
    CaseSpec("3.4", "keyset-mismatch answer", "PROTOCOL.md 4 (counting), 7; hsm/README.md",
             "login refused; counted as a failed login"),
    CaseSpec("3.5", "cancelled operation", "PROTOCOL.md 4 (CANCELLED), 7",
             "login refused; not counted"),
    CaseSpec("3.6", "timed-out operation (pedk)", "PROTOCOL.md 4 (KEY_TIMEOUT), 6, 7",
             "login refused; not counted"),
    CaseSpec("3.7", "slow PED", "PROTOCOL.md 6",
             "login succeeds: the HSM waits for an answer inside its operation timeout; "
             "no CANCEL"),
    CaseSpec("3.8", "silent PED (pedo)", "PROTOCOL.md 6, 7",
             "at its operation timeout the HSM sends CANCEL; login refused; not counted",
             required=False),
    CaseSpec("4.1", "link lost mid-operation", "PROTOCOL.md 7; link.md 2; README",
             "login refused, not counted; show-link no longer says connected; connect "
             "again (retry) and login succeed"),
)
SPECS = {spec.case: spec for spec in CASES}


@attrs.define
class Context:
    """What every case uses: the PED, its wire, the HSM's steps and the suite's limits."""

    ped: FaultyPed
    runner: StepRunner
    counter_pattern: str
    connected_pattern: str = DEFAULT_CONNECTED_PATTERN
    slow_limit: float = 30.0  # longest the slow and silent cases wait
    slow_margin: float = 5.0  # how far inside the HSM's timeout the slow PED answers, at most
    initialised: bool = False
    #: the last case broke the HSM's session or link on purpose: the next one starts with
    #: disconnect + connect, as an administrator would after such a failure
    dirty: bool = False
    connected: bool = False  # the last connect succeeded and nothing broke the link since
    last_counter: int | None = None

    @property
    def wire(self) -> Wire:
        return self.ped.wire

    async def step(self, name: str, fault: Fault = Fault.NONE, extra: float = 0.0) -> StepResult:
        self.ped.fault = fault
        if name in ("login", "init"):
            self.last_counter = None  # an attempt may change it, a success may reset it
        try:
            done = await self.runner.run(name, extra_time=extra)
        finally:
            self.ped.fault = Fault.NONE
        if name == "connect":
            self.connected = done.ok
        elif name == "disconnect":
            self.connected = False
        return done

    async def connect(self) -> StepResult | None:
        """A working link and session for the next case: kept from the last case when it
        ended with one (steps are slow on a real HSM), new after a broken one."""
        if self.connected and not self.dirty:
            return None
        if self.dirty:
            await self.step("disconnect")
        done = await self.step("connect")
        self.dirty = not done.ok
        return done

    async def link_shown(self) -> bool | None:
        """Whether the HSM says it is connected to the PED (None: it has no ``show-link``
        step, or it failed)."""
        if not self.runner.available("show-link"):
            return None
        return says_connected(await self.runner.run("show-link"), self.connected_pattern)

    async def counter(self) -> int | None:
        """The HSM's failed-login counter (read again only after a login or init)."""
        if self.last_counter is None and self.runner.available("show-counter"):
            shown = await self.runner.run("show-counter")
            self.last_counter = counter_value(shown, self.counter_pattern)
        return self.last_counter


CaseFn = Callable[[Context, CaseSpec], Awaitable[CaseResult]]


def result(
    spec: CaseSpec, outcome: CaseOutcome, seen: str, required: bool | None = None
) -> CaseResult:
    return CaseResult(
        spec.case, spec.title, spec.section, spec.expected, seen, outcome,
        spec.required if required is None else required,
    )


