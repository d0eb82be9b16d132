"""What to run to fix a refused peer-link handshake (the ``fix:`` of every `PeerRejected`)."""

from __future__ import annotations

from ped.tls.errors import CertificateSide, RejectReason
from ped.tls.pins import PinSnapshot, Program


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
    other = "pedclient" if me == "pedserver" else "pedserver"
    noun = "appliance" if me == "pedserver" else "peer"
    other_noun = "peer" if me == "pedserver" else "appliance"
    addr = " --ip ADDRESS [--port 9697]" if me == "pedserver" else ""
    other_addr = " --ip ADDRESS [--port 9697]" if other == "pedserver" else ""
    register = f"{me} {noun} register --name NAME --certificate FILE{addr}"
    if side is CertificateSide.OURS:
        share = f"(write FILE here with: {me} certificate export FILE)"
        there = f"on that host run: {other} {other_noun} register --name NAME --certificate FILE"
        if reason in (RejectReason.UNKNOWN, RejectReason.DELETED):
            return f"{there}{other_addr} {share}"
        if reason in (
            RejectReason.EXPIRED,
            RejectReason.NOT_YET_VALID,
            RejectReason.BAD_CERTIFICATE,
        ):
            return (
                f"check both clocks; else make a new certificate with: {me} certificate regen, "
                f"and register it there again {share}"
            )
        return f"check this host's identity with: {me} certificate show (or {me} certificate regen)"
    if reason is RejectReason.UNKNOWN:
        return (
            f"if you trust it (ask the other side for `{other} certificate show` and compare "
            f"the fingerprint), get the file from `{other} certificate export FILE` and "
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
            f"check both clocks; else the other side runs `{other} certificate regen` and "
            f"you replace it: {me} {noun} delete --name {name}, then "
            f"{register.replace('NAME', name)}"
        )
    if reason is RejectReason.NONE_PRESENTED:
        return f"the other end must be {other} in peer-to-peer mode, presenting its certificate"
    if reason is RejectReason.WRONG_KEY:
        return (
            f"the other end shows the certificate without holding its private key (an "
            f"impostor, or a damaged identity): compare `{other} certificate show` there"
        )
    if reason is RejectReason.NOT_EXPECTED:
        reg = snap.by_fingerprint(fp) if fp else None
        name = reg.name if reg else "another name"
        return (
            f"that address answers as {noun} {name!r}: check the addresses with: {me} {noun} list"
        )
    return f"compare `{other} certificate show` there with `{me} {noun} list` here"


def other_program(program: Program) -> str:
    """The daemon at the other end of a peer link."""
    return "pedclient" if program == "pedserver" else "pedserver"
