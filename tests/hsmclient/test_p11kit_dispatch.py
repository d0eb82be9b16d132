"""The dispatcher's PKCS#11 state: calls out of order, multi-part operations gathered into
one backend call, length queries, searches, every call id answered, malformed requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsmclient.p11kit.attributes import write_mechanism, write_template
from hsmclient.p11kit.buffer import Reader, Writer
from hsmclient.p11kit.calls import CALL_IDS, CALLS, error_response, request_writer
from hsmclient.p11kit.dispatch import HANDSHAKE, SERVED_CALLS, Dispatcher
from ped.pkcs11.constants import CKA, CKM, CKO, CKR, CKU
from ped.pkcs11.token import Attribute, GcmParams, Mechanism
from pedtools.fakes.softtoken import P256_PARAMS, SoftBackend
from tests.hsmclient.test_p11kit_vectors import REQUEST_FRAMES, body

PIN = b"1234"


class Client:
    """Writes requests as p11-kit-client does and reads the answers."""

    def __init__(self, backend: SoftBackend, version: int = 0) -> None:
        self.backend = backend
        self.version = version
        self.dispatcher: Dispatcher | None = None

    async def start(self) -> Client:
        self.dispatcher = Dispatcher(await self.backend.connect(), self.version)
        return self

    async def call(self, name: str, *fields: tuple[str, object]) -> Reader:
        """Send one call; return a reader on the answer's fields (raise on an error answer)."""
        rv, reader = await self.try_call(name, *fields)
        assert rv == CKR.OK, f"{name}: {CKR(rv).name}"
        return reader

    async def try_call(self, name: str, *fields: tuple[str, object]) -> tuple[int, Reader]:
        writer = request_writer(name)
        for kind, value in fields:
            if kind == "u":
                assert isinstance(value, int)
                writer.u64(value)
            elif kind == "y":
                assert isinstance(value, int)
                writer.byte(value)
            elif kind == "ay":
                assert value is None or isinstance(value, bytes)
                writer.flagged_array(value)
            elif kind == "f":
                assert isinstance(value, int)
                writer.u32(value)
            elif kind == "M":
                assert value is None or isinstance(value, Mechanism)
                write_mechanism(writer, value, self.version)
            elif kind == "aA":
                assert isinstance(value, list)
                write_template(writer, value)
        assert self.dispatcher is not None
        answer = await self.dispatcher.handle(writer.getvalue())
        reader = Reader(answer)
        call_id = reader.u32()
        signature = reader.array()
        if call_id == 0:
            assert signature == b"u"
            return reader.u64(), reader
        assert call_id == CALL_IDS[name]
        return CKR.OK, reader

    async def session(self, *, login: bool = True) -> int:
        await self.call("C_Initialize", ("ay", HANDSHAKE), ("y", 0), ("ay", None))
        session = (await self.call("C_OpenSession", ("u", 0), ("u", 6))).u64()
        if login:
            await self.call("C_Login", ("u", session), ("u", CKU.USER), ("ay", PIN))
        return session

    async def ec_key(self, session: int) -> tuple[int, int]:
        reader = await self.call(
            "C_GenerateKeyPair", ("u", session), ("M", Mechanism(CKM.EC_KEY_PAIR_GEN)),
            ("aA", [Attribute(CKA.EC_PARAMS, P256_PARAMS), Attribute(CKA.LABEL, b"k")]),
            ("aA", [Attribute(CKA.LABEL, b"k")]),
        )  # fmt: skip
        return reader.u64(), reader.u64()


@pytest.fixture
def backend() -> SoftBackend:
    return SoftBackend([("app", "1001", PIN.decode())])


async def test_sign_without_sign_init_is_operation_not_initialized(backend: SoftBackend) -> None:
    client = await Client(backend).start()
    session = await client.session()
    rv, _ = await client.try_call("C_Sign", ("u", session), ("ay", b"x" * 32), ("f", 64))
    assert rv == CKR.OPERATION_NOT_INITIALIZED
    rv, _ = await client.try_call("C_SignFinal", ("u", session), ("f", 64))
    assert rv == CKR.OPERATION_NOT_INITIALIZED
    rv, _ = await client.try_call("C_FindObjects", ("u", session), ("f", 10))
    assert rv == CKR.OPERATION_NOT_INITIALIZED
    assert "sign" not in backend.calls


async def test_a_second_sign_init_is_operation_active_and_a_null_mechanism_cancels(
    backend: SoftBackend,
) -> None:
    client = await Client(backend).start()
    session = await client.session()
    _, private = await client.ec_key(session)
    ecdsa = Mechanism(CKM.ECDSA)
    await client.call("C_SignInit", ("u", session), ("M", ecdsa), ("u", private))
    rv, _ = await client.try_call("C_SignInit", ("u", session), ("M", ecdsa), ("u", private))
    assert rv == CKR.OPERATION_ACTIVE
    await client.call("C_SignInit", ("u", session), ("M", None), ("u", 0))  # cancel
    await client.call("C_SignInit", ("u", session), ("M", ecdsa), ("u", private))


async def test_multi_part_sign_is_one_backend_call_and_verifies(backend: SoftBackend) -> None:
    client = await Client(backend).start()
    session = await client.session()
    public, private = await client.ec_key(session)
    mechanism = Mechanism(CKM.ECDSA)
    await client.call("C_SignInit", ("u", session), ("M", mechanism), ("u", private))
    for part in (b"a" * 10, b"b" * 12, b"c" * 10):
        await client.call("C_SignUpdate", ("u", session), ("ay", part))
    rv, _ = await client.try_call("C_Sign", ("u", session), ("ay", b"x"), ("f", 64))
    assert rv == CKR.OPERATION_ACTIVE  # a multi-part operation ends with C_SignFinal
    signature = (await client.call("C_SignFinal", ("u", session), ("f", 64))).flagged_array()
    assert signature is not None and len(signature) == 64
    assert backend.calls.count("sign") == 1
    await client.call("C_VerifyInit", ("u", session), ("M", mechanism), ("u", public))
    await client.call("C_VerifyUpdate", ("u", session), ("ay", b"a" * 10 + b"b" * 12))
    await client.call("C_VerifyUpdate", ("u", session), ("ay", b"c" * 10))
    await client.call("C_VerifyFinal", ("u", session), ("ay", signature))
    await client.call("C_VerifyInit", ("u", session), ("M", mechanism), ("u", public))
    rv, _ = await client.try_call("C_Verify", ("u", session), ("ay", b"other"), ("ay", signature))
    assert rv == CKR.SIGNATURE_INVALID
    rv, _ = await client.try_call("C_Verify", ("u", session), ("ay", b"x"), ("ay", signature))
    assert rv == CKR.OPERATION_NOT_INITIALIZED  # the failed verify ended the operation


async def test_length_query_then_sign_is_one_signature(backend: SoftBackend) -> None:
    client = await Client(backend).start()
    session = await client.session()
    _, private = await client.ec_key(session)
    await client.call("C_SignInit", ("u", session), ("M", Mechanism(CKM.ECDSA)), ("u", private))
    digest = b"\x11" * 32
    reader = await client.call("C_Sign", ("u", session), ("ay", digest), ("f", 0))
    assert (reader.byte(), reader.u32()) == (0, 64)  # no buffer: only the length
    reader = await client.call("C_Sign", ("u", session), ("ay", digest), ("f", 10))
    assert (reader.byte(), reader.u32()) == (0, 64)  # too small: still the length, still active
    signature = await client.call("C_Sign", ("u", session), ("ay", digest), ("f", 64))
    assert len(signature.flagged_array() or b"") == 64
    assert backend.calls.count("sign") == 1
    rv, _ = await client.try_call("C_Sign", ("u", session), ("ay", digest), ("f", 64))
    assert rv == CKR.OPERATION_NOT_INITIALIZED  # delivered: the operation ended


@pytest.mark.parametrize("version", [1, 2])
async def test_aes_gcm_multi_part_round_trip_in_versions_1_and_2(
    backend: SoftBackend, version: int
) -> None:
    client = await Client(backend, version).start()
    session = await client.session()
    key = (await client.call(
        "C_GenerateKey", ("u", session), ("M", Mechanism(CKM.AES_KEY_GEN)),
        ("aA", [Attribute(CKA.VALUE_LEN, 32)]),
    )).u64()  # fmt: skip
    gcm = Mechanism(CKM.AES_GCM, GcmParams(iv=b"\x01" * 12, aad=b"header"))
    await client.call("C_EncryptInit", ("u", session), ("M", gcm), ("u", key))
    out = await client.call("C_EncryptUpdate", ("u", session), ("ay", b"hello "), ("f", 100))
    assert out.flagged_array() == b""  # gathered: the output comes at C_EncryptFinal
    await client.call("C_EncryptUpdate", ("u", session), ("ay", b"world"), ("f", 100))
    sealed = (await client.call("C_EncryptFinal", ("u", session), ("f", 100))).flagged_array()
    assert sealed is not None and len(sealed) == 11 + 16
    await client.call("C_DecryptInit", ("u", session), ("M", gcm), ("u", key))
    opened = await client.call("C_Decrypt", ("u", session), ("ay", sealed), ("f", 100))
    assert opened.flagged_array() == b"hello world"
    assert backend.calls.count("encrypt") == 1


async def test_find_objects_hands_out_slices(backend: SoftBackend) -> None:
    client = await Client(backend).start()
    session = await client.session()
    for _ in range(3):
        await client.ec_key(session)
    template = [Attribute(CKA.CLASS, CKO.PRIVATE_KEY)]
    await client.call("C_FindObjectsInit", ("u", session), ("aA", template))
    rv, _ = await client.try_call("C_FindObjectsInit", ("u", session), ("aA", template))
    assert rv == CKR.OPERATION_ACTIVE
    found = []
    while handles := (await client.call("C_FindObjects", ("u", session), ("f", 2))).ulong_array():
        found += handles
    assert len(found) == 3
    await client.call("C_FindObjectsFinal", ("u", session))
    rv, _ = await client.try_call("C_FindObjectsFinal", ("u", session))
    assert rv == CKR.OPERATION_NOT_INITIALIZED


async def test_zero_random_bytes_succeed(backend: SoftBackend) -> None:
    client = await Client(backend).start()
    session = await client.session(login=False)
    assert (await client.call("C_GenerateRandom", ("u", session), ("f", 0))).flagged_array() == b""
    data = (await client.call("C_GenerateRandom", ("u", session), ("f", 32))).flagged_array()
    assert data is not None and len(data) == 32


async def test_login_state_belongs_to_the_application(backend: SoftBackend) -> None:
    first = await Client(backend).start()
    session = await first.session()
    second_session = (await first.call("C_OpenSession", ("u", 0), ("u", 4))).u64()
    rv, _ = await first.try_call("C_Login", ("u", second_session), ("u", CKU.USER), ("ay", PIN))
    assert rv == CKR.USER_ALREADY_LOGGED_IN
    other = await Client(backend).start()
    other_session = await other.session(login=False)
    rv, _ = await other.try_call("C_Login", ("u", other_session), ("u", CKU.USER), ("ay", b"no"))
    assert rv == CKR.PIN_INCORRECT
    rv, _ = await other.try_call("C_CloseSession", ("u", session))
    assert rv == CKR.SESSION_HANDLE_INVALID  # another application's session


async def test_the_pin_reaches_the_application_in_a_bytearray_that_is_wiped() -> None:
    seen: list[bytearray] = []

    class Recording(SoftBackend):
        async def connect(self):  # type: ignore[no-untyped-def]
            app = await super().connect()
            login = app.login

            async def record(session: int, user_type: int, pin: bytearray) -> None:
                assert isinstance(pin, bytearray) and pin == bytearray(PIN)
                seen.append(pin)
                await login(session, user_type, pin)

            app.login = record  # type: ignore[method-assign]
            return app

    client = await Client(Recording([("app", "1001", PIN.decode())])).start()
    await client.session()
    assert seen and seen[0] == bytearray(len(PIN))


@pytest.mark.parametrize("call_id", sorted(i for i in CALLS if CALLS[i].name not in SERVED_CALLS))
async def test_every_other_call_id_is_function_not_supported(
    backend: SoftBackend, call_id: int
) -> None:
    client = await Client(backend).start()
    await client.session()
    writer = Writer()
    writer.u32(call_id)
    writer.array(CALLS[call_id].request.encode())
    assert client.dispatcher is not None
    answer = await client.dispatcher.handle(writer.getvalue())
    assert answer == error_response(CKR.FUNCTION_NOT_SUPPORTED)


@pytest.mark.parametrize("name", ["C_LoginUser", "C_SessionCancel", "C_MessageEncryptInit",
                                  "C_SignMessage", "C_MessageVerifyFinal", "C_InitToken2",
                                  "C_DeriveKey2", "C_WaitForSlotEvent", "C_Digest"])  # fmt: skip
async def test_pkcs11_3_and_unimplemented_calls_are_answered(
    backend: SoftBackend, name: str
) -> None:
    client = await Client(backend).start()
    rv, _ = await client.try_call(name)
    assert rv == CKR.FUNCTION_NOT_SUPPORTED


@pytest.mark.parametrize("call_id", [90, 1000, 2**32 - 1])
async def test_ids_p11kit_does_not_number_are_answered_too(
    backend: SoftBackend, call_id: int
) -> None:
    writer = Writer()
    writer.u32(call_id)
    writer.array(b"u")
    dispatcher = Dispatcher(await backend.connect(), 0)
    assert await dispatcher.handle(writer.getvalue()) == error_response(CKR.FUNCTION_NOT_SUPPORTED)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(REQUEST_FRAMES)), st.data())
async def test_truncated_or_corrupted_requests_get_an_error_answer(
    name: str, data: st.DataObject
) -> None:
    dispatcher = Dispatcher(await SoftBackend().connect(), 0)
    raw = bytearray(body(name))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=3)
    )
    for index, value in flips:
        raw[index] = value
    answer = await dispatcher.handle(bytes(raw[:cut]))  # an answer, never an exception
    reader = Reader(answer)
    call_id = reader.u32()
    signature = reader.array()
    if call_id == 0:
        assert signature == b"u" and reader.u64() in set(CKR) and reader.remaining == 0
    else:
        assert signature == CALLS[call_id].response.encode()


async def test_a_request_with_a_wrong_signature_is_device_error(backend: SoftBackend) -> None:
    writer = Writer()
    writer.u32(CALL_IDS["C_Login"])
    writer.array(b"uu")
    dispatcher = Dispatcher(await backend.connect(), 0)
    assert await dispatcher.handle(writer.getvalue()) == error_response(CKR.DEVICE_ERROR)


async def test_close_all_sessions_and_finalize_close_the_applications_sessions(
    backend: SoftBackend,
) -> None:
    client = await Client(backend).start()
    first = await client.session()
    second = (await client.call("C_OpenSession", ("u", 0), ("u", 4))).u64()
    info = await client.call("C_GetSessionInfo", ("u", second))
    assert (info.u64(), info.u64(), info.u64()) == (0, 1, 4)  # slot 0, RO user functions, serial
    await client.call("C_CloseAllSessions", ("u", 0))
    for session in (first, second):
        rv, _ = await client.try_call("C_GetSessionInfo", ("u", session))
        assert rv == CKR.SESSION_HANDLE_INVALID
    third = await client.session()
    await client.call("C_Finalize")
    assert not backend.sessions
    rv, _ = await client.try_call("C_Logout", ("u", third))
    assert rv == CKR.SESSION_HANDLE_INVALID


async def test_empty_outputs_are_present_empty_arrays_and_end_the_operation(
    backend: SoftBackend,
) -> None:
    client = await Client(backend, version=1).start()
    session = await client.session()
    key = (
        await client.call(
            "C_GenerateKey", ("u", session), ("M", Mechanism(CKM.AES_KEY_GEN)),
            ("aA", [Attribute(CKA.VALUE_LEN, 16)]),
        )
    ).u64()  # fmt: skip
    gcm = Mechanism(CKM.AES_GCM, GcmParams(iv=b"\x02" * 12))
    await client.call("C_EncryptInit", ("u", session), ("M", gcm), ("u", key))
    update = await client.call("C_EncryptUpdate", ("u", session), ("ay", b""), ("f", 0))
    assert (
        update.flagged_array() == b""
    )  # not "length only": that is BUFFER_TOO_SMALL to a caller with a buffer
    tag_only = (await client.call("C_EncryptFinal", ("u", session), ("f", 16))).flagged_array()
    assert tag_only is not None and len(tag_only) == 16
    await client.call("C_DecryptInit", ("u", session), ("M", gcm), ("u", key))
    # nothing to give back: handed over at once even to a size query, the operation ends
    assert (
        await client.call("C_Decrypt", ("u", session), ("ay", tag_only), ("f", 0))
    ).flagged_array() == b""
    rv, _ = await client.try_call("C_Decrypt", ("u", session), ("ay", tag_only), ("f", 0))
    assert rv == CKR.OPERATION_NOT_INITIALIZED


async def test_an_empty_search_or_slot_list_is_a_present_empty_array() -> None:
    client = await Client(SoftBackend([])).start()
    await client.call("C_Initialize", ("ay", HANDSHAKE), ("y", 0), ("ay", None))
    assert (await client.call("C_GetSlotList", ("y", 0), ("f", 0))).ulong_array() == []
