"""Compute the PROTOCOL.md test vectors from the code.

``python -m tests.ped.vectors.generate`` prints them in the format PROTOCOL.md uses;
`tests/ped/vectors/test_protocol_md.py` checks that the document and the code agree.
"""

from __future__ import annotations

from keys.colors import Color
from keys.fingerprint import keyset_fingerprint
from keys.pin import derive_pin_secret
from ped.channel import (
    DEFAULT_SUITE,
    LOCAL_RPV,
    SUITE_NNPSK0_V1,
    PedInfo,
    RefuseReason,
    derive_psk,
)
from ped.channel.handshake import HandshakeInit, HandshakeRefusal
from ped.ops import HsmSideSession, NoticeKind, PedSideSession
from ped.ops.errors import ErrorCode
from ped.ops.messages import (
    Cancel,
    CloseReason,
    Goodbye,
    ImprintRequest,
    ImprintResult,
    Notice,
    OpError,
    ReadResult,
    ReadSecret,
    ShowDone,
    ShowMessage,
)
from ped.wire.framing import encode_frame

RPV = bytes(range(0x00, 0x20))
E_HSM = bytes(range(0x20, 0x40))
E_PED = bytes(range(0x40, 0x60))
SERIAL = "150001"
KEY_TIMEOUT_MS = 200_000
PED_INFO = PedInfo("Remote PED", "PED-0001", "1.0.0")
KEYSET = bytes(range(0xA0, 0xB0))
SECRET = bytes(range(0xC0, 0xE0))
PIN = "1234"


def compute() -> dict[str, str]:
    v: dict[str, str] = {
        "rpv": RPV.hex(),
        "e_hsm_private": E_HSM.hex(),
        "e_ped_private": E_PED.hex(),
        "psk": bytes(derive_psk(RPV)).hex(),
        "local_rpv": LOCAL_RPV.hex(),
    }
    v.update(_session())

    refused = HandshakeRefusal(RefuseReason.RPV_MISMATCH).to_frame()
    v["frame_handshake_refused"] = encode_frame(refused).hex()

    examples = {
        "op_read_secret": ReadSecret(1, Color.BLUE, KEYSET, "HSM SO", KEY_TIMEOUT_MS),
        "op_read_result": ReadResult(1, Color.BLUE, KEYSET, 1, 1, SECRET),
        "op_imprint": ImprintRequest(2, Color.BLACK, SECRET, True, "CO", KEY_TIMEOUT_MS),
        "op_imprint_result": ImprintResult(2, Color.BLACK, KEYSET, 2, 3, False, 3),
        "op_imprint_result_pin": ImprintResult(
            2, Color.BLACK, KEYSET, 2, 3, True, 3, False, SECRET
        ),
        "op_imprint_result_reused": ImprintResult(
            2, Color.BLACK, KEYSET, 2, 3, True, 0, True, SECRET
        ),
        "op_show_message": ShowMessage(3, "Hello"),
        "op_show_done": ShowDone(3),
        "op_cancel": Cancel(4),
        "op_notice": Notice(1, NoticeKind.INSERT_KEY, 1, 1, "Insert a blue key"),
        "op_error": OpError(4, ErrorCode.CANCELLED, "cancelled"),
        "op_goodbye": Goodbye(CloseReason.NORMAL, ""),
    }
    for name, message in examples.items():
        v[name] = message.encode().hex()
    v.update(_session(SUITE_NNPSK0_V1))
    v["keyset_fingerprint"] = keyset_fingerprint(SECRET, KEYSET).replace("-", "")
    v["pin_secret_1234"] = bytes(derive_pin_secret(SECRET, KEYSET, PIN)).hex()
    return v


def _session(suite: int = DEFAULT_SUITE) -> dict[str, str]:
    """The vectors' session: handshake, a read with a notice, goodbye.

    With another *suite* than the HSM's default (2, padded) the names get a ``suiteN_``
    prefix: suite 1 is the session of an HSM built before suite 2 (the former vectors).
    """
    v: dict[str, str] = {}
    default = suite == DEFAULT_SUITE
    prefix = "" if default else f"suite{suite}_"
    hsm = HsmSideSession(
        rpv=RPV,
        hsm_serial=SERIAL,
        key_timeout_ms=KEY_TIMEOUT_MS,
        ephemeral_private=E_HSM,
        suite=suite,
    )
    ped = PedSideSession(ped_info=PED_INFO, ephemeral_private=E_PED)
    init = hsm.start_handshake()
    if default:
        v["prologue"] = HandshakeInit.from_frame(init).prologue().hex()
    v[prefix + "frame_handshake_init"] = encode_frame(init).hex()
    ped.receive_frame(init)
    ped.supply_rpv(RPV)
    (response,) = ped.frames_to_send()
    v[prefix + "frame_handshake_response"] = encode_frame(response).hex()
    hsm.receive_frame(response)
    channel = hsm._channel
    assert channel is not None
    if default:
        v["handshake_hash"] = channel.handshake_hash.hex()
        v["key_hsm_to_ped"] = bytes(channel._send.key_copy()).hex()
        v["key_ped_to_hsm"] = bytes(channel._recv.key_copy()).hex()

    request = hsm.read_secret(Color.BLUE, keyset_id=KEYSET, label="HSM SO")
    v[prefix + "sealed_1_hsm_to_ped_read_secret"] = encode_frame(request).hex()
    ped.receive_frame(request)
    ped.send_notice(NoticeKind.INSERT_KEY, 1, 1, "Insert a blue key")
    ped.answer_read_secret(SECRET, keyset_id=KEYSET, m=1, n=1)
    notice, result = ped.frames_to_send()
    v[prefix + "sealed_2_ped_to_hsm_notice"] = encode_frame(notice).hex()
    v[prefix + "sealed_3_ped_to_hsm_read_result"] = encode_frame(result).hex()
    hsm.receive_frame(notice)
    hsm.receive_frame(result)
    goodbye = hsm.close()
    assert goodbye is not None
    v[prefix + "sealed_4_hsm_to_ped_goodbye"] = encode_frame(goodbye).hex()
    return v


def render() -> str:
    return "\n".join(f"{name} = {value}" for name, value in compute().items())


if __name__ == "__main__":
    print(render())
