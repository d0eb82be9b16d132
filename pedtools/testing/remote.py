"""An emulated Remote PED behind real pedserver and pedclient processes, for HSM tests.

`start_remote_ped` makes a keyring (an orange key holding a fresh RPV, and blank keys),
starts pedserver on loopback with an emulated PED worked by the auto operator, and
pedclient beside it; the returned `RemotePed` tells an HSM under test everything it needs:
pedclient's socket, pedserver's address, the keyring, and the RPV the HSM must hold
(`RemotePed.rpv`, as if ``hsm ped vector init`` had run on that orange key).
`RemotePed.connect` asks pedclient for a link (a `ped.transport.FrameTransport`);
`RemotePed.session` also runs the RPV handshake (`ped.hsm_api.open_ped_session`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs

from keys import Color, Keyring, ShareCollector, load_image, new_keyset, wipe
from pedtools.testing.procs import Site, SiteError, free_port

#: The label of the orange key the fixture makes.
ORANGE_LABEL = "Remote PED Vector"


@attrs.frozen
class RemotePed:
    """A running remote PED (pedserver + emulated PED + pedclient).  Holds no secret:
    the RPV is read from the orange key each time `rpv` is called."""

    host: str
    port: int
    keyring: Path
    orange_keys: tuple[Path, ...]
    pedclient_socket: Path
    pedserver_home: Path
    pedclient_home: Path
    device_uri: str
    site: Site = attrs.field(repr=False)

    def rpv(self) -> bytearray:
        """The RPV on the orange key(s): what the HSM side must hold (caller wipes)."""
        header = load_image(self.orange_keys[0]).header
        collector = ShareCollector(Color.ORANGE, header.keyset_id)
        for path in self.orange_keys:
            image = load_image(path)
            try:
                if collector.complete:
                    break
                collector.add(image)
            finally:
                image.wipe()
        return collector.secret()

    def pedserver_log(self) -> Path:
        return self.pedserver_home / "pedserver.log"

    def pedclient_log(self) -> Path:
        return self.pedclient_home / "pedclient.log"

    async def connect(self, *, timeout: float = 10.0, hsm_name: str = "") -> Any:
        """A link to pedserver through pedclient (a `PedclientTransport`; the caller
        closes it with ``await transport.aclose()``)."""
        from ped.link import connect_via_pedclient

        return await connect_via_pedclient(
            self.pedclient_socket, self.host, self.port, timeout=timeout, hsm_name=hsm_name
        )

    @asynccontextmanager
    async def session(self, *, hsm_serial: str = "TEST-HSM", **options: Any) -> AsyncIterator[Any]:
        """`connect`, then the RPV handshake: yields a `ped.hsm_api.PedSession`.
        *options* go to `open_ped_session` (key_timeout, op_timeout...)."""
        from ped.hsm_api import open_ped_session

        transport = await self.connect()
        try:
            rpv = self.rpv()
            try:
                async with open_ped_session(
                    transport, rpv=rpv, hsm_serial=hsm_serial, **options
                ) as session:
                    wipe(rpv)
                    yield session
            finally:
                wipe(rpv)
        finally:
            await transport.aclose()


def make_keyring(
    directory: Path, *, blanks: int = 8, orange_m: int = 1, orange_n: int = 1
) -> list[Path]:
    """Blank keys plus an orange keyset (M of N) holding a fresh RPV; returns the orange
    key files."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ring = Keyring(directory)
    images = new_keyset(Color.ORANGE, ORANGE_LABEL, orange_m, orange_n)
    try:
        orange = ring.imprint(images, create=True)
    finally:
        for image in images:
            image.wipe()
    ring.add_blanks(blanks)
    return orange


def start_remote_ped(
    site: Site,
    *,
    keyring: Path | None = None,
    pin_file: Path | None = None,
    device_options: Mapping[str, str] | None = None,
    log_level: str = "info",
    blanks: int = 8,
) -> RemotePed:
    """Start pedserver (emulated PED, auto operator) and pedclient in *site*.

    *keyring*: an existing key directory holding an orange key (default: a new one made
    by `make_keyring`).  *pin_file* and *device_options* (``m``, ``n``, ``pin``...) go
    into the ``emulated:`` device URI.
    """
    if keyring is None:
        keyring = site.root / "keyring"
        orange = make_keyring(keyring, blanks=blanks)
    else:
        orange = [e.path for e in Keyring(keyring).keys(color=Color.ORANGE)]
        if not orange:
            raise SiteError(f"{keyring} holds no orange key; the remote PED needs one")
    options = {"operator": "auto", **(dict(device_options or {}))}
    if pin_file is not None:
        options["pin-file"] = os.fspath(pin_file)
    query = "&".join(f"{k}={v}" for k, v in options.items())
    uri = f"emulated:{keyring}?{query}"
    server_home, client_home = site.home("pedserver"), site.home("pedclient")
    for attempt in range(3):
        port = free_port()
        try:
            site.start(
                "pedserver",
                server_home,
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                uri,
                "--log-level",
                log_level,
            )
            break
        except SiteError:
            if attempt == 2:  # a port taken between free_port() and the bind: try again
                raise
    site.start("pedclient", client_home, "--log-level", log_level)
    return RemotePed(
        host="127.0.0.1",
        port=port,
        keyring=keyring,
        orange_keys=tuple(orange),
        pedclient_socket=client_home / "pedclient.sock",
        pedserver_home=server_home,
        pedclient_home=client_home,
        device_uri=uri,
        site=site,
    )
