"""One mutual-TLS connection from hsmclient to one pedhsm, carrying ``ped.ntls`` requests.

Theory of operation
-------------------
`ServerLink.open` dials a registered server (pinned TLS 1.3 with hsmclient's identity,
``ped.tls``), says Hello and waits for the Welcome.  `call` sends one request and waits
for its answer; several calls may be in flight at once (up to the server's limit).  There
is no background task: whichever caller is waiting reads the stream and hands every
answer it finds to its caller; the others wait for the reader to finish a round, then
look again (one of them takes over reading).  So a link needs no nursery and dies with
its last user.

A link that drops (end of stream, a broken TLS stream, a protocol error, a ``Close``
from pedhsm) is *down*: every waiting and every later call raises `LinkDown` with the
reason, which the backend turns into the PKCS#11 return value an application expects.
A `Failure` answer becomes `Pkcs11Error` with pedhsm's return value and message.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ped.errors import PedError, RemoteProtocolError
from ped.ntls import messages as m
from ped.ntls.connection import ConnectionLost, NtlsConnection, NtlsRole
from ped.pkcs11.token import Pkcs11Error
from ped.tls import Identity, PinStore, TlsError, open_pinned_tls_client
from ped.wire.framing import NEED_DATA

DIAL_TIMEOUT = 10.0
_RECEIVE = 65536


class LinkDown(PedError):
    """The connection to a server is gone (or never came up); the message says why."""


class ServerLink:
    """See the module docstring."""

    def __init__(self, server: str, stream: trio.abc.Stream, conn: NtlsConnection) -> None:
        self.server = server
        self.stream = stream
        self.conn = conn
        self.hsm_serial = ""
        self.down: str | None = None  # why, once the link is down
        self._answers: dict[int, m.Answer] = {}
        self._send_lock = trio.Lock()
        self._reading = False
        self._round = trio.Event()
        self._slots = trio.Semaphore(m.MAX_IN_FLIGHT)

    @classmethod
    async def open(
        cls,
        server: str,
        identity: Identity,
        pins: PinStore,
        *,
        timeout: float = DIAL_TIMEOUT,
    ) -> ServerLink:
        """Dial *server* (registered in *pins*); `LinkDown` with the reason and the fix."""
        try:
            peer = pins.get(server)
            assert peer.ip is not None and peer.port is not None
            stream = await open_pinned_tls_client(
                peer.ip, peer.port, identity, pins, timeout=timeout, peer_name=server
            )
        except (TlsError, PedError) as exc:
            raise LinkDown(str(exc)) from None
        link = cls(server, stream, NtlsConnection(NtlsRole.CLIENT))
        try:
            with trio.fail_after(timeout):
                await link._send(m.Hello())
                event = await link._next_message()
        except trio.TooSlowError:
            await link.aclose()
            raise LinkDown(f"{server} did not answer the client protocol's hello") from None
        except LinkDown:
            await link.aclose()
            raise
        if isinstance(event, m.Refused):
            await link.aclose()
            raise LinkDown(f"{server} refused this client: {event.message}")
        assert isinstance(event, m.Welcome)
        link.hsm_serial = event.hsm_serial
        link._slots = trio.Semaphore(event.max_in_flight)
        return link

    async def call(self, build: Callable[[int], m.Request]) -> m.Result:
        """Send ``build(request_id)`` and return its result (`Pkcs11Error` on a Failure)."""
        async with self._slots:
            self._check_up()
            request = build(self.conn.next_request_id())
            rid = request.request_id
            try:
                await self._send(request)
            finally:
                if isinstance(request, m.Login):
                    request.pin[:] = bytes(len(request.pin))
            while rid not in self._answers:
                self._check_up()
                if self._reading:
                    await self._round.wait()
                    continue
                self._reading = True
                try:
                    self._dispatch(await self._next_message())
                finally:
                    self._reading = False
                    self._round.set()
                    self._round = trio.Event()
            answer = self._answers.pop(rid)
        if isinstance(answer, m.Failure):
            raise Pkcs11Error(answer.rv, answer.message)
        return answer

    async def aclose(self) -> None:
        if self.down is None:
            self.down = "closed by hsmclient"
            try:
                with trio.move_on_after(1.0):
                    await self._send(m.Close(m.NtlsCloseCode.NORMAL, "application closed"))
            except LinkDown:
                pass
        await trio.aclose_forcefully(self.stream)
        self._round.set()

    # ---- internals --------------------------------------------------------------------

    def _check_up(self) -> None:
        if self.down is not None:
            raise LinkDown(f"the connection to {self.server} is down: {self.down}")

    def _fail(self, why: str) -> LinkDown:
        if self.down is None:
            self.down = why
        self._round.set()
        return LinkDown(f"the connection to {self.server} is down: {self.down}")

    async def _send(self, message: m.Message) -> None:
        self._check_up()
        data = self.conn.send(message)
        try:
            async with self._send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._fail(f"sending failed ({exc or type(exc).__name__})") from None
        finally:
            data[:] = bytes(len(data))

    def _dispatch(self, message: m.Message) -> None:
        if isinstance(message, m.Close):
            raise self._fail(f"pedhsm closed it ({message.code.name}: {message.message})")
        rid = getattr(message, "request_id", None)
        if rid is not None:
            self._answers[rid] = message  # type: ignore[assignment]  # an Answer

    async def _next_message(self) -> m.Message:
        while True:
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as exc:
                raise self._fail(f"pedhsm broke the protocol ({exc})") from None
            if isinstance(event, ConnectionLost):
                raise self._fail("pedhsm ended the connection")
            if event is not NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(_RECEIVE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise self._fail(f"the connection broke ({exc or type(exc).__name__})") from None
            self.conn.receive_data(data)
