"""A pedhsm NTLS listener (over a fake PartitionAccess) and an hsmclient home, in process.

`ntls_rig` starts `hsm.ntlsd.NtlsListener` on a loopback port with real pinned mutual
TLS, registers the client's certificate on the HSM side and the server on the client
side, and gives the pieces a test needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from hsm.ntlsd import NtlsListener, client_pins, ntls_identity
from hsmclient.remote import RemoteBackend
from hsmclient.slots import SlotMap
from ped.tls import PinStore, ensure_identity

from .fake_access import FakeAccess, Partition

SERIAL = "150001"


@attrs.define
class NtlsRig:
    hsm_home: Path
    client_home: Path
    listener: NtlsListener
    port: int
    partitions: dict[str, list[Partition]]  # client name -> its partitions
    accesses: list[FakeAccess]
    lock: trio.Lock
    nursery: trio.Nursery

    def backend(self) -> RemoteBackend:
        pins = PinStore(self.client_home, program="hsmclient")
        return RemoteBackend(self.client_home, pins, SlotMap(self.client_home))


@asynccontextmanager
async def ntls_rig(
    tmp_path: Path,
    partitions: dict[str, list[Partition]] | None = None,
    *,
    client_name: str = "app1",
    server_port: int | None = None,
    tap: Callable[[int], object] | None = None,
    **listener_options: object,
) -> AsyncIterator[NtlsRig]:
    hsm_home, client_home = tmp_path / "hsm", tmp_path / "client"
    hsm_home.mkdir(exist_ok=True)
    client_home.mkdir(exist_ok=True)
    parts = partitions if partitions is not None else {
        client_name: [Partition("1500010001", "app")]
    }  # fmt: skip
    accesses: list[FakeAccess] = []

    def access_for(name: str) -> FakeAccess:
        access = FakeAccess(parts.get(name, []))
        accesses.append(access)
        return access

    lock = trio.Lock()
    listener = NtlsListener(hsm_home, SERIAL, access_for, lock, port=0, host="127.0.0.1",
                            **listener_options)  # type: ignore[arg-type]  # fmt: skip
    client_id = ensure_identity(client_home, "app-host")
    client_pins(hsm_home).register(client_name, client_id.certificate_pem)
    server_id = ntls_identity(hsm_home, SERIAL)
    async with trio.open_nursery() as nursery:
        bound: Sequence[tuple[str, int]] = await nursery.start(listener.run)
        port = bound[0][1]
        PinStore(client_home, program="hsmclient").register(
            "hsm1", server_id.certificate_pem, ip="127.0.0.1", port=server_port or port
        )
        yield NtlsRig(hsm_home, client_home, listener, port, parts, accesses, lock, nursery)
        nursery.cancel_scope.cancel()
