"""The client path's test rig (an activated partition assigned to a registered client),
and the checks that the rig itself stands."""

from __future__ import annotations

from ped.pkcs11.constants import CKU
from ped.pkcs11.token import PartitionAccess
from ped.tls.certs import certificate_pem, fingerprint, generate_certificate
from tests.hsm.rig import CHAL, Rig

CLIENT = "app1"


def client_pem(name: str = CLIENT) -> tuple[bytes, str]:
    """A client certificate (PEM) and its fingerprint."""
    _, cert = generate_certificate(f"hsmclient {name}")
    return certificate_pem(cert), fingerprint(cert)


async def activated(rig: Rig, name: str = "p1", *, with_cu: bool = False,
                    activate: bool = True, auto: bool = False) -> None:  # fmt: skip
    """Partition *name* initialised, policy 22 on, its CO (and CU) activated."""
    await rig.init_partition(name, with_cu=with_cu)
    await rig.hsm.roles.login(rig.notify, name, "so", None)
    rig.hsm.partitions.changepolicy(name, 22, 1)
    if auto:
        rig.hsm.partitions.changepolicy(name, 23, 1)
    if activate:
        await rig.hsm.roles.activate(rig.notify, name, "co")
        if with_cu:
            await rig.hsm.roles.activate(rig.notify, name, "cu")
    rig.hsm.roles.logout(None)


def register(rig: Rig, client: str = CLIENT, *partitions: str) -> str:
    """Register *client* (HSM SO logged in) and assign it *partitions*; its fingerprint."""
    pem, fp = client_pem(client)
    rig.hsm.clients.register(client, pem, None)
    for partition in partitions:
        rig.hsm.clients.assign(client, partition)
    return fp


async def logged_in(rig: Rig, *, read_write: bool = True) -> tuple[PartitionAccess, int]:
    """A client connection with a session logged in as the CO of partition p1."""
    await activated(rig)
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    serial = access.partitions()[0].serial
    session = await access.open_session(serial, read_write)
    await access.login(session, CKU.USER, bytearray(CHAL))
    return access, session


async def test_the_rig_gives_a_logged_in_session(rig: Rig) -> None:
    access, session = await logged_in(rig)
    assert len(await access.find_objects(session, [])) == 0
    await access.close()
