"""What the operator and the auditor see of attempts (issue 19 section 5): a refused but
uncounted login is audited as such, a reused keyset is reported as reused, and the
"attend to the PED" line names the PED."""

from __future__ import annotations

import pytest

from hsm.apiport import map_error
from hsm.errors import LoginFailed, PedUnavailable
from hsm.pedport import WrongKeyColor
from hsm.policy import Role
from hsm.store import HSM_SCOPE
from keys.colors import Color
from ped.ops import errors as op_errors
from tests.hsm.rig import Rig


def _last(rig: Rig) -> dict[str, object]:
    return rig.hsm.state.audit.records()[-1]


@pytest.mark.parametrize(
    ("action", "error", "reason"),
    [
        ("a red key", WrongKeyColor, "wrong-colour"),
        ("timeout", PedUnavailable, "key-timeout"),
        ("cancel", PedUnavailable, "cancelled"),
        ("unplug", PedUnavailable, "ped-unavailable"),
    ],
)
async def test_refused_not_counted_attempts_are_audited(
    rig: Rig, action: str, error: type[Exception], reason: str
) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()
    if action == "a red key":
        action = next(n for n, k in rig.ped.keys.items() if k.color is Color.RED)
    rig.ped.plan.append(action)
    with pytest.raises(error):
        await rig.hsm.admin.login(rig.notify)
    record = _last(rig)
    assert record["event"] == "login refused"
    assert record["reason"] == reason and record["counted"] is False
    assert record["role"] == "hsm-so"
    assert rig.hsm.state.role_row(HSM_SCOPE, Role.HSM_SO).failures == 0  # not counted


async def test_a_counted_failure_is_still_login_failed(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()
    blue = next(n for n, k in rig.ped.keys.items() if k.color is Color.BLUE)
    rig.ped.plan.append(("pin", blue))
    with pytest.raises(LoginFailed):
        await rig.hsm.admin.login(rig.notify)
    assert _last(rig)["event"] == "login failed"


def test_operation_errors_carry_their_outcome_word() -> None:
    mapped = map_error(op_errors.KeyTimeout(), "local PED")
    assert isinstance(mapped, PedUnavailable) and mapped.outcome == "key-timeout"
    mapped = map_error(op_errors.OperationCancelled(), "local PED")
    assert isinstance(mapped, PedUnavailable) and mapped.outcome == "cancelled"
    assert isinstance(map_error(op_errors.WrongColor(), "x"), WrongKeyColor)


async def test_a_reused_keyset_is_reported_as_reused(rig: Rig) -> None:
    await rig.init_hsm()
    rig.ped.plan.append("white")
    assert "white PED key imprinted" in await rig.hsm.auditor.init(rig.notify, force=False)
    rig.ped.plan.append(("reuse", "white", "white-again"))
    out = await rig.hsm.auditor.init(rig.notify, force=True)
    assert "white PED key reused" in out and "imprinted" not in out


async def test_attend_names_the_ped(rig: Rig) -> None:
    await rig.init_hsm()
    assert "Please attend to the PED. It is the local PED." in rig.notes
    await rig.hsm.ped.vector_init(rig.notify)
    await rig.hsm.ped.connect(rig.notify, "ped.example", 1503)
    rig.notes.clear()
    rig.hsm.admin.logout()
    await rig.hsm.admin.login(rig.notify)
    assert (
        rig.notes[0] == "Please attend to the PED. It is the remote PED ped.example:1503 (FAKE-1)."
    )
