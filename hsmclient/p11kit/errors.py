"""The errors of hsmclient's p11-kit RPC server, all remote protocol errors (the peer's fault).

Where they are translated: a `MalformedMessage` (a frame that arrived whole but whose body
does not parse) is answered with CKR_DEVICE_ERROR for that call and the connection goes
on, since the framing is still aligned; a framing error (`MessageTooLarge`,
`TruncatedMessage`, `BadVersion`) ends that one connection, logged by the trio shell
(``hsmclient.p11kit.server``); other connections carry on.  Messages name lengths, call
ids and limits, never payload bytes.
"""

from __future__ import annotations

from ped.errors import FrameTooLarge, PedError, RemoteProtocolError, TruncatedFrame


class RpcError(RemoteProtocolError):
    """A p11-kit RPC peer sent something this server cannot accept."""


class MessageTooLarge(RpcError, FrameTooLarge):
    """A frame header announced more bytes than the server's limit: refused before reading."""


class TruncatedMessage(RpcError, TruncatedFrame):
    """The connection ended in the middle of a frame."""


class MalformedMessage(RpcError):
    """A whole message whose body does not parse (short field, bad signature, bad count)."""


class SocketInUse(PedError):
    """The application socket's path is taken: a live server, or a file that is not a socket."""
