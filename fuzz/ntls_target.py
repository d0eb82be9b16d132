"""The client protocol's fuzz target: `ped.ntls`'s connection fed whatever its peer sends.

Input: byte 0 picks the side under test (even: pedhsm's server end, odd: hsmclient's
client end) and byte 1 the size of the pieces the rest arrives in (1-64 bytes); the rest
is the peer's byte stream, then end of stream.  The server end answers as pedhsm does
(Welcome to a Hello, an answer of the right shape or a Failure to every request); the
client end has sent its Hello and a few requests first, so answers can match them.
`seeds` are valid streams built from docs/protocol/client.md's kind of messages (a
version-2 one among them: a partition info with auto-activation).
"""

from __future__ import annotations

from ped.errors import PedError
from ped.ntls import messages as m
from ped.ntls.connection import ConnectionLost, NtlsConnection, NtlsRole, choose_version
from ped.ntls.frames import encode
from ped.pkcs11.constants import CKM, CKR, CKU
from ped.pkcs11.token import Mechanism, PartitionInfo, TokenInfo
from ped.wire.framing import NEED_DATA

_CLIENT_REQUESTS: tuple[m.Request, ...] = (
    m.ListPartitions(1),
    m.Login(2, 7, CKU.USER, bytearray(b"chal")),
    m.Sign(3, 7, Mechanism(CKM.ECDSA), 42, b"data"),
    m.GetTokenInfo(4, "1500010001"),
)


def _answer(request: m.Request) -> m.Answer:
    """What pedhsm might answer (right shape for some, a Failure for the rest)."""
    rid = request.request_id
    if isinstance(request, m.ListPartitions):
        return m.Partitions(rid, (PartitionInfo("1", "p", True, True),))
    if isinstance(request, m.GetTokenInfo):
        return m.TokenInfoResult(rid, TokenInfo("p", request.serial))
    if isinstance(request, m.OpenSession):
        return m.Handle(rid, request.OP, 7)
    if isinstance(request, m.Login | m.Logout | m.CloseSession | m.DestroyObject):
        return m.Done(rid, request.OP)
    if isinstance(request, m.Sign | m.Encrypt | m.Decrypt):
        return m.Output(rid, request.OP, bytes(8))
    return m.Failure(rid, CKR.FUNCTION_FAILED, "fuzz")


def one_ntls(data: bytes) -> None:
    if len(data) < 2:
        return
    server = data[0] % 2 == 0
    piece = data[1] % 64 + 1
    conn = NtlsConnection(NtlsRole.SERVER if server else NtlsRole.CLIENT)
    stream = data[2:]
    try:
        if not server:
            conn.send(m.Hello())
        sent = 0
        for start in range(0, len(stream) + 1, piece):
            conn.receive_data(stream[start : start + piece] or b"")
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, ConnectionLost):
                    return
                if isinstance(event, m.Login):
                    event.pin[:] = bytes(len(event.pin))
                if server and isinstance(event, m.Hello):
                    version = choose_version(event)
                    if version is None:
                        conn.send(m.Refused(m.NtlsRefuseCode.UNSUPPORTED_VERSION, "no"))
                    else:
                        conn.send(m.Welcome(version, 4, "150001"))
                elif server and isinstance(event, m.REQUEST_TYPES):
                    conn.send(_answer(event))  # type: ignore[arg-type]  # a request
                elif not server and isinstance(event, m.Welcome):
                    while sent < len(_CLIENT_REQUESTS) and conn.can_request:
                        conn.send(_CLIENT_REQUESTS[sent])
                        sent += 1
    except PedError:
        pass


def seeds() -> list[bytes]:
    """Valid streams for both ends (the corpus starts from these)."""
    requests: list[m.Message] = [
        m.OpenSession(1, "1500010001", True),
        m.Login(2, 7, CKU.USER, bytearray(b"challenge")),
        m.Sign(3, 7, Mechanism(CKM.ECDSA), 42, b"data"),
        m.GetTokenInfo(4, "1500010001"),
        m.Archive(5, 7, m.ArchiveAction.LIST, m.ArchiveMode.NEW, "", ""),
        m.Close(m.NtlsCloseCode.NORMAL, "bye"),
    ]
    server = b"".join(bytes(encode(x)) for x in [m.Hello(), *requests])
    answers: list[m.Message] = [
        m.Welcome(1, 4, "150001"),
        m.Partitions(1, (PartitionInfo("1500010001", "app", True, True),)),
        m.Done(2, m.Op.LOGIN),
        m.Failure(3, CKR.KEY_HANDLE_INVALID, "no key"),
        m.TokenInfoResult(4, TokenInfo("app", "1500010001")),
    ]
    client = b"".join(bytes(encode(x)) for x in answers)
    auto = (PartitionInfo("1500010001", "app", True, True, auto_activation=True),)
    client_v2 = b"".join(bytes(encode(x, 2)) for x in [m.Welcome(2, 4, "150001"),
                                                      m.Partitions(1, auto)])  # fmt: skip
    return [b"\x00\x3f" + server, b"\x00\x00" + server, b"\x01\x3f" + client,
            b"\x01\x06" + client, b"\x00\x3f" + server[:40],
            b"\x01\x3f" + client_v2]  # fmt: skip
