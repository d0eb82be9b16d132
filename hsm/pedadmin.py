"""The HSM's PED commands: its Remote PED Vector, the remote PED link, the PED timeouts.

``hsm ped vector init --remote`` (a zeroized HSM only) imprints the new RPV over the
remote PED in a channel keyed by a one-time password (``ped.pake``): the password is
shown here, typed on the PED; `_remote_imprint` runs one try of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hsm import policy as pol
from hsm.apiport import HsmApiPort, map_error
from hsm.crypto import random_key, wipe
from hsm.errors import AlreadyExists, InvalidCommand, NotInitialised, NotLoggedIn, PedUnavailable
from hsm.linkloss import LinkLoss
from hsm.state import HsmState, Notify
from keys.colors import Color
from ped.daemon.control import ControlError, ControlUnavailable, control_request
from ped.daemon.home import DaemonLayout
from ped.errors import PedError
from ped.pake import LIFETIME, TRIES, OneTimePassword, PasswordVoid, WrongPassword

#: Where a remote RPV initialisation goes: (pedserver host, port, peer name or None).
RemoteTarget = tuple[str, int, str | None]


def _pedclient_socket(st: HsmState) -> str:
    # The daemon's router (`hsm.pedlink.PedRouter`) knows pedclient's socket; the
    # `PedAccess` protocol does not promise one (a router without pedclient: '').
    return str(getattr(st.ped, "pedclient_socket", None) or "")


#: pedclient's control command that maps a PED id to its pedserver (pedclient.idcommands)
PED_ID_LOOKUP = "ped-id"


class PedCommands:
    """``hsm ped ...`` commands, over the daemon's PED router (``state.ped``)."""

    def __init__(self, state: HsmState) -> None:
        self._state = state
        #: (PED id, address) of the link opened by `hsm ped connect --id`, for `hsm ped show`
        self._via_id: tuple[int, str] | None = None

    def _rpv(self) -> bytearray:
        st = self._state
        sealed = st.store.get_meta("rpv_sealed")
        if sealed is None:
            raise NotInitialised(
                "the HSM has no Remote PED Vector; run `hsm ped vector init` with a local PED"
            )
        return st.master.unseal("rpv", bytes.fromhex(sealed))

    def rpv_if_set(self) -> bytearray | None:
        """A copy of the HSM's RPV (the caller wipes it), or None if it has none."""
        if self._state.store.get_meta("rpv_sealed") is None:
            return None
        return self._rpv()

    def _require_so_if_initialised(self, what: str) -> None:
        st = self._state
        if st.initialised and st.ram.so_key is None:
            raise NotLoggedIn(f"{what} on an initialised HSM needs the HSM SO: run `hsm login`")

    # ------------------------------------------------------------------ the RPV

    async def vector_init(self, notify: Notify, remote: RemoteTarget | None = None) -> str:
        st = self._state
        if remote is not None:
            return await self._vector_init_remote(notify, remote)
        self._require_so_if_initialised("initialising the RPV")
        fresh = random_key()
        async with st.ped_session(notify, local_only=True) as port:
            got = await port.imprint(Color.ORANGE, "Remote PED Vector", fresh)
        wipe(fresh)
        try:
            sealed = st.master.seal("rpv", got.secret)
        finally:
            got.wipe()
        with st.store.tx():
            st.store.set_meta("rpv_sealed", sealed.hex())
        st.event("rpv initialised")
        return "Remote PED Vector set in the HSM and on the orange PED key(s)."

    async def _vector_init_remote(self, notify: Notify, remote: RemoteTarget) -> str:
        st = self._state
        host, port, peer = remote
        target = f"peer {peer}" if peer is not None else f"{host}:{port}"
        if st.store.get_meta("rpv_sealed") is not None:
            raise AlreadyExists(
                "this HSM already has a Remote PED Vector; remote initialisation is only for "
                "a zeroized HSM. Connect with `hsm ped connect` and its orange key; to "
                "replace the RPV, run `hsm ped vector init` with a PED cabled to the HSM"
                + (" (HSM SO logged in)" if st.initialised else "")
            )
        if st.initialised:
            raise InvalidCommand(
                "remote RPV initialisation is allowed only on a zeroized HSM; on an "
                "initialised HSM run `hsm ped vector init` with a PED cabled to it "
                "(HSM SO logged in)"
            )
        if peer is None and not 1 <= port <= 65535:
            raise InvalidCommand(f"port {port} is not a TCP port (1-65535); pedserver uses 1503")
        if not _pedclient_socket(st):
            raise PedUnavailable(
                "no pedclient: restart pedhsm with --pedclient PATH (pedclient's socket)"
            )
        password = OneTimePassword.issue(time.time())
        fresh = random_key()
        st.event("rpv remote init started", address=target)
        notify(f"One-time password: {password.display()}")
        notify(
            f"On the PED at {target}: type this password when the PED asks for it, then "
            f"imprint the orange key(s). It is good for {int(LIFETIME) // 60} minutes and "
            f"{TRIES} tries, once."
        )
        try:
            while True:
                try:
                    got = await self._remote_imprint(remote, target, password, fresh)
                    break
                except WrongPassword:
                    left = password.tries_left
                    st.event("rpv remote init wrong password", address=target, tries_left=left)
                    if left <= 0:
                        raise InvalidCommand(
                            f"the password typed on the PED was wrong {TRIES} times: it is "
                            "void, nothing was imprinted. Run `hsm ped vector init --remote` "
                            "again for a new password"
                        ) from None
                    notify(f"The password typed on the PED was wrong ({left} tries left): "
                           "type it again on the PED.")
                except PasswordVoid as exc:
                    raise InvalidCommand(
                        f"{exc}: run `hsm ped vector init --remote` again"
                    ) from None
        finally:
            wipe(fresh)
            password.wipe()
        try:
            sealed = st.master.seal("rpv", got)
        finally:
            wipe(got)
        with st.store.tx():
            st.store.set_meta("rpv_sealed", sealed.hex())
        st.event("rpv initialised", address=target, remote=True)
        how = f"--peer {peer}" if peer is not None else f"--ip {host} --port {port}"
        return (
            f"Remote PED Vector set in the HSM and on the orange PED key(s) at {target}. "
            f"Connect with `hsm ped connect {how}`."
        )

    async def _remote_imprint(
        self, remote: RemoteTarget, target: str, password: OneTimePassword, fresh: bytearray
    ) -> bytearray:
        """One try of the password: link, PAKE, the confirming handshake, the imprint."""
        from ped.hsm_api.pake import open_pake_session
        from ped.link import connect_via_pedclient

        st = self._state
        host, port, peer = remote
        t = self.timeouts()
        where = f"remote PED {target}"
        try:
            transport = await connect_via_pedclient(
                _pedclient_socket(st), host if peer is None else None,
                port if peer is None else 1503, peer=peer, idle_timeout=t["rped"],
                hsm_name=f"pedhsm {st.serial}",
            )
        except PedError as exc:
            raise map_error(exc, where) from None
        try:
            async with open_pake_session(
                transport, password=password, hsm_serial=st.serial,
                entry_timeout=t["pedk"], key_timeout=t["pedk"], op_timeout=t["pedo"],
            ) as ped:
                port_ = HsmApiPort(ped, where, lambda: None, self.timeouts)
                got = await port_.imprint(Color.ORANGE, "Remote PED Vector", fresh)
                return got.secret
        except (WrongPassword, PasswordVoid):
            raise
        except PedError as exc:
            raise map_error(exc, where) from None
        finally:
            await transport.aclose()

    async def vector_erase(self) -> str:
        st = self._state
        self._require_so_if_initialised("erasing the RPV")
        await st.ped.disconnect()
        with st.store.tx():
            st.store.set_meta("rpv_sealed", None)
        st.store.checkpoint()
        st.event("rpv erased")
        return "Remote PED Vector erased; remote PED use needs a new `hsm ped vector init`."

    # ------------------------------------------------------------------ the remote link

    async def connect(
        self,
        notify: Notify,
        host: str,
        port: int,
        *,
        peer: str | None = None,
        ped_id: int | None = None,
    ) -> str:
        """Open the remote PED link: to pedserver *host*:*port*, or over the peer link
        that the pedserver registered in pedclient as *peer* dialled in (peer-to-peer)."""
        st = self._state
        if ped_id is not None:
            if port != 1503:  # the shell's default: a --port given beside --id
                raise InvalidCommand(
                    f"--port goes with --ip: PED id {ped_id} has its own port in pedclient"
                )
            host, port = await self._resolve_ped_id(ped_id)
        if peer is None and not 1 <= port <= 65535:
            raise InvalidCommand(f"port {port} is not a TCP port (1-65535); pedserver uses 1503")
        if peer is not None and not peer.strip():
            raise InvalidCommand(
                "--peer needs the name the pedserver is registered under in pedclient"
            )
        target = f"peer {peer}" if peer is not None else f"{host}:{port}"
        status = self.status()
        if status.get("connected"):
            # The working link stays: a second connect would drop it and ask for the
            # orange key again.
            here = status.get("address")
            since = f" since {status['since']}" if status.get("since") else ""
            text = (
                f"Remote PED already connected ({here}{since}); the link stays. To connect "
                "to another remote PED, run `hsm ped disconnect` first."
            )
            if st.ped.status().get("address") == target:  # the same pedserver, by any name
                return text
            raise AlreadyExists(text)
        rpv = self._rpv()
        notify("PED operation required to connect to Remote PED - use orange PED Key(s).")
        pedk = self.timeouts()["pedk"]
        notify(
            f"PED: present this HSM's orange key(s) at {target} (the PED asks for each key "
            f"and its PIN; pedk {pedk} s per key)."
        )
        try:
            where = await st.ped.connect(host, port, rpv, notify, peer=peer)
        except PedUnavailable as exc:
            st.event("ped connect failed", address=target, reason=exc.message)
            raise
        finally:
            wipe(rpv)
        self._via_id = None if ped_id is None else (ped_id, where)
        if ped_id is None:
            st.event("ped connected", address=where)
            return f"Remote PED connected ({where})."
        st.event("ped connected", address=where, ped_id=ped_id)
        return f"Remote PED connected ({where}, PED id {ped_id})."

    async def _resolve_ped_id(self, ped_id: int) -> tuple[str, int]:
        """The pedserver address pedclient keeps for *ped_id* (`pedclient mode assignid`)."""
        socket = self._state.ped.status().get("pedclient")
        if not socket:
            raise PedUnavailable(
                "no pedclient: `hsm ped connect --id` asks pedclient for the address; "
                "restart pedhsm with --pedclient PATH"
            )
        control = DaemonLayout(Path(socket).parent).control
        try:
            found = await control_request(
                control, PED_ID_LOOKUP, {"id": ped_id}, timeout=10.0, what="pedclient"
            )
        except ControlUnavailable:
            raise PedUnavailable(
                f"cannot look up PED id {ped_id}: pedclient does not answer on {control} "
                "(start it with `pedclient mode start`), or connect with --ip A --port P"
            ) from None
        except ControlError as exc:
            if exc.code == "unknown-id":
                raise InvalidCommand(exc.message) from None
            raise PedUnavailable(
                f"pedclient could not look up PED id {ped_id}: {exc.message}"
            ) from None
        host, port = found.get("host"), found.get("port")
        if not isinstance(host, str) or not isinstance(port, int):
            raise PedUnavailable(f"pedclient's answer for PED id {ped_id} has no address")
        return host, port

    async def disconnect(self) -> str:
        st = self._state
        lost = st.ped.status().get("lost")
        was = await st.ped.disconnect()
        self._via_id = None
        if was:
            st.event("ped disconnected", reason="hsm ped disconnect")
            return "Remote PED disconnected."
        if lost:
            st.event("ped link forgotten", address=lost["address"], reason="hsm ped disconnect")
            after = "the local PED" if st.ped.status().get("local") else "no PED until connected"
            return (
                f"The lost Remote PED link ({lost['address']}) is forgotten; PED operations "
                f"use {after} from now on."
            )
        return "No Remote PED was connected."

    def link_dropped(self, loss: LinkLoss) -> None:
        """Called by the router when a remote link ends without `hsm ped disconnect`."""
        self._state.event(
            "ped disconnected",
            address=loss.address,
            by=loss.end.by,
            reason=f"{loss.end.why}: {loss.end.detail}",
        )

    def status(self) -> dict[str, Any]:
        """The router's status; the address names the PED id the link was opened by."""
        status = self._state.ped.status()
        via = self._via_id
        if via is not None and status.get("connected") and status.get("address") == via[1]:
            status = {**status, "address": f"{via[1]} (PED id {via[0]})", "ped_id": via[0]}
        return status

    # ------------------------------------------------------------------ timeouts

    def timeouts(self) -> dict[str, int]:
        out = {}
        for name, d in pol.PED_TIMEOUTS.items():
            out[name] = int(self._state.store.get_meta(f"timeout.{name}") or d.default)
        return out

    def timeout_set(self, kind: str, seconds: int) -> str:
        st = self._state
        d = pol.PED_TIMEOUTS.get(kind)
        if d is None:
            raise InvalidCommand(f"timeout type {kind!r} is not one of: rped, pedk, pedo")
        value = d.default if seconds == 0 else seconds
        if not d.low <= value <= d.high:
            raise InvalidCommand(
                f"{kind} ({d.description}) takes {d.low}-{d.high} seconds "
                f"(0 restores the default {d.default}), not {seconds}"
            )
        with st.store.tx():
            st.store.set_meta(f"timeout.{kind}", str(value))
        st.event("ped timeout set", type=kind, seconds=value)
        return f"{kind} timeout ({d.description}) set to {value} s."
