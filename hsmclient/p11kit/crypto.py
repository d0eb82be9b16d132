"""The sign, verify, encrypt and decrypt calls: C_*Init, one-shot, update and final.

Each call keeps `operations.ApplicationState` current and runs the gathered operation as
one `Application` call when the application asks for the result (see that module).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hsmclient.p11kit.attributes import read_mechanism
from hsmclient.p11kit.buffer import Reader
from hsmclient.p11kit.calls import Call, response_writer
from hsmclient.p11kit.operations import ApplicationState, Delivery, Operation, OpKind
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import Application, Mechanism, Pkcs11Error

Handler = Callable[[Reader, Call], Awaitable[bytes]]


class CryptoCalls:
    """The handlers of the operation calls for one application connection."""

    def __init__(self, app: Application, state: ApplicationState, version: int) -> None:
        self._app = app
        self._state = state
        self._version = version

    def handlers(self) -> dict[str, Handler]:
        table: dict[str, Handler] = {}
        for kind in OpKind:
            name = kind.name.title()
            table[f"C_{name}Init"] = self._init_for(kind)
            table[f"C_{name}Final"] = self._final_for(kind)
        table["C_Sign"] = self._one_shot_for(OpKind.SIGN)
        table["C_Encrypt"] = self._one_shot_for(OpKind.ENCRYPT)
        table["C_Decrypt"] = self._one_shot_for(OpKind.DECRYPT)
        table["C_SignUpdate"] = self._update_for(OpKind.SIGN)
        table["C_VerifyUpdate"] = self._update_for(OpKind.VERIFY)
        table["C_EncryptUpdate"] = self._update_with_output_for(OpKind.ENCRYPT)
        table["C_DecryptUpdate"] = self._update_with_output_for(OpKind.DECRYPT)
        table["C_Verify"] = self._verify
        return table

    async def _run(self, session: int, operation: Operation, data: bytes) -> bytes:
        mechanism: Mechanism = operation.mechanism
        if operation.kind is OpKind.SIGN:
            return await self._app.sign(session, mechanism, operation.key, data)
        if operation.kind is OpKind.ENCRYPT:
            return await self._app.encrypt(session, mechanism, operation.key, data)
        return await self._app.decrypt(session, mechanism, operation.key, data)

    async def _result(self, session: int, operation: Operation, data: bytes) -> bytes:
        """The operation's output: the one kept by a length query if the input is the same."""
        if operation.result is not None and operation.result_input == data:
            return operation.result
        try:
            return await self._run(session, operation, data)
        except Pkcs11Error as exc:
            if exc.rv != CKR.BUFFER_TOO_SMALL:
                self._state.finish(session, operation.kind)
            raise

    def _answer(self, call: Call, delivery: Delivery) -> bytes:
        writer = response_writer(call)
        writer.flagged_array(delivery.data, delivery.length)
        return writer.getvalue()

    def _init_for(self, kind: OpKind) -> Handler:
        async def init(reader: Reader, call: Call) -> bytes:
            session = reader.u64("session")
            mechanism = read_mechanism(reader, self._version, cancels=True)
            key = reader.u64("key")
            self._state.begin(session, kind, mechanism, key)
            return response_writer(call).getvalue()

        return init

    def _one_shot_for(self, kind: OpKind) -> Handler:
        async def one_shot(reader: Reader, call: Call) -> bytes:
            session = reader.u64("session")
            data = reader.flagged_array("input") or b""
            room = reader.buffer_size()
            operation = self._state.single_part(session, kind)
            result = await self._result(session, operation, data)
            return self._answer(call, self._state.deliver(session, operation, result, room, data))

        return one_shot

    def _update_for(self, kind: OpKind) -> Handler:
        async def update(reader: Reader, call: Call) -> bytes:
            session = reader.u64("session")
            data = reader.flagged_array("input") or b""
            self._state.update(session, kind, data)
            return response_writer(call).getvalue()

        return update

    def _update_with_output_for(self, kind: OpKind) -> Handler:
        async def update(reader: Reader, call: Call) -> bytes:
            session = reader.u64("session")
            data = reader.flagged_array("input") or b""
            room = reader.buffer_size()
            self._state.update(session, kind, data)
            # Gathered: all output comes with C_*Final (allowed for every mode offered).
            return self._answer(call, Delivery(None if room is None else b"", 0, done=False))

        return update

    def _final_for(self, kind: OpKind) -> Handler:
        async def final(reader: Reader, call: Call) -> bytes:
            session = reader.u64("session")
            if kind is OpKind.VERIFY:
                signature = reader.flagged_array("signature") or b""
                operation = self._state.active(session, kind)
                await self._verify_once(session, operation, bytes(operation.gathered), signature)
                return response_writer(call).getvalue()
            room = reader.buffer_size()
            operation = self._state.active(session, kind)
            data = bytes(operation.gathered)
            result = await self._result(session, operation, data)
            return self._answer(call, self._state.deliver(session, operation, result, room, data))

        return final

    async def _verify(self, reader: Reader, call: Call) -> bytes:
        session = reader.u64("session")
        data = reader.flagged_array("input") or b""
        signature = reader.flagged_array("signature") or b""
        operation = self._state.single_part(session, OpKind.VERIFY)
        await self._verify_once(session, operation, data, signature)
        return response_writer(call).getvalue()

    async def _verify_once(
        self, session: int, operation: Operation, data: bytes, signature: bytes
    ) -> None:
        try:
            await self._app.verify(session, operation.mechanism, operation.key, data, signature)
        finally:
            self._state.finish(session, OpKind.VERIFY)
