"""The p11-kit harness's target and seeds: hsmclient's RPC server fed a hostile client.

Input format of `one_p11kit_stream`: byte 0 picks how the stream is cut (its value + 1
bytes per piece); the rest is what a client sends on the application socket: the version
byte, then frames.  Each whole frame goes to a `Dispatcher` over a `SoftBackend` (run
without an event loop: the soft backend never waits).  Only typed errors may come out
(`ped.errors.PedError`: the framing's `RpcError`s); the dispatcher itself must answer
every frame, never raise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from hsmclient.p11kit.attributes import write_mechanism, write_template
from hsmclient.p11kit.calls import CALLS, request_writer
from hsmclient.p11kit.dispatch import HANDSHAKE, Dispatcher
from hsmclient.p11kit.framing import Frame, RpcConnection, VersionOffered, request_frame
from ped.errors import PedError
from ped.pkcs11.constants import CKA, CKM, CKU
from ped.pkcs11.token import Attribute, GcmParams, Mechanism
from pedtools.fakes.softtoken import P256_PARAMS, SoftBackend

PIN = "1234"


def _now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the soft backend's) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the soft backend suspended")


def one_p11kit_stream(data: bytes) -> None:
    if not data:
        return
    step, stream = data[0] + 1, data[1:]
    connection = RpcConnection(max_body=64 * 1024)
    dispatcher: Dispatcher | None = None
    backend = SoftBackend([("app", "1001", PIN)])
    try:
        for start in range(0, len(stream) + 1, step):
            connection.receive_data(stream[start : start + step])
            while (event := connection.next_event()) is not None:
                if isinstance(event, VersionOffered):
                    connection.accept_version(event.offered)
                    app = _now(backend.connect())
                    dispatcher = Dispatcher(app, connection.version or 0)
                elif isinstance(event, Frame) and dispatcher is not None:
                    answer = _now(dispatcher.handle(event.body))
                    assert isinstance(answer, bytes) and len(answer) >= 8
    except PedError:
        pass


def _session_calls(version: int) -> list[bytes]:
    """A genuine session: initialize, open, login, keys, sign, verify, GCM, random."""
    bodies = []

    def add(name: str, *fields: tuple[str, Any]) -> None:
        writer = request_writer(name)
        for kind, value in fields:
            if kind == "u":
                writer.u64(value)
            elif kind == "y":
                writer.byte(value)
            elif kind == "ay":
                writer.flagged_array(value)
            elif kind == "f":
                writer.u32(value)
            elif kind == "M":
                write_mechanism(writer, value, version)
            elif kind == "aA":
                write_template(writer, value)
            elif kind == "fA":
                writer.u32(len(value))
                for attr_type, room in value:
                    writer.u32(attr_type)
                    writer.u32(room)
        bodies.append(writer.getvalue())

    add("C_Initialize", ("ay", HANDSHAKE), ("y", 0), ("ay", None))
    add("C_GetSlotList", ("y", 1), ("f", 0))
    add("C_GetTokenInfo", ("u", 0))
    add("C_GetMechanismList", ("u", 0), ("f", 16))
    add("C_OpenSession", ("u", 0), ("u", 6))
    add("C_Login", ("u", 1), ("u", CKU.USER), ("ay", PIN.encode()))
    add("C_GenerateKeyPair", ("u", 1), ("M", Mechanism(CKM.EC_KEY_PAIR_GEN)),
        ("aA", [Attribute(CKA.EC_PARAMS, P256_PARAMS), Attribute(CKA.LABEL, b"k")]),
        ("aA", [Attribute(CKA.LABEL, b"k"), Attribute(CKA.SIGN, True)]))  # fmt: skip
    add("C_FindObjectsInit", ("u", 1), ("aA", [Attribute(CKA.LABEL, b"k")]))
    add("C_FindObjects", ("u", 1), ("f", 10))
    add("C_FindObjectsFinal", ("u", 1))
    add("C_GetAttributeValue", ("u", 1), ("u", 1),
        ("fA", [(CKA.LABEL, 0), (CKA.EC_POINT, 100), (CKA.CLASS, 8), (CKA.VALUE, 32)]))  # fmt: skip
    add("C_SignInit", ("u", 1), ("M", Mechanism(CKM.ECDSA)), ("u", 2))
    add("C_SignUpdate", ("u", 1), ("ay", b"\x01" * 32))
    add("C_SignFinal", ("u", 1), ("f", 64))
    add("C_VerifyInit", ("u", 1), ("M", Mechanism(CKM.ECDSA)), ("u", 1))
    add("C_Verify", ("u", 1), ("ay", b"\x01" * 32), ("ay", b"\x00" * 64))
    add("C_GenerateKey", ("u", 1), ("M", Mechanism(CKM.AES_KEY_GEN)),
        ("aA", [Attribute(CKA.VALUE_LEN, 32)]))  # fmt: skip
    if version >= 1:
        gcm = Mechanism(CKM.AES_GCM, GcmParams(iv=b"\x00" * 12, aad=b"a"))
        add("C_EncryptInit", ("u", 1), ("M", gcm), ("u", 3))
        add("C_Encrypt", ("u", 1), ("ay", b"plain"), ("f", 64))
    add("C_GenerateRandom", ("u", 1), ("f", 0))
    add("C_Logout", ("u", 1))
    add("C_Finalize")
    return bodies


def seeds() -> list[bytes]:
    inputs = []
    for version in (0, 1, 2):
        bodies = _session_calls(version)
        stream = bytes([version]) + b"".join(
            request_frame(code, body, b"client") for code, body in enumerate(bodies, start=16)
        )
        inputs.append(b"\xff" + stream)
        inputs.append(b"\x02" + stream[: len(stream) // 2])
    for call in list(CALLS.values())[::7]:  # unimplemented and 3.0 ids, envelope only
        body = call.id.to_bytes(4, "big") + len(call.request).to_bytes(4, "big")
        inputs.append(b"\x10\x00" + request_frame(1, body + call.request.encode()))
    return inputs


def write(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (directory / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)  # noqa: S324
    return len(seeds())
