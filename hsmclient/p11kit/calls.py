"""The p11-kit RPC call table (ids, names, signatures) and the envelope of each message.

A message body is the call id (4 bytes), the call's signature string as a byte array
(p11-kit checks it against its own table: "uMu" for C_SignInit...), then the fields.  An
error answer is call id 0 with signature "u" and the CK_RV.  The table follows p11-kit's
numbering (rpc-message.h): the PKCS#11 2.40 calls 1-65, the 3.0 calls 66-87 (p11-kit
0.25+), and C_InitToken2/C_DeriveKey2 (versions 1 and 2 of the protocol).
"""

from __future__ import annotations

import attrs

from hsmclient.p11kit.buffer import Reader, Writer
from hsmclient.p11kit.errors import MalformedMessage

ERROR_CALL = 0


@attrs.frozen
class Call:
    """One RPC call: its id, PKCS#11 name and the signatures of request and answer."""

    id: int
    name: str
    request: str
    response: str


_TABLE = (
    ("C_Initialize", "ayyay", ""),
    ("C_Finalize", "", ""),
    ("C_GetInfo", "", "vsusv"),
    ("C_GetSlotList", "yfu", "au"),
    ("C_GetSlotInfo", "u", "ssuvv"),
    ("C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs"),
    ("C_GetMechanismList", "ufu", "au"),
    ("C_GetMechanismInfo", "uu", "uuu"),
    ("C_InitToken", "uayz", ""),
    ("C_OpenSession", "uu", "u"),
    ("C_CloseSession", "u", ""),
    ("C_CloseAllSessions", "u", ""),
    ("C_GetSessionInfo", "u", "uuuu"),
    ("C_InitPIN", "uay", ""),
    ("C_SetPIN", "uayay", ""),
    ("C_GetOperationState", "ufy", "ay"),
    ("C_SetOperationState", "uayuu", ""),
    ("C_Login", "uuay", ""),
    ("C_Logout", "u", ""),
    ("C_CreateObject", "uaA", "u"),
    ("C_CopyObject", "uuaA", "u"),
    ("C_DestroyObject", "uu", ""),
    ("C_GetObjectSize", "uu", "u"),
    ("C_GetAttributeValue", "uufA", "aAu"),
    ("C_SetAttributeValue", "uuaA", ""),
    ("C_FindObjectsInit", "uaA", ""),
    ("C_FindObjects", "ufu", "au"),
    ("C_FindObjectsFinal", "u", ""),
    ("C_EncryptInit", "uMu", ""),
    ("C_Encrypt", "uayfy", "ay"),
    ("C_EncryptUpdate", "uayfy", "ay"),
    ("C_EncryptFinal", "ufy", "ay"),
    ("C_DecryptInit", "uMu", ""),
    ("C_Decrypt", "uayfy", "ay"),
    ("C_DecryptUpdate", "uayfy", "ay"),
    ("C_DecryptFinal", "ufy", "ay"),
    ("C_DigestInit", "uM", ""),
    ("C_Digest", "uayfy", "ay"),
    ("C_DigestUpdate", "uay", ""),
    ("C_DigestKey", "uu", ""),
    ("C_DigestFinal", "ufy", "ay"),
    ("C_SignInit", "uMu", ""),
    ("C_Sign", "uayfy", "ay"),
    ("C_SignUpdate", "uay", ""),
    ("C_SignFinal", "ufy", "ay"),
    ("C_SignRecoverInit", "uMu", ""),
    ("C_SignRecover", "uayfy", "ay"),
    ("C_VerifyInit", "uMu", ""),
    ("C_Verify", "uayay", ""),
    ("C_VerifyUpdate", "uay", ""),
    ("C_VerifyFinal", "uay", ""),
    ("C_VerifyRecoverInit", "uMu", ""),
    ("C_VerifyRecover", "uayfy", "ay"),
    ("C_DigestEncryptUpdate", "uayfy", "ay"),
    ("C_DecryptDigestUpdate", "uayfy", "ay"),
    ("C_SignEncryptUpdate", "uayfy", "ay"),
    ("C_DecryptVerifyUpdate", "uayfy", "ay"),
    ("C_GenerateKey", "uMaA", "u"),
    ("C_GenerateKeyPair", "uMaAaA", "uu"),
    ("C_WrapKey", "uMuufy", "ay"),
    ("C_UnwrapKey", "uMuayaA", "u"),
    ("C_DeriveKey", "uMuaA", "u"),
    ("C_SeedRandom", "uay", ""),
    ("C_GenerateRandom", "ufy", "ay"),
    ("C_WaitForSlotEvent", "u", "u"),
    # PKCS #11 3.0 (p11-kit 0.25+)
    ("C_LoginUser", "uuayay", ""),
    ("C_SessionCancel", "uu", ""),
    ("C_MessageEncryptInit", "uMu", ""),
    ("C_EncryptMessage", "uayayayfy", "ay"),
    ("C_EncryptMessageBegin", "uayay", ""),
    ("C_EncryptMessageNext", "uayayfyu", "ay"),
    ("C_MessageEncryptFinal", "u", ""),
    ("C_MessageDecryptInit", "uMu", ""),
    ("C_DecryptMessage", "uayayayfy", "ay"),
    ("C_DecryptMessageBegin", "uayay", ""),
    ("C_DecryptMessageNext", "uayayfyu", "ay"),
    ("C_MessageDecryptFinal", "u", ""),
    ("C_MessageSignInit", "uMu", ""),
    ("C_SignMessage", "uayayfy", "ay"),
    ("C_SignMessageBegin", "uay", ""),
    ("C_SignMessageNext", "uayayyfy", "ay"),
    ("C_MessageSignFinal", "u", ""),
    ("C_MessageVerifyInit", "uMu", ""),
    ("C_VerifyMessage", "uayayay", ""),
    ("C_VerifyMessageBegin", "uay", ""),
    ("C_VerifyMessageNext", "uayayay", ""),
    ("C_MessageVerifyFinal", "u", ""),
    # protocol versions 1 and 2
    ("C_InitToken2", "uays", ""),
    ("C_DeriveKey2", "uMuaA", "uPu"),
)

#: Every call p11-kit numbers, by id.
CALLS: dict[int, Call] = {
    number: Call(number, name, request, response)
    for number, (name, request, response) in enumerate(_TABLE, start=1)
}
#: Call ids by PKCS#11 name.
CALL_IDS: dict[str, int] = {call.name: call.id for call in CALLS.values()}


@attrs.frozen
class Request:
    """A parsed request envelope: the call id (known or not) and a reader on its fields."""

    call_id: int
    signature: bytes
    reader: Reader = attrs.field(eq=False)

    @property
    def call(self) -> Call | None:
        return CALLS.get(self.call_id)


def parse_request(body: bytes | bytearray) -> Request:
    """Read a request's call id and signature; the fields stay in the reader.

    An unknown call id is not an error here: the dispatcher answers it with
    CKR_FUNCTION_NOT_SUPPORTED.  A known id whose signature is not p11-kit's is malformed.
    """
    reader = Reader(body)
    call_id = reader.u32("call id")
    if call_id == ERROR_CALL:
        raise MalformedMessage("a request with the error call id 0")
    signature = reader.array("signature")
    if signature is None:
        raise MalformedMessage(f"call {call_id}: the signature is missing")
    call = CALLS.get(call_id)
    if call is not None and signature != call.request.encode("ascii"):
        raise MalformedMessage(
            f"{call.name}: signature {signature[:32]!r} is not p11-kit's {call.request!r}"
        )
    return Request(call_id, signature, reader)


def response_writer(call: Call) -> Writer:
    """A writer with the answer envelope of `call` already written."""
    writer = Writer()
    writer.u32(call.id)
    writer.array(call.response.encode("ascii"))
    return writer


def error_response(rv: int) -> bytes:
    """The answer p11-kit expects for a failed call: call id 0, signature "u", the CK_RV."""
    writer = Writer()
    writer.u32(ERROR_CALL)
    writer.array(b"u")
    writer.u64(rv)
    return writer.getvalue()


def request_writer(call_name: str) -> Writer:
    """A writer with a request envelope (what p11-kit-client writes; for tests and seeds)."""
    call = CALLS[CALL_IDS[call_name]]
    writer = Writer()
    writer.u32(call.id)
    writer.array(call.request.encode("ascii"))
    return writer
