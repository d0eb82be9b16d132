"""How hsmclient sees a Backup HSM: its clients' partitions plus one admin slot for archives.

A Backup HSM holds backup partitions, not partitions, so it shows every registered client
one extra partition, its *admin slot*: serial = the HSM's serial (a partition's serial
is longer), label ``backup HSM SERIAL``.  Sessions open on it without a login; nothing
but ``ARCHIVE`` requests (`hsm.backup.BackupClones`) works there, and every change
(backup, delete) needs the Backup HSM's SO logged in on its shell.
"""

from __future__ import annotations

from collections.abc import Sequence

from hsm.access import ClientAccess, _Session
from hsm.backup import ADMIN_PARTITION, BackupClones, BackupPartitions
from hsm.logins import LoginService
from hsm.state import HsmState
from hsm.store import PartitionRow
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import PartitionInfo, Pkcs11Error


class BackupAccess(ClientAccess):
    """A registered client's connection to a Backup HSM."""

    def __init__(self, state: HsmState, logins: LoginService, client: str) -> None:
        super().__init__(state, logins, client)
        self.clones = BackupClones(BackupPartitions(state), self._is_admin)

    def _admin(self) -> PartitionRow:
        return PartitionRow(ADMIN_PARTITION, self._state.serial, True, {}, None)

    def _is_admin(self, session: int) -> bool:
        s = self._sessions.get(session)
        if s is None:
            raise Pkcs11Error(CKR.SESSION_HANDLE_INVALID, f"no session {session} on this "
                              "connection (closed, or never opened)")  # fmt: skip
        return s.partition == ADMIN_PARTITION

    def partitions(self) -> Sequence[PartitionInfo]:
        admin = PartitionInfo(self._state.serial, f"backup HSM {self._state.serial}", True, False,
                              auto_activation=False)  # no role to activate
        return [*super().partitions(), admin]

    def _by_serial(self, serial: str) -> PartitionRow:
        if serial == self._state.serial:
            return self._admin()
        return super()._by_serial(serial)

    def _session(self, session: int) -> _Session:
        s = self._sessions.get(session)
        if s is not None and s.partition == ADMIN_PARTITION:
            return s
        return super()._session(session)

    async def login(self, session: int, user_type: int, pin: bytearray) -> None:
        if self._is_admin(session):
            pin[:] = bytes(len(pin))
            raise Pkcs11Error(CKR.USER_TYPE_INVALID,
                              "a Backup HSM's admin slot takes no login: its SO logs in on "
                              "the Backup HSM's shell (`pedhsm hsm login`)")  # fmt: skip
        await super().login(session, user_type, pin)
