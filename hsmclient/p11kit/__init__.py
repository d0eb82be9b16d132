"""hsmclient's p11-kit RPC server: what applications reach through p11-kit-client.so.

An application loads Debian's ``p11-kit-client.so`` with
``P11_KIT_SERVER_ADDRESS=unix:path=SOCKET``; `serve_p11kit` answers on that socket
(`open_p11kit_listener` makes it) and turns each connection's PKCS#11 calls into calls
on an `ped.pkcs11.token.Application`.  docs/p11kit.md says what is spoken.
"""

from __future__ import annotations

from hsmclient.p11kit.server import open_p11kit_listener, serve_p11kit

__all__ = ["open_p11kit_listener", "serve_p11kit"]
