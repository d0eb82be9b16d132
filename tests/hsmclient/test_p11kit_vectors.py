"""Bytes captured from Debian 12's p11-kit-client.so (p11-kit 0.24.1, protocol version 0).

Recorded on a unix-socket tap between ``pkcs11-tool`` (opensc 0.23) and hsmclient's server
over a SoftBackend: ``pkcs11-tool -L``, ``--login --pin 1234 --sign -m ECDSA --label
app-key`` and ``--generate-random 0``.  Each frame is whole: the 12-byte header (call
code, options length, body length), the options (the client sends "client"), the body.
"""

from __future__ import annotations

import pytest

from hsmclient.p11kit.attributes import (
    read_attribute_buffer,
    read_mechanism,
    read_template,
    write_template,
)
from hsmclient.p11kit.buffer import Writer
from hsmclient.p11kit.calls import CALL_IDS, parse_request, request_writer
from hsmclient.p11kit.dispatch import HANDSHAKE, Dispatcher
from hsmclient.p11kit.framing import Frame, RpcConnection, VersionOffered
from ped.pkcs11.constants import CKA, CKM, CKO, CKR, CKU
from ped.pkcs11.token import Attribute, Mechanism
from pedtools.fakes.softtoken import P256_PARAMS, SoftBackend

#: The version byte the client offers, and the one the server answered.
CLIENT_VERSION = bytes.fromhex("00")

REQUEST_FRAMES = {
    "C_Initialize": "000000100000000600000042636c69656e74000000010000000561797961790100000029"
    "505249564154452d474e4f4d452d4b455952494e472d504b435331312d50524f544f434f4c2d562d31"
    "00010000000100",
    "C_GetSlotList": "000000110000000600000010636c69656e7400000004000000037966750000000000",
    "C_GetTokenInfo": "000000140000000600000011636c69656e740000000600000001750000000000000000",
    "C_OpenSession": "00000015000000060000001a636c69656e740000000a00000002757500000000000000"
    "000000000000000004",
    "C_Login": "000000170000000600000025636c69656e74000000120000000475756179000000000000000300"
    "00000000000001010000000431323334",
    "C_FindObjectsInit": "000000180000000600000028636c69656e740000001a00000003756141000000000000"
    "0003000000010000000001000000080000000000000003",
    "C_FindObjects": "000000190000000600000017636c69656e740000001b0000000375667500000000000000"
    "0300000001",
    "C_SignInit": "0000001b0000000600000023636c69656e740000002a00000003754d7500000000000000030000"
    "1041ffffffff0000000000000002",
    "C_GetAttributeValue": "0000001c0000000600000028636c69656e74000000180000000475756641000000"
    "00000000030000000000000002000000010000020200000001",
    "C_Sign": "0000001d000000060000003e636c69656e740000002b000000057561796679000000000000000301"
    "00000020161da6be848139f00fbcf7f8ec8d4ae337370e344c3c84ec87a76f686f643779000002" "00",
    "C_GenerateRandom": "000000150000000600000017636c69656e74000000400000000375667900000000000000"
    "0400000000",
    "C_Finalize": "000000170000000600000008636c69656e740000000200000000",
}

#: What the server answered (whole frames); the client accepted each.
ANSWER_FRAMES = {
    "C_Initialize": "0000001000000000000000080000000100000000",
    "C_GetSlotList": "00000011000000000000000f000000040000000261750000000002",
    "C_Login": "0000001700000000000000080000001200000000",
    # CKA_ALWAYS_AUTHENTICATE asked with a 1-byte buffer: valid, native length 1, false; CKR_OK
    "C_GetAttributeValue": "0000001c0000000000000021000000180000000361417500000001000002020100"
    "000001000000000000000000",
    # zero random bytes: a present, empty array
    "C_GenerateRandom": "00000015000000000000000f000000400000000261790100000000",
}


def frame(name: str, table: dict[str, str] = REQUEST_FRAMES) -> bytes:
    return bytes.fromhex(table[name])


def body(name: str) -> bytes:
    """A captured request's body (header and options stripped)."""
    raw = frame(name)
    options = int.from_bytes(raw[4:8], "big")
    return raw[12 + options :]


# -- the tests of the captured bytes ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(REQUEST_FRAMES))
def test_every_captured_frame_parses_with_its_call_and_signature(name: str) -> None:
    connection = RpcConnection()
    connection.receive_data(CLIENT_VERSION + frame(name))
    assert connection.next_event() == VersionOffered(0)
    event = connection.next_event()
    assert isinstance(event, Frame)
    request = parse_request(event.body)
    assert request.call is not None and request.call.name == name
    assert request.call_id == CALL_IDS[name]


def test_captured_fields_decode_to_what_pkcs11_tool_passed() -> None:
    reader = parse_request(body("C_Initialize")).reader
    assert reader.flagged_array() == HANDSHAKE
    assert reader.byte() == 0  # no reserved string
    assert reader.flagged_array() == b"\x00"

    reader = parse_request(body("C_Login")).reader
    assert (reader.u64(), reader.u64()) == (3, CKU.USER)
    assert reader.secret_array("PIN") == bytearray(b"1234")

    reader = parse_request(body("C_FindObjectsInit")).reader
    assert reader.u64() == 3
    assert read_template(reader) == [Attribute(CKA.CLASS, CKO.PRIVATE_KEY)]

    reader = parse_request(body("C_SignInit")).reader
    assert reader.u64() == 3
    # version 0: the mechanism type, then a NULL parameter array (0xffffffff)
    assert read_mechanism(reader, 0, cancels=True) == Mechanism(CKM.ECDSA)
    assert reader.u64() == 2

    reader = parse_request(body("C_GetAttributeValue")).reader
    assert (reader.u64(), reader.u64()) == (3, 2)
    assert read_attribute_buffer(reader) == [(CKA.ALWAYS_AUTHENTICATE, 1)]

    reader = parse_request(body("C_Sign")).reader
    assert reader.u64() == 3
    assert len(reader.flagged_array() or b"") == 32  # the SHA-256 digest pkcs11-tool read
    assert reader.buffer_size() == 512

    reader = parse_request(body("C_GenerateRandom")).reader
    assert reader.u64() == 4
    assert reader.buffer_size() is None  # zero bytes asked: the room is 0


def test_the_template_encoder_writes_what_the_client_writes() -> None:
    writer = request_writer("C_FindObjectsInit")
    writer.u64(3)
    write_template(writer, [Attribute(CKA.CLASS, CKO.PRIVATE_KEY)])
    assert writer.getvalue() == body("C_FindObjectsInit")


async def _answer(dispatcher: Dispatcher, name: str) -> bytes:
    return RpcConnection.frame(int.from_bytes(frame(name)[:4], "big"),
                               await dispatcher.handle(body(name)))  # fmt: skip


async def _open_sessions(dispatcher: Dispatcher, count: int) -> None:
    for _ in range(count):
        writer = request_writer("C_OpenSession")
        writer.u64(0)
        writer.u64(0x6)  # CKF_SERIAL_SESSION | CKF_RW_SESSION
        await dispatcher.handle(writer.getvalue())


async def test_the_server_answers_the_captured_requests_byte_for_byte() -> None:
    backend = SoftBackend([("app", "1001", "1234"), ("second", "1002", "0000")])
    dispatcher = Dispatcher(await backend.connect(), version=0)
    for name in ("C_Initialize", "C_GetSlotList"):
        assert await _answer(dispatcher, name) == frame(name, ANSWER_FRAMES)
    await _open_sessions(dispatcher, 4)
    assert await _answer(dispatcher, "C_Login") == frame("C_Login", ANSWER_FRAMES)
    keygen = request_writer("C_GenerateKeyPair")
    keygen.u64(3)
    keygen.u32(CKM.EC_KEY_PAIR_GEN)
    keygen.array(None)
    write_template(keygen, [Attribute(CKA.EC_PARAMS, P256_PARAMS), Attribute(CKA.TOKEN, True)])
    write_template(keygen, [Attribute(CKA.TOKEN, True)])
    answer = await dispatcher.handle(keygen.getvalue())
    assert answer.endswith((1).to_bytes(8, "big") + (2).to_bytes(8, "big"))
    for name in ("C_GetAttributeValue", "C_GenerateRandom"):
        assert await _answer(dispatcher, name) == frame(name, ANSWER_FRAMES)


async def test_the_captured_sign_is_answered_with_a_64_byte_signature() -> None:
    backend = SoftBackend([("app", "1001", "1234")])
    dispatcher = Dispatcher(await backend.connect(), version=0)
    await _open_sessions(dispatcher, 3)
    await dispatcher.handle(body("C_Login"))
    keygen = request_writer("C_GenerateKeyPair")
    keygen.u64(3)
    keygen.u32(CKM.EC_KEY_PAIR_GEN)
    keygen.array(None)
    write_template(keygen, [Attribute(CKA.EC_PARAMS, P256_PARAMS)])
    write_template(keygen, [])
    await dispatcher.handle(keygen.getvalue())
    assert await dispatcher.handle(body("C_SignInit")) == bytes.fromhex("0000002a00000000")
    answer = await dispatcher.handle(body("C_Sign"))
    assert answer[:12] == bytes.fromhex("0000002b000000026179") + b"\x01\x00"
    assert int.from_bytes(answer[11:15], "big") == 64 and len(answer) == 15 + 64
    assert backend.calls.count("sign") == 1


def test_the_error_answer_is_call_zero_signature_u_and_the_rv() -> None:
    from hsmclient.p11kit.calls import error_response

    writer = Writer()
    writer.u32(0)
    writer.array(b"u")
    writer.u64(CKR.FUNCTION_NOT_SUPPORTED)
    assert error_response(CKR.FUNCTION_NOT_SUPPORTED) == writer.getvalue()
