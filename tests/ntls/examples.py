"""One example of every client-protocol message: docs/protocol/client.md's vectors.

``python -m tests.ntls.examples`` prints the ```vectors block as the document has it.
"""

from __future__ import annotations

from ped.ntls import messages as m
from ped.ntls.frames import encode
from ped.pkcs11.constants import CKA, CKF_MECH, CKM, CKO, CKR, CKU
from ped.pkcs11.token import (
    Attribute,
    AttributeResult,
    GcmParams,
    Mechanism,
    MechanismInfo,
    PartitionInfo,
    TokenInfo,
)

P256 = bytes.fromhex("06082a8648ce3d030107")
GCM = Mechanism(CKM.AES_GCM, GcmParams(bytes(range(12)), b"hdr", 128))
ECDSA = Mechanism(CKM.ECDSA_SHA256)

EXAMPLES: dict[str, m.Message] = {
    "hello": m.Hello(1, 1, "hsmclient"),
    "welcome": m.Welcome(1, 32, "150001"),
    "refused": m.Refused(m.NtlsRefuseCode.UNSUPPORTED_VERSION, "speak 1"),
    "close": m.Close(m.NtlsCloseCode.IDLE_TIMEOUT, "idle"),
    "list_partitions": m.ListPartitions(1),
    "token_info": m.GetTokenInfo(2, "1500010001"),
    "mechanisms": m.GetMechanisms(3, "1500010001"),
    "open_session": m.OpenSession(4, "1500010001", True),
    "close_session": m.CloseSession(5, 7),
    "login": m.Login(6, 7, CKU.USER, bytearray(b"chal")),
    "logout": m.Logout(7, 7),
    "generate_key": m.GenerateKey(
        8, 7, Mechanism(CKM.AES_KEY_GEN), (Attribute(CKA.VALUE_LEN, 32), Attribute(CKA.TOKEN, True))
    ),
    "generate_key_pair": m.GenerateKeyPair(
        9,
        7,
        Mechanism(CKM.EC_KEY_PAIR_GEN),
        (Attribute(CKA.EC_PARAMS, P256),),
        (Attribute(CKA.SIGN, True), Attribute(CKA.LABEL, b"k")),
    ),
    "find_objects": m.FindObjects(10, 7, (Attribute(CKA.CLASS, CKO.PRIVATE_KEY),)),
    "get_attributes": m.GetAttributes(11, 7, 42, (CKA.EC_POINT, CKA.VALUE)),
    "destroy_object": m.DestroyObject(12, 7, 42),
    "sign": m.Sign(13, 7, ECDSA, 42, b"data"),
    "verify": m.Verify(14, 7, ECDSA, 41, b"data", b"sig"),
    "encrypt": m.Encrypt(15, 7, GCM, 43, b"plain"),
    "decrypt": m.Decrypt(16, 7, GCM, 43, b"cipher"),
    "generate_random": m.GenerateRandom(17, 7, 16),
    "clone_open": m.CloneOpen(18, 7, m.CloneRole.SOURCE, "1500020001", (41, 42)),
    "clone_frame": m.CloneFrame(19, 7, bytes.fromhex("525001780000000000")),
    "archive": m.Archive(20, 7, m.ArchiveAction.BACKUP_SOURCE, m.ArchiveMode.NEW,
                         "150003000001", "nightly", ("k1",)),
    "result_partitions": m.Partitions(1, (PartitionInfo("1500010001", "app", True, True),)),
    "result_partitions_v2": m.Partitions(
        1, (PartitionInfo("1500010001", "app", True, True, auto_activation=True),)
    ),
    "result_token_info": m.TokenInfoResult(2, TokenInfo("app", "1500010001", flags=0x40D)),
    "result_mechanisms": m.Mechanisms(
        3, (MechanismInfo(CKM.ECDSA, 256, 256, CKF_MECH.SIGN | CKF_MECH.VERIFY),)
    ),
    "result_open_session": m.Handle(4, m.Op.OPEN_SESSION, 7),
    "result_login": m.Done(6, m.Op.LOGIN),
    "result_key_pair": m.KeyPair(9, 41, 42),
    "result_find_objects": m.Handles(10, (42,)),
    "result_get_attributes": m.Attributes(
        11,
        (
            AttributeResult(CKA.EC_POINT, b"\x04\x41"),
            AttributeResult(CKA.VALUE, None, CKR.ATTRIBUTE_SENSITIVE),
        ),
    ),
    "result_sign": m.Output(13, m.Op.SIGN, b"sig"),
    "result_clone_frame": m.Output(19, m.Op.CLONE_FRAME, bytes.fromhex("525001790000000000")),
    "result_archive": m.Output(20, m.Op.ARCHIVE, b"150003000001"),
    "failure": m.Failure(6, CKR.PIN_INCORRECT, "wrong challenge"),
}


#: The examples written in a later protocol version than 1 (the rest are the same in every
#: version so far).
VERSIONS: dict[str, int] = {"result_partitions_v2": 2}


def version_of(name: str) -> int:
    return VERSIONS.get(name, m.NTLS_VERSION_MIN)


def vectors() -> dict[str, str]:
    return {name: encode(message, version_of(name)).hex() for name, message in EXAMPLES.items()}


if __name__ == "__main__":
    print("```vectors")
    for name, value in vectors().items():
        print(f"{name} = {value}")
    print("```")
