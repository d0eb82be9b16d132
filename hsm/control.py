"""The control socket's HSM commands as a table: name, arguments, handler, renderer.

Theory of operation
-------------------
A shell request is a command name and a JSON object of arguments.  Each `Command` row
says which arguments it takes (parsers, applied in order, so the first bad one is the one
reported), which `hsm.engine.Hsm` method handles it, and how its result becomes the
answer (``{"text": ...}`` plus, for show commands, the raw ``data``).  ``read_only`` rows
are served at once, even while another command waits for a person at the PED.

The daemon's own commands (``mode show``, ``mode stop``) are `hsm.server.Daemon`'s; a
new HSM command is one row here and one line in `hsm.cli`'s parser.  The shell's own
``partition select`` (the current partition, `hsm.current`) has no row: the daemon never
sees it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from hsm import render
from hsm.engine import Hsm
from hsm.errors import InvalidCommand
from hsm.state import Notify
from ped.daemon import ControlError

Args = Mapping[str, Any]
Parse = Callable[[Args], Any]
Reply = dict[str, Any]
#: (hsm, notify, *parsed arguments) -> the result, or an awaitable of it
Handler = Callable[..., Any]
#: (result, parsed arguments) -> the answer sent to the shell
Renderer = Callable[[Any, tuple[Any, ...]], Reply]

MAX_CHALLENGE_HEX = 2 * 256
MAX_VALUE_HEX = 2 * 64 * 1024


# ---------------------------------------------------------------------- arguments


def text(name: str) -> Parse:
    """A required, non-empty string."""

    def parse(args: Args) -> str:
        value = args.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidCommand(f"--{name.replace('_', '-')} is required")
        return value

    return parse


def number(name: str) -> Parse:
    """A required whole number."""

    def parse(args: Args) -> int:
        value = args.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidCommand(f"--{name} needs a whole number")
        return value

    return parse


def flag(name: str) -> Parse:
    """A switch such as ``--force`` (absent: off)."""
    return lambda args: bool(args.get(name))


def optional_text(name: str) -> Parse:
    """A string that may be left out (absent or empty: None)."""
    return lambda args: args.get(name) or None


def positive(name: str) -> Parse:
    """A whole number above zero, or None (absent or anything else)."""

    def parse(args: Args) -> int | None:
        value = args.get(name)
        return value if isinstance(value, int) and value > 0 else None

    return parse


def hex_bytes(name: str, limit: int) -> Parse:
    """Bytes sent as hex (a file the shell read), at most *limit* hex digits; may be absent."""

    def parse(args: Args) -> bytes | None:
        value = args.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidCommand(f"{name} is too long or not text")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise InvalidCommand(f"{name} is not hex") from None

    return parse


def ped_target(args: Args) -> tuple[str, int, str | None]:
    """``--peer NAME`` (peer-to-peer), else ``--ip A --port P``: (host, port, peer)."""
    if args.get("peer") is not None:
        return "", 0, text("peer")(args)
    return text("ip")(args), number("port")(args), None


def ped_id(args: Args) -> int | None:
    """``hsm ped connect --id N``: pedclient's number for a pedserver address, else None."""
    value = args.get("ped_id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidCommand("--id needs a PED id (a whole number from 0)")
    return value


def ped_connect_target(args: Args) -> tuple[str, int, str | None, int | None]:
    """``hsm ped connect``: ``--id N`` (pedclient resolves it), else as `ped_target`."""
    number = ped_id(args)
    if number is not None:
        return "", number_or_default(args), None, number
    return (*ped_target(args), None)


def number_or_default(args: Args) -> int:
    # The shell's default --port is 1503; with --id only that value is accepted there.
    value = args.get("port", 1503)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1503


def remote_target(args: Args) -> tuple[str, int, str | None] | None:
    """``--remote`` with the pedserver (``--ip``/``--port`` or ``--peer``), else None."""
    if not args.get("remote"):
        if args.get("ip") is not None or args.get("peer") is not None:
            raise InvalidCommand("--ip and --peer go with --remote (a zeroized HSM's remote "
                                 "RPV initialisation); without it the RPV is made locally")
        return None
    if args.get("ip") is None and args.get("peer") is None:
        raise InvalidCommand("--remote needs the pedserver: --ip A [--port P] or --peer NAME")
    return ped_target(args)


# ---------------------------------------------------------------------- answers


def as_text(result: str, values: tuple[Any, ...]) -> Reply:
    return {"text": result}


def shown(view: Callable[[Any], str]) -> Renderer:
    """The result rendered for a person, and the result itself as data."""
    return lambda result, values: {"text": view(result), "data": result}


def _ped_show(result: tuple[dict[str, Any], dict[str, int]], values: tuple[Any, ...]) -> Reply:
    status, timeouts = result
    return {"text": render.ped_show(status, timeouts), "data": status}


def _audit_records(records: list[dict[str, Any]], values: tuple[Any, ...]) -> Reply:
    return {"text": render.audit_records(records), "count": len(records)}


def _audit_verified(r: dict[str, Any], values: tuple[Any, ...]) -> Reply:
    if not r["ok"]:
        raise ControlError(
            f"audit log verification FAILED after {r['records']} good record(s): "
            f"{r['problem']}",
            "audit-broken",
        )
    return {"text": f"Audit log verified: {r['records']} record(s), chain intact.", "data": r}


# ---------------------------------------------------------------------- the table


@attrs.frozen
class Command:
    name: str
    args: tuple[Parse, ...]
    handler: Handler
    render: Renderer = as_text
    read_only: bool = False


_CHALLENGE = hex_bytes("challenge", MAX_CHALLENGE_HEX)
_ROLE = (text("partition"), text("name"))

COMMANDS: tuple[Command, ...] = (
    # HSM SO
    Command("hsm.init", (text("label"), flag("force")),
            lambda h, n, label, force: h.admin.init(n, label, force)),
    Command("hsm.login", (), lambda h, n: h.admin.login(n)),
    Command("hsm.logout", (), lambda h, n: h.admin.logout()),
    Command("hsm.changepw", (), lambda h, n: h.admin.changepw(n)),
    Command("hsm.show", (), lambda h, n: h.admin.show(), shown(render.hsm_show), read_only=True),
    Command("hsm.zeroize", (flag("force"),), lambda h, n, force: h.admin.zeroize(force)),
    Command("hsm.showpolicies", (), lambda h, n: h.admin.showpolicies(),
            shown(render.hsm_policies), read_only=True),
    Command("hsm.changepolicy", (number("policy"), number("value"), flag("force")),
            lambda h, n, code, value, force: h.admin.changepolicy(code, value, force)),
    Command("hsm.tamper", (), lambda h, n: h.admin.tamper()),
    # RPV, PED link, PED timeouts
    Command("hsm.ped.vector.init", (remote_target,),
            lambda h, n, remote: h.ped.vector_init(n, remote)),
    Command("hsm.ped.vector.erase", (), lambda h, n: h.ped.vector_erase()),
    Command("hsm.ped.connect", (ped_connect_target,),
            lambda h, n, t: h.ped.connect(n, t[0], t[1], peer=t[2], ped_id=t[3])),
    Command("hsm.ped.disconnect", (), lambda h, n: h.ped.disconnect()),
    Command("hsm.ped.show", (), lambda h, n: (h.ped.status(), h.ped.timeouts()), _ped_show,
            read_only=True),
    Command("hsm.ped.timeout.show", (), lambda h, n: h.ped.timeouts(),
            shown(render.ped_timeouts), read_only=True),
    Command("hsm.ped.timeout.set", (text("type"), number("seconds")),
            lambda h, n, kind, seconds: h.ped.timeout_set(kind, seconds)),
    # partitions
    Command("partition.create", (text("name"),), lambda h, n, name: h.partitions.create(name)),
    Command("partition.init", (text("name"), flag("force"), flag("domain_from_red_key")),
            lambda h, n, name, force, join: h.partitions.init(n, name, force, join)),
    Command("partition.show", (text("name"),), lambda h, n, name: h.partitions.show(name),
            shown(render.partition_show), read_only=True),
    Command("partition.delete", (text("name"), flag("force")),
            lambda h, n, name, force: h.partitions.delete(name, force)),
    Command("partition.showpolicies", (text("name"),),
            lambda h, n, name: h.partitions.showpolicies(name),
            lambda rows, v: {"text": render.partition_policies(v[0], rows), "data": rows},
            read_only=True),
    Command("partition.changepolicy", (text("name"), number("policy"), number("value")),
            lambda h, n, name, code, value: h.partitions.changepolicy(name, code, value)),
    # Luna's `partition resetPw -p P`: the partition SO resets the Crypto Officer
    Command("partition.resetpw", (text("name"), _CHALLENGE),
            lambda h, n, part, chal: h.roles.resetpw(n, part, "co", chal)),
    # Luna's `partition changePw`: a new blue key for the partition SO (hsm.changepw)
    Command("partition.changepw", (text("name"),),
            lambda h, n, part: h.roles.changepw(n, part, "so", None)),
    # partition roles
    Command("role.init", (*_ROLE, _CHALLENGE),
            lambda h, n, part, role, chal: h.roles.init(n, part, role, chal)),
    Command("role.login", (*_ROLE, _CHALLENGE),
            lambda h, n, part, role, chal: h.roles.login(n, part, role, chal)),
    Command("role.logout", (optional_text("partition"),),
            lambda h, n, part: h.roles.logout(part)),
    Command("role.resetpw", (*_ROLE, _CHALLENGE),
            lambda h, n, part, role, chal: h.roles.resetpw(n, part, role, chal)),
    Command("role.changepw", (*_ROLE, _CHALLENGE, flag("challenge_only"), flag("secret_only")),
            lambda h, n, part, role, chal, c_only, s_only: h.roles.changepw(
                n, part, role, chal, challenge_only=c_only, secret_only=s_only)),
    Command("role.activate", _ROLE, lambda h, n, part, role: h.roles.activate(n, part, role)),
    Command("role.deactivate", _ROLE, lambda h, n, part, role: h.roles.deactivate(part, role)),
    # objects
    # the value is parsed first, as it always was: a bad request reports the same error
    Command("object.create", (hex_bytes("value", MAX_VALUE_HEX), text("partition"), text("label")),
            lambda h, n, value, part, label: h.objects.create(part, label, value)),
    Command("object.list", (text("partition"),), lambda h, n, part: h.objects.list_objects(part),
            lambda rows, v: {"text": render.objects(v[0], rows), "data": rows}),
    # the client path's registry (HSM SO) and the HSM's certificate for port 1792
    Command("client.register", (text("name"), text("certificate"), optional_text("hostname")),
            lambda h, n, name, pem, host: h.clients.register(name, pem.encode(), host)),
    Command("client.list", (), lambda h, n: h.clients.list_clients(), shown(render.clients),
            read_only=True),
    Command("client.show", (text("name"),), lambda h, n, name: h.clients.show(name),
            shown(render.client_show), read_only=True),
    Command("client.delete", (text("name"), flag("force")),
            lambda h, n, name, force: h.clients.delete(name, force)),
    Command("client.assignpartition", (text("client"), text("partition")),
            lambda h, n, client, part: h.clients.assign(client, part)),
    Command("client.revokepartition", (text("client"), text("partition")),
            lambda h, n, client, part: h.clients.revoke(client, part)),
    Command("ntls.certificate.export", (text("file"),),
            lambda h, n, path: h.clients.certificate_export(path)),
    Command("ntls.certificate.show", (), lambda h, n: h.clients.certificate_show(),
            read_only=True),
    # the auditor
    Command("audit.init", (flag("force"),), lambda h, n, force: h.auditor.init(n, force)),
    Command("audit.login", (), lambda h, n: h.auditor.login(n)),
    Command("audit.logout", (), lambda h, n: h.auditor.logout()),
    Command("audit.log.show", (positive("tail"),), lambda h, n, tail: h.auditor.show(tail),
            _audit_records),
    Command("audit.log.verify", (), lambda h, n: h.auditor.verify(), _audit_verified,
            read_only=True),
)  # fmt: skip

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


async def run(command: Command, hsm: Hsm, args: Args, notify: Notify) -> Reply:
    """Parse *args*, run the handler, render its answer."""
    values = tuple(parse(args) for parse in command.args)
    result = command.handler(hsm, notify, *values)
    if inspect.isawaitable(result):
        result = await result
    return command.render(result, values)
