"""The emulated PED in-process with the auto operator, through a real driver and hsm_api."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from keys import Keyring, combine, load_image, new_keyset, secret_for_hsm
from keys.colors import Color
from ped.device import DeviceGone
from ped.device.emulated.auto import AutoOperator, AutoOptions
from ped.device.emulated.output import SEND_TIMEOUT
from ped.device.emulated.server import EmulatedPed
from ped.device.messages import DeviceEvent, EventKind
from ped.hsm_api import open_ped_session
from ped.ops.errors import OperationCancelled
from ped.transport import PedBusy
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring


async def start(ring: Ring, nursery: trio.Nursery, **options: object) -> InProcessPedDriver:
    ped = EmulatedPed(ring.path, serial="T-1")
    operator = AutoOperator(
        ped.panel, ring.path, pin_file=ring.pin_file, options=AutoOptions(**options)
    )  # type: ignore[arg-type]
    nursery.start_soon(operator.run)
    driver = InProcessPedDriver(ped, nursery)
    await driver.open()
    return driver


async def test_auto_reads_m_of_n_with_pin(ring: Ring, nursery: trio.Nursery) -> None:
    driver = await start(ring, nursery)
    assert driver.info is not None and driver.info.serial == "T-1"
    events: list[DeviceEvent] = []
    driver.on_event = events.append
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-1") as ped:
        result = await ped.read_secret(Color.BLUE, label="HSM SO")
        assert result.keyset_id == ring.so_keyset
        assert (result.m, result.n) == (2, 3)
        assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
    await driver.aclose()
    kinds = [e.kind for e in events]
    assert EventKind.HANDSHAKE in kinds
    reads = [e for e in events if e.kind is EventKind.KEY_READ and e.color == Color.BLUE]
    assert len(reads) == 2 and all(e.keyset == ring.so_keyset.hex() for e in reads)
    assert any(e.kind is EventKind.PIN_ENTERED for e in events)
    finished = [e for e in events if e.kind is EventKind.OP_FINISHED]
    assert [e.outcome for e in finished] == ["ok", "ok"]
    # No event carries anything secret.
    secret_hexes = {ring.rpv.hex(), ring.so_secret.hex(), ring.so_pin}
    for e in events:
        text = repr(e) + e.describe()
        assert not any(s in text for s in secret_hexes)


async def test_auto_imprints_m_of_n_with_pin_and_duplicates(
    ring: Ring, nursery: trio.Nursery
) -> None:
    driver = await start(ring, nursery, m=2, n=3, pin=True, duplicates=1)
    transport = await driver.open_session()
    new_secret = bytearray(range(32))
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-1") as ped:
        result = await ped.imprint(
            Color.BLACK, new_secret=bytearray(new_secret), allow_reuse=True, label="CO"
        )
        assert (result.m, result.n, result.pin, result.copies) == (2, 3, True, 6)
        keyset = result.keyset_id
        # The HSM could not compute the PIN-derived secret itself: the PED returned it.
        assert result.secret is not None
        assert hmac.compare_digest(
            bytes(result.secret), bytes(secret_for_hsm(new_secret, keyset, "1357"))
        )
        # Read it back through the PED: 2 of the 6 keys, PIN from the PIN file.
        read = await ped.read_secret(Color.BLACK, keyset, label="CO")
        assert hmac.compare_digest(bytes(read.secret), bytes(result.secret))
    await driver.aclose()
    written = Keyring(ring.path).keys(Color.BLACK, keyset)
    assert len(written) == 6
    assert sorted(e.header.index for e in written) == [1, 1, 2, 2, 3, 3]  # type: ignore[union-attr]
    by_index = {e.header.index: e.path for e in written}  # type: ignore[union-attr]
    shares = [load_image(by_index[i]).share() for i in (1, 3)]
    assert bytes(combine(shares)) == bytes(new_secret)


async def test_auto_reuses_an_existing_keyset_and_duplicates_it(
    ring: Ring, nursery: trio.Nursery
) -> None:
    driver = await start(ring, nursery, reuse=True, duplicates=1)
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-2") as ped:
        result = await ped.imprint(
            Color.BLUE, new_secret=bytearray(32), allow_reuse=True, label="HSM SO"
        )
        assert result.reused and result.keyset_id == ring.so_keyset
        assert (result.m, result.n, result.pin, result.copies) == (2, 3, True, 2)
        assert result.secret is not None
        assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
    await driver.aclose()
    assert len(Keyring(ring.path).keys(Color.BLUE, ring.so_keyset)) == 5  # 3 + 2 copies


async def test_auto_without_the_key_cancels(ring: Ring, nursery: trio.Nursery) -> None:
    driver = await start(ring, nursery)
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-3") as ped:
        with pytest.raises(OperationCancelled):
            await ped.read_secret(Color.PURPLE)
    await driver.aclose()


async def test_a_bare_keyring_of_blanks_imprints_with_defaults(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    ring_dir = tmp_path / "bare"
    Keyring(ring_dir).add_blanks(1)
    rpv = bytes(range(32))
    # The orange key is what this HSM imprints first, over a local cable in a demo; here we
    # make one with keys directly, then let the auto operator imprint a black key on a blank.
    Keyring(ring_dir).imprint(new_keyset(Color.ORANGE, "RPV", secret=rpv), create=True)
    ped_device = EmulatedPed(ring_dir)
    nursery.start_soon(AutoOperator(ped_device.panel, ring_dir).run)
    driver = InProcessPedDriver(ped_device, nursery)
    await driver.open()
    async with open_ped_session(await driver.open_session(), rpv=rpv, hsm_serial="H") as ped:
        result = await ped.imprint(Color.BLACK, new_secret=bytearray(b"s" * 32), label="CO")
        assert (result.m, result.n, result.pin, result.copies) == (1, 1, False, 1)
        assert result.secret is None  # the HSM knows the secret it sent
        read = await ped.read_secret(Color.BLACK, result.keyset_id)
        assert bytes(read.secret) == b"s" * 32
    await driver.aclose()


async def test_operations_of_two_sessions_do_not_interleave(
    ring: Ring, nursery: trio.Nursery
) -> None:
    driver = await start(ring, nursery)
    first, second = await driver.open_session(), await driver.open_session()
    async with open_ped_session(first, rpv=ring.rpv, hsm_serial="A") as a:
        async with open_ped_session(second, rpv=ring.rpv, hsm_serial="B") as b:
            await first.begin_operation()  # A holds the PED (e.g. a long operation)
            with pytest.raises(PedBusy):
                await b.show_message("B wants the PED")
            await first.end_operation()
            await b.show_message("B got it")
            await a.show_message("A again")
    await driver.aclose()


async def test_local_mode_connects_without_an_orange_key_after_yes(
    ring: Ring, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ARCHITECTURE.md: a PED in local mode accepts ped.channel.LOCAL_RPV (public) once the
    # operator allows it on the PED; in remote mode it always reads the orange key.
    import ped.channel

    local_rpv = getattr(ped.channel, "LOCAL_RPV", None) or bytes(32)
    monkeypatch.setattr(ped.channel, "LOCAL_RPV", local_rpv, raising=False)
    ped_device = EmulatedPed(ring.path, mode="local")
    nursery.start_soon(AutoOperator(ped_device.panel, ring.path).run)
    driver = InProcessPedDriver(ped_device, nursery)
    assert (await driver.open()).mode == "local"
    events: list[DeviceEvent] = []
    driver.on_event = events.append
    async with open_ped_session(
        await driver.open_session(), rpv=local_rpv, hsm_serial="L"
    ) as session:
        await session.show_message("local")
    assert not any(e.kind is EventKind.KEY_READ for e in events)  # no orange key read
    assert next(e.detail for e in events if e.kind is EventKind.OP_STARTED) == "local-connect"
    await driver.aclose()

    remote = EmulatedPed(ring.path, mode="remote")
    nursery.start_soon(AutoOperator(remote.panel, ring.path).run)
    driver = InProcessPedDriver(remote, nursery)
    await driver.open()
    from ped.channel import RpvMismatch

    with pytest.raises(RpvMismatch):
        async with open_ped_session(await driver.open_session(), rpv=local_rpv, hsm_serial="L"):
            pass
    await driver.aclose()


async def test_imprint_label_is_made_fit_for_a_key_image(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # The HSM's label is only prompt text: an empty one becomes the role's name and a
    # long one is cut to what a key image holds, instead of failing the imprint.
    ring_dir = tmp_path / "labels"
    Keyring(ring_dir).add_blanks(2)
    rpv = bytes(range(32))
    Keyring(ring_dir).imprint(new_keyset(Color.ORANGE, "RPV", secret=rpv), create=True)
    ped_device = EmulatedPed(ring_dir)
    nursery.start_soon(AutoOperator(ped_device.panel, ring_dir).run)
    driver = InProcessPedDriver(ped_device, nursery)
    await driver.open()
    async with open_ped_session(await driver.open_session(), rpv=rpv, hsm_serial="H") as ped:
        empty = await ped.imprint(Color.RED, new_secret=bytearray(b"r" * 32))
        long = await ped.imprint(Color.GRAY, new_secret=bytearray(b"g" * 32), label="é" * 60)
    await driver.aclose()
    labels = {
        h.color: h.label
        for h in (e.header for e in Keyring(ring_dir).entries())
        if h is not None and not h.blank
    }
    assert labels[Color.RED] == Color.RED.role
    assert labels[Color.GRAY] == "é" * 32  # 64 bytes of UTF-8, cut on a character boundary
    assert empty.keyset_id != long.keyset_id


class CountingDriver(InProcessPedDriver):
    """Counts the PED's writes (each `send_all` on its end of the stream)."""

    writes = 0

    async def connect_stream(self) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        original = theirs.send_stream.send_all

        async def send_all(data: bytes | bytearray | memoryview) -> None:
            self.writes += 1
            await original(data)

        theirs.send_stream.send_all = send_all  # type: ignore[method-assign]
        self._nursery.start_soon(self.ped.serve, theirs)
        return ours


async def test_a_login_is_one_write_with_its_events_in_order(
    ring: Ring, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pedemu")
    ped_device = EmulatedPed(ring.path)
    nursery.start_soon(AutoOperator(ped_device.panel, ring.path).run)
    driver = CountingDriver(ped_device, nursery)
    await driver.open()
    events: list[DeviceEvent] = []
    driver.on_event = events.append
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        for _ in range(3):
            del events[:]
            before = driver.writes
            result = await ped.read_secret(Color.RED)  # 1 of 1, no PIN: nobody waits
            assert (result.m, result.n) == (1, 1)
            # The operation's events and the answer left the PED in one write, in the
            # order they happened, so the host had the events before the answer.
            assert driver.writes == before + 1
            kinds = [e.kind for e in events]
            assert kinds == [EventKind.OP_STARTED, EventKind.KEY_READ, EventKind.OP_FINISHED]
            assert events[-1].outcome == "ok"
    await driver.aclose()
    # The host logs every event; pedemu logs a login nobody waited for only at debug level.
    assert "op-started" not in caplog.text and "key-read" not in caplog.text
    assert "handshake orange" in caplog.text


class StallingDriver(InProcessPedDriver):
    """The PED's writes block for good once `stall` is set (a host that stops reading)."""

    stall = False

    async def connect_stream(self) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        original = theirs.send_stream.send_all

        async def send_all(data: bytes | bytearray | memoryview) -> None:
            if self.stall:
                await trio.sleep_forever()
            await original(data)

        theirs.send_stream.send_all = send_all  # type: ignore[method-assign]
        self._nursery.start_soon(self.ped.serve, theirs)
        return ours


async def test_an_answer_that_cannot_be_written_closes_the_connection(
    ring: Ring, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ped_device = EmulatedPed(ring.path)
    nursery.start_soon(AutoOperator(ped_device.panel, ring.path).run)
    driver = StallingDriver(ped_device, nursery)
    await driver.open()
    with pytest.raises(DeviceGone):
        async with open_ped_session(
            await driver.open_session(), rpv=ring.rpv, hsm_serial="H"
        ) as ped:
            driver.stall = True
            await ped.read_secret(Color.RED)
    # The operation's task gave up writing its answer (SEND_TIMEOUT) and hung up.
    with trio.fail_after(SEND_TIMEOUT * 2):
        while ped_device.connected:
            await trio.sleep(1)
    assert not ped_device.engine.busy
