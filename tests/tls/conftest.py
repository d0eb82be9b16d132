"""Shared fixtures: two daemons' homes, identities and pin registries, and a real
127.0.0.1 handshake driver returning what each end saw."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ped.tls import PinStore, accept_pinned_tls, open_pinned_tls_client, regenerate_identity
from ped.tls.certs import Identity, utcnow


@attrs.define
class Daemon:
    home: Path
    identity: Identity
    pins: PinStore


def make_daemon(
    tmp_path: Path,
    program: str,
    name: str,
    *,
    days: int = 3650,
    now: datetime.datetime | None = None,
) -> Daemon:
    home = tmp_path / name
    ident = regenerate_identity(home, name, days=days, now=now)
    return Daemon(home, ident, PinStore(home, program=program))  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Daemon:
    """pedserver: the dialler (TLS client) in peer-to-peer mode."""
    return make_daemon(tmp_path, "pedserver", "workstation")


@pytest.fixture
def client(tmp_path: Path) -> Daemon:
    """pedclient: the listener (TLS server) in peer-to-peer mode."""
    return make_daemon(tmp_path, "pedclient", "hsmhost")


def past(days: int) -> datetime.datetime:
    return utcnow() - datetime.timedelta(days=days)


def future(days: int) -> datetime.datetime:
    return utcnow() + datetime.timedelta(days=days)


@attrs.define
class Outcome:
    dialler: Any = None  # trio.SSLStream or the exception raised
    listener: Any = None  # (stream, name, fingerprint) or the exception raised
    dialler_got: bytes = b""
    listener_got: bytes = b""


async def handshake(
    dialler: Daemon,
    listener: Daemon,
    *,
    peer_name: str | None = None,
    timeout: float = 10.0,
) -> Outcome:
    """Run one pinned handshake over real TCP on 127.0.0.1 and a byte round trip."""
    out = Outcome()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def listen() -> None:
        tcp = await listeners[0].accept()
        try:
            out.listener = await accept_pinned_tls(
                tcp, listener.identity, listener.pins, timeout=timeout
            )
        except Exception as exc:
            out.listener = exc
            return
        stream = out.listener[0]
        out.listener_got = await stream.receive_some(100)
        await stream.send_all(out.listener_got.upper())
        await stream.aclose()

    async def dial() -> None:
        try:
            out.dialler = await open_pinned_tls_client(
                "127.0.0.1",
                port,
                dialler.identity,
                dialler.pins,
                timeout=timeout,
                peer_name=peer_name,
            )
        except Exception as exc:
            out.dialler = exc
            return
        await out.dialler.send_all(b"relay frames here")
        out.dialler_got = await out.dialler.receive_some(100)
        await out.dialler.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        nursery.start_soon(dial)
    await listeners[0].aclose()
    return out


def register_each_other(server: Daemon, client: Daemon, **kw: Any) -> None:
    server.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1", **kw)
    client.pins.register("ws1", server.identity.certificate_pem, **kw)
