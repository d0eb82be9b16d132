"""The ``hagroup`` commands' work: configuration edits, and the checks that need the HSMs.

`edit` changes the configuration file only (retry, interval, synchronize, removemember,
deletegroup): the command line runs it itself when no daemon runs, else the daemon
does (`ha_command`) and picks the change up at once.  Creating a group, adding a member
and recovering need the members' HSMs, so only the running daemon does them: each
checks the prerequisites first and refuses naming the member and the fix (the Crypto
Officer's challenge accepted, its role activated with auto-activation, the same cloning
domain as the group's, tried with a cloning handshake that moves no object; a pedhsm too
old to say whether auto-activation is on gets a warning instead).  `listing` is
``listgroups``' data, with each member's state when the daemon gives it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from hsmclient.commands_clone import relay_clone
from hsmclient.ha import config as ha_config
from hsmclient.ha.backend import HA_SERVER, HaBackend
from hsmclient.ha.config import (
    INTERVAL_RANGE,
    RETRY_RANGE,
    HaConfig,
    HaConfigError,
    HaGroup,
    MemberRef,
    check_label,
    group_serial,
)
from hsmclient.ha.members import GroupState
from hsmclient.ha.replicate import DOMAIN_MISMATCH, conflicting, domains_named
from hsmclient.remote import RemoteApplication
from hsmclient.remote_link import LinkDown
from hsmclient.slots import SlotMap
from ped.pkcs11.constants import CKR, CKU
from ped.pkcs11.token import Pkcs11Error

#: The actions that only edit the configuration.
EDITS = ("retry", "interval", "synchronize", "removemember", "deletegroup")


def resolve_member(slot_map: SlotMap, args: dict[str, Any]) -> MemberRef:
    """The member ``--slot S`` or ``--serialnumber N`` names."""
    if args.get("slot") is not None:
        where = slot_map.where(int(args["slot"]))
        if where is None or where[0] == HA_SERVER:
            raise HaConfigError(f"slot {args['slot']} is not a partition's slot; see: "
                                "hsmclient slot list")  # fmt: skip
        return MemberRef(*where)
    serial = str(args.get("serialnumber") or "")
    found = [e for e in slot_map.entries()
             if e.serial == serial and not e.retired and e.server != HA_SERVER]  # fmt: skip
    if len(found) != 1:
        raise HaConfigError(f"no single partition with serial number {serial!r} "
                            f"({len(found)} found); see: hsmclient slot list")  # fmt: skip
    return MemberRef(found[0].server, found[0].serial)


def edit(config: HaConfig, slot_map: SlotMap, action: str,
         args: dict[str, Any]) -> tuple[HaConfig, str]:  # fmt: skip
    """The configuration after one of `EDITS`, and what to say."""
    if action == "interval":
        value = int(args["interval"])
        if not INTERVAL_RANGE[0] <= value <= INTERVAL_RANGE[1]:
            raise HaConfigError(f"the interval is {INTERVAL_RANGE[0]} to {INTERVAL_RANGE[1]} "
                                f"seconds (got {value})")  # fmt: skip
        return attrs.evolve(config, interval=value), f"HA recovery poll interval: {value} s"
    if action == "deletegroup":
        return config.without(args["label"]), f"HA group {args['label']} deleted"
    group = config.group(args["group"])
    if action == "retry":
        count = int(args["count"])
        if not RETRY_RANGE[0] <= count <= RETRY_RANGE[1]:
            raise HaConfigError(f"the retry count is {RETRY_RANGE[0]} to {RETRY_RANGE[1]} "
                                f"(got {count})")  # fmt: skip
        said = ("automatic recovery off: a member that comes back waits for hagroup recover"
                if count == 0 else f"automatic recovery on: {count} attempts per failure")
        return config.replace(attrs.evolve(group, retry=count)), f"HA group {group.label}: {said}"
    if action == "synchronize":
        on = bool(args["enable"])
        return (config.replace(attrs.evolve(group, synchronize=on)),
                f"HA group {group.label}: synchronization {'enabled' if on else 'disabled'}")
    if action == "removemember":
        ref = resolve_member(slot_map, args)
        if ref not in group.members:
            raise HaConfigError(f"{ref} is not a member of HA group {group.label}")
        if len(group.members) == 1:
            raise HaConfigError(f"{ref} is the last member of HA group {group.label}: "
                                f"delete the group instead (hagroup deletegroup --label "
                                f"{group.label})")  # fmt: skip
        members = tuple(m for m in group.members if m != ref)
        return (config.replace(attrs.evolve(group, members=members)),
                f"{ref} removed from HA group {group.label}")
    raise HaConfigError(f"unknown HA action {action!r}")


#: ``listgroups``' words for a member's auto-activation (None: not known).
AUTO_WORDS = {True: "on", False: "off", None: "unknown"}


def listing(config: HaConfig, slot_map: SlotMap, states: dict[str, GroupState] | None,
            autos: dict[MemberRef, bool | None] | None = None) -> dict[str, Any]:  # fmt: skip
    """``listgroups``: every group, its settings and members (states and auto-activation
    when known)."""
    groups = []
    for g in config.groups:
        state = (states or {}).get(g.label)
        members = []
        for ref in g.members:
            row: dict[str, Any] = {"slot": slot_map.slot_for(ref.server, ref.serial),
                                   "server": ref.server, "serial": ref.serial}  # fmt: skip
            if state is None:
                row |= {"state": "unknown (hsmclient is not running)", "since": None,
                        "why": "", "needs_sync": None}  # fmt: skip
            else:
                s = state.status(ref)
                row |= {"state": s.state.value, "since": s.since or None, "why": s.why,
                        "needs_sync": s.needs_sync}  # fmt: skip
            row["auto_activation"] = AUTO_WORDS[(autos or {}).get(ref)]
            members.append(row)
        groups.append({"label": g.label, "serial": g.serial,
                       "slot": slot_map.slot_for(HA_SERVER, g.label),
                       "auto_recovery": g.retry > 0, "retry": g.retry,
                       "synchronize": g.synchronize, "members": members})  # fmt: skip
    return {"interval": config.interval, "groups": groups}


# ---- the daemon's side ---------------------------------------------------------------


async def ha_command(backend: object, args: dict[str, Any]) -> dict[str, Any]:
    """The daemon's ``hagroup`` control command: ``{"said": [...]}`` or ``{"error": WHY}``."""
    if not isinstance(backend, HaBackend):
        return {"error": "this hsmclient serves no HA groups (its backend is not hsmclient's)"}
    action = str(args.get("action"))
    password = args.pop("password", None)
    pin = bytearray(password.encode()) if password else None
    try:
        if action == "reload":
            backend.reload()
            return {"said": []}
        if action == "listgroups":
            return listing(backend.config, backend.slot_map, backend.states(),
                           await backend.auto_activations())  # fmt: skip
        if action in EDITS:
            config, said = edit(backend.config, backend.slot_map, action, args)
            ha_config.save(backend.home, config)
            backend.reload()
            if action == "synchronize" and args.get("enable"):
                return {"said": [said, *await backend.synchronize(str(args["group"]), pin)]}
            return {"said": [said]}
        if action == "recover":
            return {"said": await backend.recover(str(args["group"]), pin)}
        if pin is None:
            return {"error": f"hagroup {action} needs the Crypto Officer's challenge"}
        if action == "creategroup":
            return {"said": await _create(backend, args, pin)}
        if action == "addmember":
            return {"said": await _add(backend, args, pin)}
        return {"error": f"unknown HA action {action!r}"}
    except (HaConfigError, Pkcs11Error) as exc:
        return {"error": str(exc)}
    finally:
        if pin is not None:
            pin[:] = bytes(len(pin))


def _taken(backend: HaBackend, ref: MemberRef) -> None:
    owner = backend.config.group_of(ref)
    if owner is not None:
        raise HaConfigError(f"{ref} is a member of HA group {owner.label} already")


async def _logged_in(app: RemoteApplication, slot: int, ref: MemberRef, pin: bytearray) -> int:
    """A session on *ref* with its Crypto Officer logged in; refusals name the fix."""
    try:
        session = await app.open_session(slot, True)
        await app.login(session, CKU.USER, bytearray(pin))
    except Pkcs11Error as exc:
        if exc.rv == CKR.PIN_INCORRECT:
            raise HaConfigError(
                f"the Crypto Officer challenge is wrong for {ref} (slot {slot}; counted as a "
                "failed login on that HSM): every member needs the same Crypto Officer "
                "credentials") from None  # fmt: skip
        if exc.rv == CKR.USER_PIN_NOT_INITIALIZED:
            raise HaConfigError(
                f"{ref} (slot {slot}) is not activated: on its HSM, `pedhsm role activate "
                "--partition NAME --name co` (with auto-activation, policy 23, so that it "
                f"stays activated across restarts): {exc}") from None  # fmt: skip
        raise HaConfigError(f"{ref} (slot {slot}) cannot be used: {exc}") from None
    return session


async def _auto_activated(backend: HaBackend, ref: MemberRef, slot: int) -> list[str]:
    """Refuse *ref* unless its role is activated with auto-activation (policy 23: it must
    stay activated when its HSM restarts); a warning when its pedhsm cannot say (protocol
    version 1)."""
    try:
        listed = (await backend.listed(ref.server)).get(ref.serial)
    except (LinkDown, Pkcs11Error) as exc:
        raise HaConfigError(f"{ref} (slot {slot}) cannot be used: {exc}") from None
    if listed is None:
        raise HaConfigError(f"{ref} (slot {slot}): the partition is not there any more "
                            "(removed, or not assigned to this client)")  # fmt: skip
    name = listed.info.label
    if listed.auto_activation is None:
        return [f"warning: {ref} (slot {slot}): its pedhsm cannot say whether the partition "
                "is activated with auto-activation (it speaks client protocol version 1); "
                f"check on its HSM with `pedhsm partition showpolicies --name {name}` "
                "(policy 23 must be 1, set before `role activate`), or upgrade pedhsm"]
    if not listed.auto_activation:
        raise HaConfigError(
            f"{ref} (slot {slot}) is activated without auto-activation, so it would drop out "
            "of the group when its HSM restarts: on its HSM, as the partition SO, `pedhsm "
            f"partition changepolicy --name {name} --policy 23 --value 1`, then `pedhsm role "
            f"activate --partition {name} --name co` again")  # fmt: skip
    return []


async def _create(backend: HaBackend, args: dict[str, Any], pin: bytearray) -> list[str]:
    label = str(args["label"])
    check_label(label, [g.label for g in backend.config.groups])
    ref = resolve_member(backend.slot_map, args)
    _taken(backend, ref)
    app = RemoteApplication(backend)
    try:
        await _logged_in(app, backend.member_slot(ref), ref, pin)
        warnings = await _auto_activated(backend, ref, backend.member_slot(ref))
    finally:
        await app.close()
    group = HaGroup(label, group_serial(ref), (ref,))
    ha_config.save(backend.home, backend.config.replace(group))
    backend.reload()
    backend.state(label).synced(ref, time.time())
    slot = backend.slot_map.slot_for(HA_SERVER, label)
    return [f"HA group {label} created: virtual slot {slot}, serial {group.serial}, "
            f"first member {ref} (slot {backend.member_slot(ref)})", *warnings]


async def _add(backend: HaBackend, args: dict[str, Any], pin: bytearray) -> list[str]:
    group = backend.config.group(str(args["group"]))
    ref = resolve_member(backend.slot_map, args)
    _taken(backend, ref)
    reference = (backend.state(group.label).in_use() or list(group.members))[0]
    app = RemoteApplication(backend)
    try:
        target = await _logged_in(app, backend.member_slot(ref), ref, pin)
        warnings = await _auto_activated(backend, ref, backend.member_slot(ref))
        source = await _logged_in(app, backend.member_slot(reference), reference, pin)
        try:
            await relay_clone(app, source, target, [])  # the domain check: nothing moves
        except Pkcs11Error as exc:
            if DOMAIN_MISMATCH not in str(exc):
                raise
            raise HaConfigError(f"{ref} not added: "
                                + conflicting(backend, reference, ref, domains_named(str(exc)))
                                ) from None
    finally:
        await app.close()
    ha_config.save(backend.home, backend.config.replace(
        attrs.evolve(group, members=(*group.members, ref))))
    backend.reload()
    said = [f"{ref} (slot {backend.member_slot(ref)}) added to HA group {group.label}"]
    said.append(await backend.bring_back(backend.config.group(group.label), ref, pin))
    return [*said, *warnings]


def offline(home: Path, action: str, args: dict[str, Any]) -> dict[str, Any]:
    """What the command line does itself when no daemon runs."""
    slot_map = SlotMap(home)
    try:
        config = ha_config.load(home)
        if action == "listgroups":
            return listing(config, slot_map, None)
        if action in EDITS:
            config, said = edit(config, slot_map, action, args)
            ha_config.save(home, config)
            return {"said": [said]}
    except HaConfigError as exc:
        return {"error": str(exc)}
    return {"error": "not running"}


def member_rows(groups: Sequence[dict[str, Any]]) -> list[str]:
    """``listgroups``' text, Luna's layout in spirit."""
    out = []
    for g in groups:
        out += [f"HA Group Label:  {g['label']}",
                f"HA Group Number: {g['serial']}",
                f"HA Group Slot ID: {g['slot']}",
                f"Synchronization: {'enabled' if g['synchronize'] else 'disabled'}",
                f"Auto Recovery:   {'on' if g['auto_recovery'] else 'off'}",
                f"Maximum Retry:   {g['retry']}",
                "  Slot  Serial           Server           State     Needs sync  Since / why"]
        for m in g["members"]:
            since = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m["since"]))
                     if m.get("since") else "")
            sync = {True: "yes", False: "no", None: "?"}[m.get("needs_sync")]
            why = f"{since} {m.get('why') or ''}".strip()
            out.append(f"  {m['slot']:<5} {m['serial']:<16} {m['server']:<16} "
                       f"{m['state']:<9} {sync:<11} {why}".rstrip())
            out.append(f"        auto-activation: {m.get('auto_activation', 'unknown')}")
        out.append("")
    return out
