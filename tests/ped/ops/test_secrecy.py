"""No RPV, PSK, derived secret or key material in any repr, str or exception text."""

from __future__ import annotations

import trio

from keys.colors import Color
from ped.channel import RpvMismatch, derive_psk
from ped.errors import PedError
from ped.hsm_api import open_ped_session
from ped.ops import ErrorCode
from ped.ops import events as ev
from ped.ops.messages import ImprintRequest, decode_message

from .helpers import KEYSET, make_pair
from .memory import TinyPed, answer_imprint, answer_secret, transport_pair

RPV = bytes([0xC3, 0x5A]) * 16
SECRET = bytes([0x9E, 0x17]) * 16
NEW_SECRET = bytes([0x6B, 0xD4]) * 16


def forms(secret: bytes) -> list[str]:
    """Ways a secret could leak into text: hex, Python bytes repr, list of ints."""
    return [
        secret.hex(),
        secret.hex().upper(),
        repr(secret)[2:-1],
        repr(bytearray(secret)),
        str(list(secret))[1:-1],
        secret[:8].hex(),
    ]


def assert_clean(texts: list[str]) -> None:
    psk = bytes(derive_psk(RPV))
    for text in texts:
        for secret in (RPV, SECRET, NEW_SECRET, psk):
            for form in forms(secret):
                assert form not in text, f"secret material in: {text[:120]}"


def describe(obj: object) -> list[str]:
    texts = [repr(obj), str(obj)]
    if isinstance(obj, BaseException):
        texts.append(" ".join(map(str, obj.args)))
    return texts


def test_sans_io_session_objects() -> None:
    texts: list[str] = []
    hsm, ped = make_pair(RPV)
    frames = [hsm.start_handshake()]
    for frame in frames:
        for event in ped.receive_frame(frame):
            texts += describe(event)
    texts += describe(ped.supply_rpv(RPV))
    for frame in ped.frames_to_send():
        texts += describe(frame) + [repr(e) for e in hsm.receive_frame(frame)]
    request = hsm.imprint(Color.BLUE, new_secret=NEW_SECRET, allow_reuse=True, label="SO")
    for event in ped.receive_frame(request):
        texts += describe(event)
    texts += describe(ped) + describe(hsm) + describe(ped.current)
    ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=False, copies=0, reused_secret=SECRET)
    for frame in ped.frames_to_send():
        texts += [repr(e) for e in hsm.receive_frame(frame)]
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    ped.answer_read_secret(SECRET, keyset_id=KEYSET)
    for frame in ped.frames_to_send():
        for event in hsm.receive_frame(frame):
            texts += describe(event)
            assert isinstance(event, ev.OperationSucceeded)
            texts += describe(event.result)
    assert_clean(texts)
    assert_clean(describe(ImprintRequest(1, Color.RED, NEW_SECRET)))


def test_error_paths() -> None:
    texts: list[str] = []
    hsm, ped = make_pair(RPV)
    ped.receive_frame(hsm.start_handshake())
    failed = ped.supply_rpv(bytes(32))
    assert isinstance(failed, ev.SessionFailed)
    texts += describe(failed) + describe(failed.error)
    try:
        hsm.receive_frame(ped.frames_to_send()[0])
    except RpvMismatch as exc:
        texts += describe(exc)
    # Garbage that contains a secret must not be echoed back in the error.
    for garbage in (SECRET, b"RP\x01\x51\x00\x00\x00\x20" + SECRET, b"RP\x01\x52" + SECRET):
        try:
            decode_message(garbage)
        except PedError as exc:
            texts += describe(exc)
    # An operation error detail is the PED's text; the code never adds secrets to it.
    hsm, ped = make_pair(RPV)
    ped.receive_frame(hsm.start_handshake())
    ped.supply_rpv(RPV)
    for frame in ped.frames_to_send():
        hsm.receive_frame(frame)
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    ped.answer_error(ErrorCode.KEYSET_MISMATCH, "the key belongs to another keyset")
    for frame in ped.frames_to_send():
        for event in hsm.receive_frame(frame):
            texts += describe(event)
    assert_clean(texts)


async def test_hsm_api_objects() -> None:
    texts: list[str] = []
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_secret, ev.ImprintRequested: answer_imprint})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            texts += describe(session)
            result = await session.read_secret(Color.BLUE)
            texts += describe(result)
            imprinted = await session.imprint(Color.BLUE, new_secret=NEW_SECRET)
            texts += describe(imprinted)
    texts += [repr(e) for e in ped.events]
    assert_clean(texts)
