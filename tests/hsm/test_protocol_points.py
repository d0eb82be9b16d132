"""PROTOCOL.md points an outside PED maker had to guess (issue 19 section 4), as pedhsm
does them: KEYSET_MISMATCH is a counted failure (4, 7); NOTICE's step and total are what
the host shows (4)."""

from __future__ import annotations

import pytest

from hsm.apiport import describe_notice
from hsm.errors import LoginFailed
from hsm.policy import Role
from hsm.store import HSM_SCOPE
from keys.colors import Color
from ped.ops.messages import Notice, NoticeKind
from tests.hsm.fakeped import FakeKey
from tests.hsm.rig import Rig


async def test_a_key_of_another_keyset_is_a_counted_failure(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()
    rig.ped.keys["stranger"] = FakeKey(Color.BLUE, b"S" * 32, b"other-ks")
    rig.ped.plan.append("stranger")
    with pytest.raises(LoginFailed, match="another keyset"):
        await rig.hsm.admin.login(rig.notify)
    assert rig.hsm.state.role_row(HSM_SCOPE, Role.HSM_SO).failures == 1
    record = rig.hsm.state.audit.records()[-1]
    assert record["event"] == "login failed" and record["failures"] == 1


def test_notice_step_and_total_are_what_the_host_shows() -> None:
    notice = Notice(1, NoticeKind.INSERT_KEY, step=2, total=3, text="PED wording")
    line = describe_notice(notice, Color.BLUE, 200)
    assert line == "PED: waiting for the blue key 2 of 3 (pedk 200 s)."
    unknown = Notice(1, NoticeKind.INSERT_KEY, step=1, total=0)
    assert describe_notice(unknown, Color.BLUE) == "PED: waiting for the blue key."
