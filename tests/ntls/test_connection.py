"""The client protocol's state machine: transitions, request ids, limits, versions, EOF."""

from __future__ import annotations

import pytest

from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.ntls import messages as m
from ped.ntls.connection import (
    TRANSITIONS,
    ConnectionLost,
    NtlsConnection,
    NtlsRole,
    State,
    choose_version,
)
from ped.ntls.frames import decode, encode
from ped.pkcs11.constants import CKR, CKU
from ped.pkcs11.token import PartitionInfo
from ped.wire.framing import NEED_DATA


def pair(max_in_flight: int = 4, version: int = 1) -> tuple[NtlsConnection, NtlsConnection]:
    client, server = NtlsConnection(NtlsRole.CLIENT), NtlsConnection(NtlsRole.SERVER)
    deliver(client, server, m.Hello())
    deliver(server, client, m.Welcome(version, max_in_flight, "150001"))
    return client, server


def deliver(sender: NtlsConnection, receiver: NtlsConnection, message: m.Message) -> object:
    receiver.receive_data(sender.send(message))
    return receiver.next_event()


def test_open_request_answer_close() -> None:
    client, server = pair()
    assert client.state is server.state is State.OPEN
    assert client.version == server.version == 1
    rid = client.next_request_id()
    assert deliver(client, server, m.ListPartitions(rid)) == m.ListPartitions(rid)
    assert server.in_flight == {rid: m.Op.LIST_PARTITIONS}
    assert deliver(server, client, m.Partitions(rid, ())) == m.Partitions(rid, ())
    assert client.in_flight == server.in_flight == {}
    assert deliver(client, server, m.Close(m.NtlsCloseCode.NORMAL)) == m.Close(
        m.NtlsCloseCode.NORMAL
    )
    assert server.state is State.CLOSED
    server.receive_data(b"")
    assert server.next_event() == ConnectionLost(clean=True)


def test_answers_in_any_order_and_failures() -> None:
    client, server = pair()
    a, b = client.next_request_id(), client.next_request_id()
    deliver(client, server, m.GenerateRandom(a, 1, 8))
    deliver(client, server, m.Login(b, 1, CKU.USER, bytearray(b"x")))
    assert deliver(server, client, m.Failure(b, CKR.PIN_INCORRECT, "no")) == m.Failure(
        b, CKR.PIN_INCORRECT, "no"
    )
    assert deliver(server, client, m.Output(a, m.Op.GENERATE_RANDOM, b"12345678")) is not None
    assert client.in_flight == {}


def test_local_errors() -> None:
    client = NtlsConnection(NtlsRole.CLIENT)
    with pytest.raises(LocalProtocolError, match="cannot send REQUEST in state start"):
        client.send(m.ListPartitions(1))
    client, server = pair(max_in_flight=2)
    client.send(m.ListPartitions(1))
    with pytest.raises(LocalProtocolError, match="already in flight"):
        client.send(m.ListPartitions(1))
    client.send(m.ListPartitions(2))
    assert not client.can_request
    with pytest.raises(LocalProtocolError, match="2 requests are already in flight"):
        client.send(m.ListPartitions(3))
    with pytest.raises(LocalProtocolError, match="not waiting"):
        server.send(m.Done(9, m.Op.LOGIN))
    server.receive_data(m_encode(m.ListPartitions(5)))
    server.next_event()
    with pytest.raises(LocalProtocolError, match="LIST_PARTITIONS"):
        server.send(m.Done(5, m.Op.LOGIN))
    with pytest.raises(LocalProtocolError):
        client.send(m.Welcome(1, 1, "x"))


def m_encode(message: m.Message) -> bytearray:
    return encode(message)


@pytest.mark.parametrize(
    ("receiver_role", "frames", "match"),
    [
        (NtlsRole.SERVER, [m.ListPartitions(1)], "sent REQUEST in state start"),
        (NtlsRole.SERVER, [m.Hello(), m.Hello()], "sent HELLO in state hello"),
        (NtlsRole.CLIENT, [m.Partitions(1, ())], "sent RESULT in state start"),
    ],
)
def test_remote_errors_out_of_place(
    receiver_role: NtlsRole, frames: list[m.Message], match: str
) -> None:
    conn = NtlsConnection(receiver_role)
    with pytest.raises(RemoteProtocolError, match=match):
        for frame in frames:
            conn.receive_data(m_encode(frame))
            conn.next_event()
    assert conn.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_remote_errors_request_ids() -> None:
    client, server = pair(max_in_flight=2)
    server.receive_data(m_encode(m.ListPartitions(1)) + m_encode(m.ListPartitions(1)))
    server.next_event()
    with pytest.raises(RemoteProtocolError, match="already in flight"):
        server.next_event()
    client, server = pair(max_in_flight=2)
    for rid in (1, 2, 3):
        server.receive_data(m_encode(m.ListPartitions(rid)))
    server.next_event()
    server.next_event()
    with pytest.raises(RemoteProtocolError, match="more than 2 requests"):
        server.next_event()
    client, server = pair()
    client.receive_data(m_encode(m.Done(7, m.Op.LOGIN)))
    with pytest.raises(RemoteProtocolError, match="not in flight"):
        client.next_event()
    client, server = pair()
    client.send(m.ListPartitions(1))
    client.receive_data(m_encode(m.Done(1, m.Op.LOGIN)))
    with pytest.raises(RemoteProtocolError, match="LIST_PARTITIONS"):
        client.next_event()


def test_versions() -> None:
    assert choose_version(m.Hello(1, 5)) == 2
    assert choose_version(m.Hello(1, 1)) == 1  # an old hsmclient
    assert choose_version(m.Hello(3, 5)) is None
    client = NtlsConnection(NtlsRole.CLIENT)
    client.send(m.Hello())
    client.receive_data(m_encode(m.Welcome(3, 4, "150001")))
    with pytest.raises(RemoteProtocolError, match="upgrade the older side"):
        client.next_event()
    client = NtlsConnection(NtlsRole.CLIENT)
    client.send(m.Hello())
    assert deliver_raw(client, m.Refused(m.NtlsRefuseCode.UNSUPPORTED_VERSION, "no")) == m.Refused(
        m.NtlsRefuseCode.UNSUPPORTED_VERSION, "no"
    )
    assert client.state is State.CLOSED


AUTO = (PartitionInfo("1500010001", "app", True, True, auto_activation=True),)


def test_auto_activation_travels_on_version_2_only() -> None:
    client, server = pair(version=2)
    assert client.version == server.version == 2
    deliver(client, server, m.ListPartitions(1))
    assert deliver(server, client, m.Partitions(1, AUTO)) == m.Partitions(1, AUTO)


def test_an_old_hsmclient_keeps_working_and_never_sees_bit_2() -> None:
    client, server = NtlsConnection(NtlsRole.CLIENT), NtlsConnection(NtlsRole.SERVER)
    hello = deliver(client, server, m.Hello(1, 1, "hsmclient 1"))
    assert isinstance(hello, m.Hello) and choose_version(hello) == 1
    deliver(server, client, m.Welcome(1, 4, "150001"))
    deliver(client, server, m.ListPartitions(1))
    wire = server.send(m.Partitions(1, AUTO))
    assert wire.endswith(b"app\x03")  # exactly what a version-1 pedhsm wrote
    assert decode(m.FrameType.RESULT, wire[8:], 1) == m.Partitions(
        1, (PartitionInfo("1500010001", "app", True, True),)
    )  # an old reader (flags <= 3) takes it


def test_an_old_pedhsm_keeps_working() -> None:
    client = NtlsConnection(NtlsRole.CLIENT)
    client.send(m.Hello())
    assert deliver_raw(client, m.Welcome(1, 4, "150001")) == m.Welcome(1, 4, "150001")
    client.send(m.ListPartitions(1))
    old = m.Partitions(1, (PartitionInfo("1500010001", "app", True, True),))
    assert deliver_raw(client, old) == old  # written as version 1 writes it
    client.send(m.ListPartitions(2))
    client.receive_data(encode(m.Partitions(2, AUTO), 2))  # bit 2 on a version-1 connection
    with pytest.raises(RemoteProtocolError, match="partition flags"):
        client.next_event()


def deliver_raw(conn: NtlsConnection, message: m.Message) -> object:
    conn.receive_data(m_encode(message))
    return conn.next_event()


def test_byte_at_a_time_and_dropped_stream() -> None:
    client, server = pair()
    wire = client.send(m.Login(client.next_request_id(), 3, CKU.USER, bytearray(b"secret")))
    for i in range(len(wire) - 1):
        server.receive_data(wire[i : i + 1])
        assert server.next_event() is NEED_DATA
    server.receive_data(wire[-1:])
    event = server.next_event()
    assert isinstance(event, m.Login) and event.pin == bytearray(b"secret")
    client.receive_data(b"")
    assert client.next_event() == ConnectionLost(clean=False)
    server.receive_data(wire[:5])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="unfinished frame"):
        server.next_event()


def test_transitions_table_covers_both_roles() -> None:
    assert {role for role, *_ in TRANSITIONS} == set(NtlsRole)
    closes = [k for k, after in TRANSITIONS.items() if after is State.CLOSED]
    assert len(closes) >= 10
