"""trio shells for the pinned, mutual TLS 1.3 peer link.

Theory of operation
-------------------
In peer-to-peer mode pedserver *dials* (TLS client, `open_pinned_tls_client`) and
pedclient *listens* (TLS server, `accept_pinned_tls`).  Each call takes a fresh snapshot
of the pin registry and re-reads our identity (both cached while their files are
unchanged), gets the `ssl` context built from exactly those (`ped.tls.context.ContextCache`:
a new one whenever either changed), runs the handshake under a deadline, then checks that
the peer's leaf certificate is exactly a pinned one (SHA-256 fingerprint,
``hmac.compare_digest``) and is valid now.

In TLS 1.3 the client finishes its handshake *before* the server has looked at the
client's certificate, so a client cannot tell from the handshake alone that it was
accepted.  The listener therefore writes `ACCEPTED` (12 bytes, inside TLS) once it has
accepted the dialler, and the dialler waits for exactly those bytes before returning.
The link protocol starts after them.

Every refusal raises `PeerRejected` on the end that notices it, naming the fingerprint
seen (the peer's, or our own when the peer refused ours), the reason and the command
that fixes it; the other end gets a TLS alert (flushed even though trio drops it on a
failed handshake) and raises its own `PeerRejected` with its side of the story.  No
secret is in any message: certificates and fingerprints are public.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from ped.tls.certs import (
    Identity,
    fingerprint,
)
from ped.tls.errors import (
    HandshakeTimeout,
    PeerRejected,
    PeerUnreachable,
    TlsError,
    TlsHandshakeFailed,
    UnknownName,
)
from ped.tls.handshake import Handshake
from ped.tls.pins import Peer, PinStore

log = logging.getLogger("ped.tls")

DEFAULT_HANDSHAKE_TIMEOUT = 15.0
async def open_pinned_tls_client(
    host: str,
    port: int,
    identity: Identity,
    pins: PinStore,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    peer_name: str | None = None,
) -> trio.SSLStream[trio.abc.Stream]:
    """Dial *host*:*port* and run the pinned TLS 1.3 handshake as the client.

    With *peer_name* (pedserver dialling a registered appliance) only that peer's
    certificate is accepted; without it, any pinned one.  *timeout* bounds the TCP
    connection and the handshake together.  Raises `PeerUnreachable`,
    `HandshakeTimeout`, `TlsHandshakeFailed`, `PeerRejected` or `UnknownName`.
    """
    address = _format_address(host, port)
    if peer_name is not None:
        pins.get(peer_name)  # UnknownName before we dial anyone
    deadline = trio.current_time() + timeout
    with trio.move_on_at(deadline) as scope:
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise PeerUnreachable(
                f"cannot connect to {address}: {exc.strerror or exc}; check that the other "
                f"side listens (pedclient mode start --peer-listen) and that no firewall "
                f"drops the connection"
            ) from None
    if scope.cancelled_caught:
        raise HandshakeTimeout(f"no TCP connection to {address} within {timeout:g} s")
    # One budget for both: what the TCP connection used is gone for the handshake.
    link = await _start_client(tcp, identity, pins, peer_name=peer_name, address=address)
    await link.run(
        max(deadline - trio.current_time(), 0.0), expected_name=peer_name, budget=timeout
    )
    return link.ssl_stream


async def start_pinned_tls_client(
    transport: trio.abc.Stream,
    identity: Identity,
    pins: PinStore,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    peer_name: str | None = None,
    peer_address: str | None = None,
) -> trio.SSLStream:  # type: ignore[type-arg]
    """`open_pinned_tls_client` over a stream you already have (closed on failure)."""
    address = peer_address or _peer_address(transport)
    link = await _start_client(transport, identity, pins, peer_name=peer_name, address=address)
    await link.run(timeout, expected_name=peer_name)
    return link.ssl_stream


async def _start_client(
    transport: trio.abc.Stream,
    identity: Identity,
    pins: PinStore,
    *,
    peer_name: str | None,
    address: str,
) -> Handshake:
    try:
        snap = pins.snapshot()
        if peer_name is not None:
            expected = snap.by_name(peer_name)
            if expected is None:
                raise UnknownName(
                    f"no {pins.noun} named {peer_name!r}; see: {pins.program} {pins.noun} list"
                )
            trusted: Sequence[Peer] = (expected,)
        else:
            trusted = snap.peers
        return Handshake(transport, identity, snap, trusted, server_side=False, address=address)
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise


async def accept_pinned_tls(
    transport: trio.abc.Stream,
    identity: Identity,
    pins: PinStore,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    peer_address: str | None = None,
) -> tuple[trio.SSLStream, str, str]:  # type: ignore[type-arg]
    """Run the pinned TLS 1.3 handshake as the server on an accepted connection.

    Returns ``(ssl_stream, peer_name, peer_fingerprint)``.  *transport* is closed on
    any failure.  Raises `HandshakeTimeout`, `TlsHandshakeFailed` or `PeerRejected`.
    """
    address = peer_address or _peer_address(transport)
    try:
        snap = pins.snapshot()
        link = Handshake(transport, identity, snap, snap.peers, server_side=True, address=address)
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise
    peer = await link.run(timeout, expected_name=None)
    return link.ssl_stream, peer.name, peer.fingerprint


PeerHandler = Callable[[trio.SSLStream, str, str], Awaitable[None]]  # type: ignore[type-arg]


async def serve_pinned_tls(
    handler: PeerHandler,
    port: int,
    identity: Identity,
    pins: PinStore,
    *,
    host: str | None = None,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on *port* and run ``handler(stream, peer_name, fingerprint)`` per accepted
    peer, each in its own task, until cancelled (pedclient ``--peer-listen``).

    Every refused or failed handshake is logged as one line on the ``ped.tls`` logger
    (WARNING for `PeerRejected`, INFO for the rest) and costs nothing else.  *handler*
    owns the stream and handles its own errors.  ``nursery.start`` returns the
    listeners (their ``socket.getsockname()`` gives the port when *port* is 0).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def one(tcp: trio.SocketStream) -> None:
        address = _peer_address(tcp)
        try:
            stream, name, fp = await accept_pinned_tls(
                tcp, identity, pins, timeout=timeout, peer_address=address
            )
        except PeerRejected as exc:
            log.warning("%s", exc)
            return
        except TlsError as exc:
            log.info("%s", exc)
            return
        log.info("peer link from %s %r (%s) is up", address, name, fp)
        await handler(stream, name, fp)

    task_status.started(listeners)
    await trio.serve_listeners(one, listeners)


def peer_fingerprint(stream: trio.SSLStream) -> str:  # type: ignore[type-arg]
    """SHA-256 fingerprint of the certificate the peer presented on *stream*."""
    der = stream.getpeercert(binary_form=True)
    if not der:
        raise TlsHandshakeFailed("no peer certificate on this stream")
    return fingerprint(der)


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError, TypeError, ValueError):
        return "the peer"
    return _format_address(str(host), int(port))
