"""A peer offering an older or unknown protocol version is refused: no downgrade anywhere.

Three places carry a version: the frame envelope (every hop), the end-to-end cipher
suite in HANDSHAKE_INIT, and the link hello between pedclient and pedserver.  Each is
checked here from the receiving side, for an older (0) and a newer (2 or 3, 255) value,
through the same sans-IO objects the daemons use.  The device transport's own hello is
covered by ``tests/ped/device``.

The suite has two accepted values: 2 (padded SEALED frames, what an HSM sends) and 1
(unpadded, what HSMs built before suite 2 send; a PED still serves them).  A relay that
rewrites 2 into 1 breaks the handshake (the suite is in the Noise prologue), and an HSM
refused by an older PED does not fall back to 1.
"""

from __future__ import annotations

import pytest

from ped.channel import (
    SUITE_NNPSK0_PADDED,
    SUITE_NNPSK0_V1,
    RefuseReason,
    RpvMismatch,
    UnsupportedSuite,
)
from ped.channel.handshake import HandshakeRefusal
from ped.errors import FieldOutOfRange, RemoteProtocolError, UnsupportedVersion
from ped.link import (
    ConnectRequest,
    Hop,
    LinkConnection,
    LinkHello,
    LinkWelcome,
    Side,
    negotiate_version,
)
from ped.link.messages import LINK_VERSION_MAX, LINK_VERSION_MIN
from ped.ops import HsmSideState, Unsupported
from ped.ops import events as ev
from ped.ops.messages import ShowMessage
from ped.wire.codec import Writer
from ped.wire.framing import WIRE_VERSION, Frame, FrameDecoder, encode_frame
from ped.wire.types import E2E_TYPES, E2EType

from ..ped.ops.helpers import RPV, deliver, make_pair

OTHER_VERSIONS = [0, WIRE_VERSION + 1, 255]


def _restamp(data: bytes, version: int) -> bytes:
    return data[:2] + bytes([version]) + data[3:]


def _genuine_init() -> bytes:
    hsm, _ = make_pair()
    return encode_frame(hsm.start_handshake())


def _hop_receivers() -> dict[str, object]:
    """Every frame decoder a hop uses, as a function that feeds it bytes."""

    def e2e(data: bytes) -> None:  # HSM <-> PED transports, and the PED's device session
        decoder = FrameDecoder(accepted=E2E_TYPES)
        decoder.feed(data)
        decoder.next_frame()

    def link(hop: Hop, side: Side):  # type: ignore[no-untyped-def]
        def feed(data: bytes) -> None:
            connection = LinkConnection(hop, side)
            connection.receive_data(data)
            connection.next_event()

        return feed

    return {
        "e2e": e2e,
        "pedserver<-pedclient": link(Hop.REMOTE, Side.RESPONDER),
        "pedclient<-HSM": link(Hop.LOCAL, Side.RESPONDER),
    }


@pytest.mark.parametrize("hop", sorted(_hop_receivers()))
@pytest.mark.parametrize("version", OTHER_VERSIONS)
def test_frame_envelope_of_another_version_is_refused_on_every_hop(hop: str, version: int) -> None:
    feed = _hop_receivers()[hop]
    if hop == "e2e":
        data = _genuine_init()
    elif hop == "pedserver<-pedclient":
        data = encode_frame(Frame(LinkHello.TYPE, LinkHello().payload()))
    else:
        data = encode_frame(Frame(ConnectRequest.TYPE, ConnectRequest(host="ped1").payload()))
    feed(data)  # the genuine frame passes
    with pytest.raises(UnsupportedVersion) as excinfo:
        feed(_restamp(data, version))  # type: ignore[operator]
    assert "upgrade" in str(excinfo.value)  # says what to do


@pytest.mark.parametrize("suite", [0, 3, 255])
def test_handshake_with_an_unknown_suite_is_refused_by_the_ped_and_reported_to_the_hsm(
    suite: int,
) -> None:
    hsm, ped = make_pair()
    init = hsm.start_handshake()
    forged = Frame(E2EType.HANDSHAKE_INIT, bytes([suite]) + init.payload[1:])
    (failed,) = ped.receive_frame(forged)
    assert isinstance(failed, ev.SessionFailed) and isinstance(failed.error, UnsupportedSuite)
    (refusal,) = ped.frames_to_send()
    assert HandshakeRefusal.from_frame(refusal).reason is RefuseReason.UNSUPPORTED
    assert f"cipher suite {suite}" in HandshakeRefusal.from_frame(refusal).detail
    with pytest.raises(Unsupported):
        deliver(hsm, [refusal])


def test_a_relay_rewriting_suite_2_into_1_breaks_the_handshake_instead() -> None:
    hsm, ped = make_pair()
    init = hsm.start_handshake()
    assert init.payload[0] == SUITE_NNPSK0_PADDED
    ped.receive_frame(Frame(E2EType.HANDSHAKE_INIT, bytes([SUITE_NNPSK0_V1]) + init.payload[1:]))
    failed = ped.supply_rpv(RPV)  # the right orange key: only the suite byte differs
    assert isinstance(failed, ev.SessionFailed) and isinstance(failed.error, RpvMismatch)
    with pytest.raises(RpvMismatch):
        deliver(hsm, ped.frames_to_send())


def test_an_hsm_refused_by_a_ped_older_than_suite_2_says_so_and_does_not_fall_back() -> None:
    hsm, _ = make_pair()
    init = hsm.start_handshake()
    # What a PED that knows only suite 1 answers (it read suite 2 as a malformed init).
    old_ped = HandshakeRefusal(RefuseReason.UNSUPPORTED, "malformed handshake").to_frame()
    with pytest.raises(Unsupported) as excinfo:
        deliver(hsm, [old_ped])
    assert "suite 2" in str(excinfo.value) and "update the PED" in str(excinfo.value)
    assert hsm.state is HsmSideState.FAILED  # no second HANDSHAKE_INIT, with suite 1 or any
    assert init.payload[0] == SUITE_NNPSK0_PADDED


def test_an_hsm_of_suite_1_is_still_served_unpadded() -> None:
    hsm, ped = make_pair(suite=SUITE_NNPSK0_V1)
    ped.receive_frame(hsm.start_handshake())
    ped.supply_rpv(RPV)
    deliver(hsm, ped.frames_to_send())
    request = hsm.show_message("hi")
    assert len(request.payload) == len(ShowMessage(1, "hi").encode()) + 16
    (shown,) = ped.receive_frame(request)
    assert isinstance(shown, ev.ShowRequested)
    ped.answer_show()
    (done,) = deliver(hsm, ped.frames_to_send())
    assert isinstance(done, ev.OperationSucceeded)


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 1)])
def test_link_hello_claiming_version_zero_is_malformed(low: int, high: int) -> None:
    payload = Writer().u8(low).u8(high).u32(1800).text16("x").getvalue()
    connection = LinkConnection(Hop.REMOTE, Side.RESPONDER)
    connection.receive_data(encode_frame(Frame(LinkHello.TYPE, payload)))
    with pytest.raises(FieldOutOfRange):
        connection.next_event()


@pytest.mark.parametrize(
    ("low", "high", "chosen"),
    [
        (LINK_VERSION_MAX + 1, 255, None),  # only newer versions: nothing in common
        (LINK_VERSION_MIN, 255, LINK_VERSION_MAX),  # a newer peer still speaks ours
        (LINK_VERSION_MIN, LINK_VERSION_MIN, LINK_VERSION_MIN),
    ],
)
def test_link_version_negotiation_never_goes_below_our_minimum(
    low: int, high: int, chosen: int | None
) -> None:
    assert negotiate_version(LinkHello(low, high)) == chosen
    # A server whose minimum is above the client's whole range refuses it.
    assert negotiate_version(LinkHello(1, 1), low=2, high=3) is None


@pytest.mark.parametrize("offered", [(1, 1), (2, 3)])
@pytest.mark.parametrize("chosen", [0, 1, 2, 4, 255])
def test_pedclient_refuses_a_welcome_outside_what_it_offered(
    offered: tuple[int, int], chosen: int
) -> None:
    client = LinkConnection(Hop.REMOTE, Side.INITIATOR, versions=offered)
    client.send(LinkHello(*offered))
    welcome = Writer().u8(chosen).u32(1800).u16(30).text16("srv")
    welcome.u8(0).text16("").text16("").text16("").text16("")
    client.receive_data(encode_frame(Frame(LinkWelcome.TYPE, welcome.getvalue())))
    if offered[0] <= chosen <= offered[1]:
        assert isinstance(client.next_event(), LinkWelcome)
        return
    with pytest.raises(RemoteProtocolError) as excinfo:  # downgrade or unknown: refused
        client.next_event()
    assert chosen == 0 or "downgrade" in str(excinfo.value)
