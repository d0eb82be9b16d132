"""One application connection's calls: decode each request, call the `Application`, answer.

Every call id p11-kit numbers is answered: those of the contract (`ped.pkcs11.token`)
are served, every other (and an id p11-kit does not number) gets
CKR_FUNCTION_NOT_SUPPORTED, never a dropped connection (the client never reconnects).
A `Pkcs11Error` becomes its return value; a request whose fields do not parse gets
CKR_DEVICE_ERROR (the framing is intact, so the connection goes on).  PINs arrive in a
bytearray handed to `Application.login` and wiped afterwards.
"""

from __future__ import annotations

import logging

from hsmclient.p11kit.attributes import (
    read_attribute_buffer,
    read_mechanism,
    read_template,
    write_attribute_answers,
)
from hsmclient.p11kit.buffer import Reader, Writer
from hsmclient.p11kit.calls import Call, error_response, parse_request, response_writer
from hsmclient.p11kit.crypto import CryptoCalls, Handler
from hsmclient.p11kit.errors import MalformedMessage
from hsmclient.p11kit.operations import ApplicationState
from ped.pkcs11.constants import CKF, CKR
from ped.pkcs11.token import Application, Pkcs11Error, SlotInfo

log = logging.getLogger("hsmclient.p11kit")

#: What p11-kit-client sends in C_Initialize.
HANDSHAKE = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"
CK_UNAVAILABLE = 0xFFFFFFFFFFFFFFFF
CK_EFFECTIVELY_INFINITE = 0
_LIBRARY_VERSION = (0, 1)


def _ids_answer(writer: Writer, ids: list[int], room: int | None) -> None:
    """An "au" answer to a "fu" request: the ids, or their count for a query or small room."""
    if room is None or room < len(ids):
        writer.ulong_array(None, len(ids))
    else:
        writer.ulong_array(ids)


class Dispatcher:
    """Serves one application connection (protocol `version`) with `app`."""

    def __init__(self, app: Application, version: int) -> None:
        self._app = app
        self._version = version
        self.state = ApplicationState()
        self._handlers: dict[str, Handler] = {
            "C_Initialize": self._initialize,
            "C_Finalize": self._finalize,
            "C_GetInfo": self._get_info,
            "C_GetSlotList": self._get_slot_list,
            "C_GetSlotInfo": self._get_slot_info,
            "C_GetTokenInfo": self._get_token_info,
            "C_GetMechanismList": self._get_mechanism_list,
            "C_GetMechanismInfo": self._get_mechanism_info,
            "C_OpenSession": self._open_session,
            "C_CloseSession": self._close_session,
            "C_CloseAllSessions": self._close_all_sessions,
            "C_GetSessionInfo": self._get_session_info,
            "C_Login": self._login,
            "C_Logout": self._logout,
            "C_DestroyObject": self._destroy_object,
            "C_GetAttributeValue": self._get_attribute_value,
            "C_FindObjectsInit": self._find_objects_init,
            "C_FindObjects": self._find_objects,
            "C_FindObjectsFinal": self._find_objects_final,
            "C_GenerateKey": self._generate_key,
            "C_GenerateKeyPair": self._generate_key_pair,
            "C_GenerateRandom": self._generate_random,
            "C_SeedRandom": self._seed_random,
        }
        self._handlers.update(CryptoCalls(app, self.state, version).handlers())

    async def handle(self, body: bytes | bytearray) -> bytes:
        """The answer body to one request body."""
        try:
            request = parse_request(body)
        except MalformedMessage as exc:
            log.warning("p11-kit request refused (CKR_DEVICE_ERROR): %s", exc)
            return error_response(CKR.DEVICE_ERROR)
        call = request.call
        handler = self._handlers.get(call.name) if call is not None else None
        if call is None or handler is None:
            name = call.name if call is not None else f"call id {request.call_id}"
            log.info("%s: not supported by hsmclient (CKR_FUNCTION_NOT_SUPPORTED)", name)
            return error_response(CKR.FUNCTION_NOT_SUPPORTED)
        try:
            return await handler(request.reader, call)
        except Pkcs11Error as exc:
            log.info("%s: %s", call.name, exc)
            return error_response(exc.rv)
        except MalformedMessage as exc:
            log.warning("%s: request refused (CKR_DEVICE_ERROR): %s", call.name, exc)
            return error_response(CKR.DEVICE_ERROR)

    @staticmethod
    def _empty(call: Call) -> bytes:
        return response_writer(call).getvalue()

    async def _initialize(self, reader: Reader, call: Call) -> bytes:
        handshake = reader.flagged_array("handshake")
        if handshake != HANDSHAKE:
            raise Pkcs11Error(
                CKR.ARGUMENTS_BAD, "C_Initialize without p11-kit's handshake string"
            )
        return self._empty(call)

    async def _finalize(self, reader: Reader, call: Call) -> bytes:
        await self.close_sessions()
        return self._empty(call)

    async def close_sessions(self) -> None:
        """Close the sessions this application left open (C_Finalize)."""
        for session in list(self.state.sessions):
            self.state.closed(session)
            try:
                await self._app.close_session(session)
            except Pkcs11Error as exc:
                log.info("closing session %d: %s", session, exc)

    async def _get_info(self, reader: Reader, call: Call) -> bytes:
        writer = response_writer(call)
        writer.version(2, 40)
        writer.space_string("remote-ped project", 32)
        writer.u64(0)
        writer.space_string("hsmclient (p11-kit RPC)", 32)
        writer.version(*_LIBRARY_VERSION)
        return writer.getvalue()

    async def _slot(self, slot_id: int) -> SlotInfo:
        for slot in await self._app.slots():
            if slot.slot_id == slot_id:
                return slot
        raise Pkcs11Error(CKR.SLOT_ID_INVALID, f"slot {slot_id} does not exist; see the slot list")

    async def _get_slot_list(self, reader: Reader, call: Call) -> bytes:
        present_only = reader.byte("token present")
        room = reader.buffer_size("slot list")
        slots = await self._app.slots()
        ids = [s.slot_id for s in slots if s.token_present or not present_only]
        writer = response_writer(call)
        _ids_answer(writer, ids, room)
        return writer.getvalue()

    async def _get_slot_info(self, reader: Reader, call: Call) -> bytes:
        slot = await self._slot(reader.u64("slot"))
        writer = response_writer(call)
        writer.space_string(slot.description, 64)
        writer.space_string("remote-ped project", 32)
        flags = CKF.REMOVABLE_DEVICE | (CKF.TOKEN_PRESENT if slot.token_present else 0)
        writer.u64(flags)
        writer.version(*_LIBRARY_VERSION)
        writer.version(*_LIBRARY_VERSION)
        return writer.getvalue()

    async def _get_token_info(self, reader: Reader, call: Call) -> bytes:
        info = await self._app.token_info(reader.u64("slot"))
        writer = response_writer(call)
        writer.space_string(info.label, 32)
        writer.space_string(info.manufacturer, 32)
        writer.space_string(info.model, 16)
        writer.space_string(info.serial, 16)
        writer.u64(info.flags)
        for value in (CK_EFFECTIVELY_INFINITE, CK_UNAVAILABLE, CK_EFFECTIVELY_INFINITE,
                      CK_UNAVAILABLE, info.max_pin_len, info.min_pin_len, CK_UNAVAILABLE,
                      CK_UNAVAILABLE, CK_UNAVAILABLE, CK_UNAVAILABLE):  # fmt: skip
            writer.u64(value)
        writer.version(*_LIBRARY_VERSION)
        writer.version(*_LIBRARY_VERSION)
        writer.space_string("", 16)  # no clock
        return writer.getvalue()

    async def _get_mechanism_list(self, reader: Reader, call: Call) -> bytes:
        slot_id = reader.u64("slot")
        room = reader.buffer_size("mechanism list")
        mechanisms = await self._app.mechanisms(slot_id)
        writer = response_writer(call)
        _ids_answer(writer, [m.mechanism for m in mechanisms], room)
        return writer.getvalue()

    async def _get_mechanism_info(self, reader: Reader, call: Call) -> bytes:
        slot_id = reader.u64("slot")
        wanted = reader.u64("mechanism")
        for info in await self._app.mechanisms(slot_id):
            if info.mechanism == wanted:
                writer = response_writer(call)
                writer.u64(info.min_key_size)
                writer.u64(info.max_key_size)
                writer.u64(info.flags)
                return writer.getvalue()
        raise Pkcs11Error(CKR.MECHANISM_INVALID, f"slot {slot_id} offers no mechanism 0x{wanted:X}")

    async def _open_session(self, reader: Reader, call: Call) -> bytes:
        slot_id = reader.u64("slot")
        flags = reader.u64("flags")
        if not flags & CKF.SERIAL_SESSION:
            raise Pkcs11Error(
                CKR.SESSION_PARALLEL_NOT_SUPPORTED, "open sessions with CKF_SERIAL_SESSION"
            )
        session = await self._app.open_session(slot_id, bool(flags & CKF.RW_SESSION))
        self.state.opened(session, slot_id)
        writer = response_writer(call)
        writer.u64(session)
        return writer.getvalue()

    async def _close_session(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        self.state.session(session)
        self.state.closed(session)
        await self._app.close_session(session)
        return self._empty(call)

    async def _close_all_sessions(self, reader: Reader, call: Call) -> bytes:
        slot_id = reader.u64("slot")
        await self._app.close_all_sessions(slot_id)
        self.state.closed_slot(slot_id)
        return self._empty(call)

    async def _get_session_info(self, reader: Reader, call: Call) -> bytes:
        info = await self._app.session_info(reader.u64("session"))
        writer = response_writer(call)
        writer.u64(info.slot_id)
        writer.u64(info.state)
        writer.u64(info.flags)
        writer.u64(0)  # ulDeviceError
        return writer.getvalue()

    async def _login(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        user_type = reader.u64("user type")
        pin = reader.secret_array("PIN") or bytearray()
        try:
            await self._app.login(session, user_type, pin)
        finally:
            pin[:] = bytes(len(pin))
        return self._empty(call)

    async def _logout(self, reader: Reader, call: Call) -> bytes:
        await self._app.logout(reader.u64("session"))
        return self._empty(call)

    async def _destroy_object(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        await self._app.destroy_object(session, reader.u64("object"))
        return self._empty(call)

    async def _get_attribute_value(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        handle = reader.u64("object")
        asked = read_attribute_buffer(reader)
        results = await self._app.get_attributes(session, handle, [t for t, _ in asked])
        writer = response_writer(call)
        write_attribute_answers(writer, asked, results)
        return writer.getvalue()

    async def _find_objects_init(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        template = read_template(reader)
        self.state.session(session)
        if self.state.session(session).found is not None:
            self.state.begin_search(session, [])  # raises CKR_OPERATION_ACTIVE
        handles = list(await self._app.find_objects(session, template))
        self.state.begin_search(session, handles)
        return self._empty(call)

    async def _find_objects(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        room = reader.buffer_size("object handles") or 0
        found = self.state.search(session)
        taken, found[:] = found[:room], found[room:]
        writer = response_writer(call)
        writer.ulong_array(taken)
        return writer.getvalue()

    async def _find_objects_final(self, reader: Reader, call: Call) -> bytes:
        self.state.end_search(reader.u64("session"))
        return self._empty(call)

    async def _generate_key(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        mechanism = read_mechanism(reader, self._version, cancels=False)
        template = read_template(reader)
        assert mechanism is not None  # only C_*Init accepts the "no mechanism" marker
        handle = await self._app.generate_key(session, mechanism, template)
        writer = response_writer(call)
        writer.u64(handle)
        return writer.getvalue()

    async def _generate_key_pair(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        mechanism = read_mechanism(reader, self._version, cancels=False)
        public = read_template(reader, "public key template")
        private = read_template(reader, "private key template")
        assert mechanism is not None
        public_handle, private_handle = await self._app.generate_key_pair(
            session, mechanism, public, private
        )
        writer = response_writer(call)
        writer.u64(public_handle)
        writer.u64(private_handle)
        return writer.getvalue()

    async def _generate_random(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        # p11-kit-client sends the room of the caller's buffer: 0 for a zero-length request,
        # which succeeds with no bytes (p11-kit's own server passes a NULL buffer down instead,
        # and tokens refuse that with CKR_ARGUMENTS_BAD).
        length = reader.buffer_size("random buffer") or 0
        data = await self._app.generate_random(session, length)
        if len(data) != length:
            raise Pkcs11Error(CKR.DEVICE_ERROR, f"asked {length} random bytes, got {len(data)}")
        writer = response_writer(call)
        writer.flagged_array(data)
        return writer.getvalue()

    async def _seed_random(self, reader: Reader, call: Call) -> bytes:
        raise Pkcs11Error(
            CKR.RANDOM_SEED_NOT_SUPPORTED, "the HSM's generator takes no seed from applications"
        )


__all__ = ["Dispatcher"]
