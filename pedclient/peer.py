"""pedclient's peer-to-peer side: pedservers dial in over pinned mutual TLS 1.3.

Theory of operation
-------------------
With ``pedclient mode start --peer-listen [--port 9697]`` pedclient listens for TLS
(`ped.tls.serve_pinned_tls`: only pedservers registered with ``pedclient peer register``
get through; every refusal is one log line with the fingerprint, the reason and the fix).
Each accepted connection is a **spare**, parked in the `PeerPool` under the name the
pedserver's certificate was registered with:

    accepted (pinned) --> parked in the pool --taken by an HSM's ConnectRequest(peer=N)-->
                            |                     pedclient's link, as in standard mode
                            +-- closed by pedserver / network: dropped from the pool

A parked spare is silent in both directions (pedserver waits for our `LinkHello`); a task
per spare reads from it so that a close (pedserver stopped, ``mode disconnect``, TCP
keepalive failure) removes it from the pool at once.  Taking a spare cancels that read
(safe for a TLS 1.3 stream after its handshake) and gives the stream to
`PedClient._connect`, which sends the `LinkHello` exactly as over TCP: pedclient stays
the link initiator and the HSM's end-to-end channel runs inside, unchanged.  pedserver
then dials the next spare (once the new link has settled, so that its TLS handshake does
not compete with the HSM's hello and RPV handshake; see `pedserver.peer`), so every HSM
link has its own TLS connection.

An HSM asking for a peer that has no spare gets PEER_UNAVAILABLE at once when that
pedserver has nothing connected (the sentence says what to run on the workstation); when
it has links in use, a new spare is on its way and the request waits for it (bounded by
the connect timeout).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import trio

from ped.link.handoff import HandoffStream, enable_tcp_keepalive, peer_address
from ped.link.messages import ConnectCode, ConnectRequest
from ped.tls import Identity, PinError, PinStore, serve_pinned_tls
from pedclient.dial import Dialer, DialError, tcp_dialer

log = logging.getLogger("pedclient.peer")

#: Most spares parked per pedserver; more are closed (pedserver backs off and retries).
MAX_SPARES = 4


@attrs.define(eq=False)
class Spare:
    """One parked, accepted connection from a registered pedserver."""

    fingerprint: str
    address: str
    stream: trio.SSLStream
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    handed: trio.Event = attrs.field(factory=trio.Event)
    released: trio.Event = attrs.field(factory=trio.Event)  # the HSM link closed it
    taken: bool = False
    dead: bool = False


@attrs.define(eq=False)
class PeerState:
    """What pedclient knows about one pedserver that dials it (``mode show``)."""

    name: str
    fingerprint: str = ""
    address: str = ""
    spares: list[Spare] = attrs.field(factory=list)
    in_use: int = 0
    last_seen: float | None = None
    arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def state(self) -> str:
        if self.spares or self.in_use:
            return "connected"
        return "not connected"


class PeerPool:
    """Spare connections from registered pedservers, handed to HSM link requests."""

    def __init__(self, pins: PinStore) -> None:
        self.pins = pins
        self.peers: dict[str, PeerState] = {}

    def _state(self, name: str) -> PeerState:
        return self.peers.setdefault(name, PeerState(name))

    # ------------------------------------------------------------------ the listener side

    async def park(self, stream: trio.SSLStream, name: str, fp: str) -> None:
        """`serve_pinned_tls` handler: keep *stream* until an HSM takes it or it ends."""
        peer = self._state(name)
        address = _address_of(stream)
        if len(peer.spares) >= MAX_SPARES:
            log.warning("pedserver %r (%s) opened more than %d spare connections; closing "
                        "the newest", name, address, MAX_SPARES)
            await trio.aclose_forcefully(stream)
            return
        enable_tcp_keepalive(stream)
        spare = Spare(fp, address, stream)
        if peer.fingerprint != fp or not (peer.spares or peer.in_use):
            log.info("peer %r (%s, %s) is connected", name, address, fp)
        peer.fingerprint, peer.address, peer.last_seen = fp, address, time.time()
        peer.spares.append(spare)
        peer.arrived.set()
        peer.arrived = trio.Event()
        ended = False
        with spare.scope:
            try:
                # Nothing may arrive while parked: data or EOF both end the spare.
                await stream.receive_some(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            ended = True  # (not reached when take() cancelled the read)
        if spare.taken and not ended:
            spare.handed.set()
            # trio's serve_listeners closes the connection when this handler returns:
            # stay until the HSM's link is done with it.
            await spare.released.wait()
            return
        spare.dead = True
        if spare in peer.spares:
            peer.spares.remove(spare)
        if not (peer.spares or peer.in_use):
            log.info("peer %r (%s): connection closed; waiting for it to dial again",
                     name, address)
        await trio.aclose_forcefully(stream)
        spare.handed.set()

    # ------------------------------------------------------------------ the HSM side

    async def take(self, name: str, timeout: float) -> trio.abc.Stream:
        """A connection from pedserver *name* for one HSM link (`DialError` if none)."""
        deadline = trio.current_time() + timeout
        while True:
            peer = self.peers.get(name)
            if peer is not None and peer.spares:
                await self._drop_if_unpinned(peer)
            while peer is not None and peer.spares:
                spare = peer.spares.pop(0)
                spare.taken = True
                spare.scope.cancel()
                await spare.handed.wait()
                if spare.dead:
                    continue
                peer.in_use += 1

                def done(peer: PeerState = peer, spare: Spare = spare) -> None:
                    peer.in_use -= 1
                    spare.released.set()

                return HandoffStream(spare.stream, on_close=done)
            if peer is None or not peer.in_use:
                raise DialError(ConnectCode.PEER_UNAVAILABLE, self._unavailable(name))
            # pedserver is connected (links in use) and dials the next spare right away.
            with trio.move_on_at(deadline):
                await peer.arrived.wait()
                continue
            raise DialError(
                ConnectCode.TIMEOUT,
                f"peer {name!r} is connected but sent no spare connection within "
                f"{timeout:g} s; see `pedserver mode show` on the PED workstation",
            )

    async def _drop_if_unpinned(self, peer: PeerState) -> None:
        """Spares were accepted under the registry of their handshake: one whose
        certificate was deleted (or replaced) since is hung up, never handed out."""
        try:
            registered = self.pins.snapshot().by_name(peer.name)
        except PinError as exc:
            raise DialError(ConnectCode.PEER_UNAVAILABLE, str(exc)) from None
        stale = [s for s in peer.spares
                 if registered is None or registered.fingerprint != s.fingerprint]
        for spare in stale:
            peer.spares.remove(spare)
            log.warning("peer %r (%s): its certificate %s is no longer registered under "
                        "this name; hung up its spare connection", peer.name, spare.address,
                        spare.fingerprint)
            spare.scope.cancel()  # its park task closes it

    def _unavailable(self, name: str) -> str:
        if self.pins.snapshot().by_name(name) is None:
            return (f"no peer named {name!r} is registered with this pedclient; see "
                    "`pedclient peer list`, register it with `pedclient peer register "
                    "--name NAME --certificate FILE`")
        return (f"peer {name!r} is not connected: on the PED workstation run `pedserver "
                f"mode connect --name APPLIANCE` (and check `pedserver mode show` there)")

    def show(self) -> list[dict[str, Any]]:
        """Every registered peer and every connected one, with state and fingerprint."""
        try:
            registered = {p.name: p for p in self.pins.list()}
        except PinError:  # a broken registry must not break `mode show`
            registered = {}
        out = []
        for name in sorted(set(registered) | set(self.peers)):
            peer = self.peers.get(name)
            reg = registered.get(name)
            out.append({
                "name": name,
                "registered": reg is not None,
                "fingerprint": (peer.fingerprint if peer and peer.fingerprint
                                else reg.fingerprint if reg else ""),
                "address": peer.address if peer else "",
                "state": peer.state if peer else "not connected",
                "spares": len(peer.spares) if peer else 0,
                "links": peer.in_use if peer else 0,
                "last_seen": round(peer.last_seen, 3) if peer and peer.last_seen else None,
            })
        return out


def peer_dialer(pool: PeerPool | None, fallback: Dialer = tcp_dialer) -> Dialer:
    """pedclient's dialer: peer requests from *pool*, address requests over TCP."""

    async def dial(request: ConnectRequest, timeout: float) -> trio.abc.Stream:
        if not request.peer:
            return await fallback(request, timeout)
        if pool is None:
            raise DialError(
                ConnectCode.PEER_UNAVAILABLE,
                f"{request.target}: peer-to-peer mode is off in this pedclient; start it "
                "with `pedclient mode start --peer-listen` (or connect with the "
                "pedserver's address and port)",
            )
        return await pool.take(request.peer, timeout)

    return dial


async def serve_peers(
    pool: PeerPool,
    identity: Identity,
    *,
    port: int,
    host: str | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for pedservers (pinned TLS) and park what they dial, until cancelled."""
    await serve_pinned_tls(pool.park, port, identity, pool.pins, host=host,
                           task_status=task_status)


def _address_of(stream: trio.abc.Stream) -> str:
    return peer_address(stream) or "?"
