"""The client registry and its commands: register, list, show, delete, assign, revoke,
and the HSM's certificate for port 1792 (through the shell's parser and the control table)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from hsm import cli, control, shellparser
from hsm.errors import (
    AlreadyExists,
    CertificateRefused,
    ConfirmationRequired,
    HsmError,
    NotFound,
    NotLoggedIn,
)
from hsm.lunawords import resolve_words
from ped.cliutil import normalize_luna_argv
from ped.tls.certs import certificate_pem, fingerprint, generate_certificate
from tests.hsm.rig import Rig
from tests.hsm.test_clients_rig import activated, client_pem


def _parse(line: str) -> dict[str, Any]:
    """What the shell sends for *line* (Luna spellings and prefixes allowed)."""
    parser = shellparser.build_parser()
    ns = parser.parse_args(
        resolve_words(parser, normalize_luna_argv(line.split(), cli.COMMAND_WORDS))
    )
    return {"command": ns.command, **cli._request_args(ns)}


async def _run(rig: Rig, line: str) -> dict[str, Any]:
    request = _parse(line)
    command = control.BY_NAME[request.pop("command")]
    return await control.run(command, rig.hsm, request, rig.notify)


async def test_register_assign_show_list_through_luna_words(rig: Rig, tmp_path: Path) -> None:
    await activated(rig)
    pem, fp = client_pem()
    cert = tmp_path / "client.pem"
    cert.write_bytes(pem)
    out = await _run(rig, f"client register -client app1 -hostname app.example -certificate {cert}")
    assert "registered" in out["text"] and fp in out["text"]
    out = await _run(rig, "client assignPartition -client app1 -partition p1")
    assert "assigned" in out["text"]
    shown = await _run(rig, "cli sh -name app1")
    assert shown["data"]["partitions"] == ["p1"] and shown["data"]["fingerprint"] == fp
    assert shown["data"]["hostname"] == "app.example" and shown["data"]["registered_at"]
    assert "app.example" in shown["text"] and fp in shown["text"]
    listed = await _run(rig, "client list")
    assert [r["name"] for r in listed["data"]] == ["app1"] and "p1" in listed["text"]
    assert rig.hsm.clients.is_registered(fp) == "app1"
    assert rig.hsm.clients.is_registered(fp.replace(":", "").lower()) == "app1"
    out = await _run(rig, "client revokePartition -client app1 -partition p1")
    assert "revoked" in out["text"]
    with pytest.raises(NotFound, match="not assigned"):
        await _run(rig, "client revokePartition -client app1 -partition p1")


async def test_changes_need_the_hsm_so(rig: Rig) -> None:
    await activated(rig)
    pem, _ = client_pem()
    rig.hsm.admin.logout()
    with pytest.raises(NotLoggedIn, match="hsm login"):
        rig.hsm.clients.register("app1", pem, None)
    await rig.hsm.admin.login(rig.notify)
    rig.hsm.clients.register("app1", pem, None)
    rig.hsm.admin.logout()
    for change in (
        lambda: rig.hsm.clients.assign("app1", "p1"),
        lambda: rig.hsm.clients.revoke("app1", "p1"),
        lambda: rig.hsm.clients.delete("app1", force=True),
    ):
        with pytest.raises(NotLoggedIn):
            change()
    assert rig.hsm.clients.show("app1")["name"] == "app1"  # reads need no login


async def test_delete_refuses_the_certificate_as_deleted(rig: Rig) -> None:
    await activated(rig)
    pem, fp = client_pem()
    rig.hsm.clients.register("app1", pem, None)
    rig.hsm.clients.assign("app1", "p1")
    with pytest.raises(ConfirmationRequired):
        rig.hsm.clients.delete("app1")
    assert "refused" in rig.hsm.clients.delete("app1", force=True)
    assert rig.hsm.clients.is_registered(fp) is None
    assert "deleted" in rig.hsm.clients.refusal(fp) and "'app1'" in rig.hsm.clients.refusal(fp)
    assert rig.hsm.client_access("app1").partitions() == []
    # registered again under the name: no partitions come back
    rig.hsm.clients.register("app1", pem, None)
    assert rig.hsm.clients.show("app1")["partitions"] == []
    _, other_fp = client_pem("x")
    assert "not registered" in rig.hsm.clients.refusal(other_fp)


async def test_bad_registrations_are_refused_with_the_fix(rig: Rig) -> None:
    await activated(rig)
    pem, _ = client_pem()
    rig.hsm.clients.register("app1", pem, None)
    with pytest.raises(AlreadyExists, match="delete --name app1"):
        rig.hsm.clients.register("app1", client_pem()[0], None)
    with pytest.raises(AlreadyExists, match="already registered"):
        rig.hsm.clients.register("app2", pem, None)
    with pytest.raises(CertificateRefused):
        rig.hsm.clients.register("app3", b"not a certificate", None)
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    _, expired = generate_certificate("hsmclient old", days=1, now=old)
    with pytest.raises(CertificateRefused, match="expired"):
        rig.hsm.clients.register("app4", certificate_pem(expired), None)
    with pytest.raises(HsmError, match="host name"):
        rig.hsm.clients.register("app5", client_pem()[0], "bad host!")
    with pytest.raises(NotFound):
        rig.hsm.clients.assign("nobody", "p1")
    with pytest.raises(NotFound):
        rig.hsm.clients.assign("app1", "nopartition")


async def test_deleting_a_partition_drops_its_assignments(rig: Rig) -> None:
    await activated(rig)
    rig.hsm.clients.register("app1", client_pem()[0], None)
    rig.hsm.clients.assign("app1", "p1")
    rig.hsm.partitions.delete("p1", True)
    assert rig.hsm.clients.show("app1")["partitions"] == []


async def test_ntls_certificate_is_made_once_and_exported(rig: Rig, tmp_path: Path) -> None:
    await rig.init_hsm()
    shown = await _run(rig, "ntls certificate show")
    assert "SHA-256 fingerprint" in shown["text"]
    target = tmp_path / "hsm.pem"
    out = await _run(rig, f"ntls cert export {target}")
    assert str(target) in out["text"] and "hsmclient server register" in out["text"]
    data = target.read_bytes()
    assert data.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE" not in data
    again = await _run(rig, "ntls certificate show")
    assert again["text"] == shown["text"]  # made at first need, then kept
    assert fingerprint(x509.load_pem_x509_certificate(data)) in shown["text"]
    assert (rig.home / "ntls" / "identity.pem").exists()
    assert rig.hsm.clients.identity().fingerprint in shown["text"]


def test_a_relative_export_path_is_made_absolute_by_the_shell() -> None:
    request = _parse("ntls certificate export hsm.pem")
    assert Path(request["file"]).is_absolute()
