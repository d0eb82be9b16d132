"""What to run to fix a refused peer-link handshake (the ``fix:`` of every `PeerRejected`)."""

from __future__ import annotations

from ped.tls.errors import CertificateSide, RejectReason
from ped.tls.pins import ROLES, PinSnapshot, Program


def fix_command(
    snap: PinSnapshot,
    side: CertificateSide,
    reason: RejectReason,
    fp: str | None,
    *,
    server_side: bool,
) -> str:
    """The command (on this host or the other) that makes the refused handshake work."""
    me: Program = snap.program
    role = ROLES[me]
    other, noun, other_noun = role.other, role.noun, role.other_noun
    addr = _address_options(me)
    other_addr = _address_options(other)
    my_cert, their_cert = _certificate_command(me), _certificate_command(other)
    register = f"{me} {noun} register --name NAME --certificate FILE{addr}"
    if side is CertificateSide.OURS:
        share = f"(write FILE here with: {my_cert} export FILE)"
        there = f"on that host run: {other} {other_noun} register --name NAME --certificate FILE"
        if reason in (RejectReason.UNKNOWN, RejectReason.DELETED):
            return f"{there}{other_addr} {share}"
        if reason in (
            RejectReason.EXPIRED,
            RejectReason.NOT_YET_VALID,
            RejectReason.BAD_CERTIFICATE,
        ):
            return (
                f"check both clocks; else make a new certificate with: {my_cert} regen, "
                f"and register it there again {share}"
            )
        return f"check this host's identity with: {my_cert} show (or {my_cert} regen)"
    if reason is RejectReason.UNKNOWN:
        return (
            f"if you trust it (ask the other side for `{their_cert} show` and compare "
            f"the fingerprint), get the file from `{their_cert} export FILE` and "
            f"register it with: {register}"
        )
    if reason is RejectReason.DELETED:
        tomb = snap.tombstone(fp) if fp else None
        name = tomb.name if tomb else "NAME"
        when = f" on {tomb.deleted_at}" if tomb else ""
        return (
            f"it was registered as {name!r} and deleted{when}; to trust it again: "
            f"{me} {noun} register --name {name} --certificate FILE{addr}"
        )
    if reason in (RejectReason.EXPIRED, RejectReason.NOT_YET_VALID):
        reg = snap.by_fingerprint(fp) if fp else None
        name = reg.name if reg else "NAME"
        return (
            f"check both clocks; else the other side runs `{their_cert} regen` and "
            f"you replace it: {me} {noun} delete --name {name}, then "
            f"{register.replace('NAME', name)}"
        )
    if reason is RejectReason.NONE_PRESENTED:
        mode = " in peer-to-peer mode" if me in ("pedserver", "pedclient") else ""
        return f"the other end must be {other}{mode}, presenting its certificate"
    if reason is RejectReason.WRONG_KEY:
        return (
            f"the other end shows the certificate without holding its private key (an "
            f"impostor, or a damaged identity): compare `{their_cert} show` there"
        )
    if reason is RejectReason.NOT_EXPECTED:
        reg = snap.by_fingerprint(fp) if fp else None
        name = reg.name if reg else "another name"
        return (
            f"that address answers as {noun} {name!r}: check the addresses with: {me} {noun} list"
        )
    return f"compare `{their_cert} show` there with `{me} {noun} list` here"


def other_program(program: Program) -> str:
    """The daemon at the other end of a pinned link."""
    return ROLES[program].other


def _address_options(program: str) -> str:
    """The address options of *program*'s `register` (for the daemons that dial)."""
    role = ROLES.get(program)
    if role is None or not role.dials:
        return ""
    return f" --ip ADDRESS [--port {role.default_port}]"


def _certificate_command(program: str) -> str:
    """How *program*'s identity commands begin (pedhsm's live under ``ntls``, as Luna's)."""
    return "pedhsm ntls certificate" if program == "pedhsm" else f"{program} certificate"
