"""What the cases of ``pedconform ped`` share: the case type, the run's settings, the PED.

A case is a numbered `Case` whose ``run(ctx)`` returns a `Verdict` (passed?, what was
seen).  `Context` holds the run: its settings (`Settings`), the operator adapter, the
results so far, what earlier cases made (keysets), and the ways to reach the PED: a raw
device connection (`raw`) or the project's driver and HSM session (`session`).  The PED
serves one host at a time, so `Context` keeps at most one connection open: asking for
one closes the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import trio

from ped.device import PedDriver, open_driver
from ped.hsm_api import Notice, PedSession, open_ped_session
from pedtools.conform.ped_operator import Operator, OperatorFailed, instruction
from pedtools.conform.ped_wire import RawLink, open_raw
from pedtools.conform.report import CaseResult

T = TypeVar("T")

#: The HSM serial the suite's handshakes carry (the PED may show it).
HSM_SERIAL = "PEDCONFORM"


@attrs.frozen
class Verdict:
    passed: bool
    seen: str


def passed(seen: str) -> Verdict:
    return Verdict(True, seen)


def failed(seen: str) -> Verdict:
    return Verdict(False, seen)


@attrs.frozen
class Case:
    number: str
    title: str
    section: str
    expected: str
    run: Callable[[Context], Awaitable[Verdict]] = attrs.field(repr=False)
    #: Cases that must have passed first (their keysets, their recorded frames).
    needs: tuple[str, ...] = ()
    required: bool = True
    #: How many operations the case runs: its time bound is this many `Settings.timeout`.
    weight: int = 1


@attrs.frozen
class Settings:
    uri: str
    rpv: bytes = attrs.field(repr=False)
    #: Seconds a whole case may take (a PED that never answers fails the case).
    timeout: float = 60.0
    #: The short PED-key timeout of the key-timeout case, seconds.
    key_timeout: float = 3.0
    #: Seconds of silence that show a PED said nothing (after a forged frame).
    quiet: float = 1.0


class Context:
    """The state of one run (see the module docstring)."""

    def __init__(self, settings: Settings, operator: Operator) -> None:
        self.settings = settings
        self.operator = operator
        self.results: dict[str, CaseResult] = {}
        #: What cases leave for later cases: keysets ("blue" -> (id, secret)), frames.
        self.made: dict[str, Any] = {}
        self.info: Any = None  # the INFO of case 1.1 (mode, max_sessions)
        self.notices: list[Notice] = []
        self._raw: RawLink | None = None
        self._driver: PedDriver | None = None
        self._sessions = contextlib.AsyncExitStack()
        self._session: PedSession | None = None

    # -- reaching the PED ----------------------------------------------------------------

    async def raw(self) -> RawLink:
        """A fresh raw connection (the driver and any previous raw one are closed)."""
        await self.close_all()
        self._raw = await open_raw(self.settings.uri)
        return self._raw

    async def driver(self) -> PedDriver:
        """The project's driver for the PED, opened (any raw connection is closed)."""
        if self._raw is not None:
            await self.close_all()
        if self._driver is None:
            driver = open_driver(self.settings.uri)
            await driver.open()
            self._driver = driver
        return self._driver

    async def session(self) -> PedSession:
        """The suite's HSM session with the PED (handshake with the RPV on first use)."""
        await self.driver()  # first: reaching it may close a raw connection and the stack
        if self._session is not None and self._session.usable:
            return self._session
        await self.drop_session()
        self._session = await self.new_session(self._sessions)
        return self._session

    async def new_session(self, stack: contextlib.AsyncExitStack) -> PedSession:
        """Another HSM session on the driver, closed with *stack*."""
        driver = await self.driver()
        transport = await driver.open_session()
        stack.push_async_callback(transport.aclose)
        timeout = self.settings.timeout

        async def handshake() -> PedSession:
            return await stack.enter_async_context(open_ped_session(
                transport, rpv=self.settings.rpv, hsm_serial=HSM_SERIAL,
                key_timeout=timeout, op_timeout=timeout, cancel_grace=5.0,
                on_notice=self.notices.append,
            ))

        return await self.with_operator([instruction("rpv")], handshake)

    async def drop_session(self) -> None:
        self._session = None
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._sessions.aclose()
        self._sessions = contextlib.AsyncExitStack()

    async def close_all(self) -> None:
        await self.drop_session()
        raw, self._raw = self._raw, None
        if raw is not None:
            await raw.aclose()
        driver, self._driver = self._driver, None
        if driver is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await driver.aclose()

    # -- the operator --------------------------------------------------------------------

    async def with_operator(
        self, steps: Sequence[Mapping[str, object]], action: Callable[[], Awaitable[T]]
    ) -> T:
        """Run *action* while the operator carries out *steps* in order at the PED.

        Steps left when *action* ends are dropped (``reset``).  A step the operator could
        not carry out ends *action* (after `Settings.quiet` seconds, for an answer already
        on its way) and is raised, unless *action* finished by itself.
        """
        problem: list[OperatorFailed] = []
        result: list[T] = []
        error: list[Exception] = []

        async def operate(scope: trio.CancelScope) -> None:
            for step in steps:
                try:
                    await self.operator.do(step)
                except OperatorFailed as exc:
                    problem.append(exc)
                    # The PED waits for what the operator could not do: give up on it.
                    await trio.sleep(self.settings.quiet)
                    scope.cancel()
                    return

        async def act(scope: trio.CancelScope) -> None:
            try:
                result.append(await action())
            except Exception as exc:  # raised below, outside the nursery (no group)
                error.append(exc)
            finally:
                scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(operate, nursery.cancel_scope)
                nursery.start_soon(act, nursery.cancel_scope)
        finally:
            await self.reset_operator()
        if error:
            raise error[0]
        if not result and problem:
            raise problem[0]
        return result[0]

    async def reset_operator(self) -> None:
        with trio.move_on_after(10), contextlib.suppress(OperatorFailed):
            await self.operator.do(instruction("reset"))
