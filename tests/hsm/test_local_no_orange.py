"""A local PED answered NO to "Without an orange key?" (issue 19, 4.1): the PED reads the
orange key and keys the channel with its RPV; an HSM that has an RPV keys a second
handshake with it, and one without says to answer YES (never "run hsm ped vector init")."""

from __future__ import annotations

import pytest

from hsm.errors import PedUnavailable
from keys import Keyring, new_keyset
from keys.colors import Color
from tests.hsm.emulated import Bench, Script, step


def _no_then_orange(s: Script, orange: str) -> Script:
    s.parts.append(step("connecting locally|locally", press="NO"))
    s.parts.append(step("Insert a ORANGE", insert=orange))
    return s


async def test_a_local_no_is_keyed_with_the_hsms_rpv(bench: Bench) -> None:
    bench.router.hsm_rpv = bench.hsm.ped.rpv_if_set
    so, red, orange = bench.blanks[0], bench.blanks[1], bench.blanks[2]
    s = Script()
    s.session().imprint(orange)  # hsm ped vector init
    s.session().imprint(so).imprint(red)  # hsm init
    # hsm login, the operator answers NO: LOCAL_RPV fails, the HSM's RPV is tried next
    _no_then_orange(_no_then_orange(s, orange), orange).read(Color.BLUE, so)
    bench.run_script(s)
    await bench.hsm.ped.vector_init(bench.notify)
    await bench.hsm.admin.init(bench.notify, "local-no")
    bench.hsm.admin.logout()
    assert await bench.hsm.admin.login(bench.notify) == "HSM SO logged in."


async def test_a_local_no_without_an_rpv_says_answer_yes(bench: Bench) -> None:
    bench.router.hsm_rpv = bench.hsm.ped.rpv_if_set
    [orange] = Keyring(bench.keys).imprint(
        new_keyset(Color.ORANGE, "RPV", 1, 1, secret=b"R" * 32), create=True
    )
    so, red = [name for name in bench.blanks if name != orange.name][:2]
    s = Script()
    s.session().imprint(so).imprint(red)
    _no_then_orange(s, orange.name)  # this HSM has no RPV to check the key against
    bench.run_script(s)
    await bench.hsm.admin.init(bench.notify, "local-no")
    bench.hsm.admin.logout()
    with pytest.raises(PedUnavailable, match="answer YES") as raised:
        await bench.hsm.admin.login(bench.notify)
    assert "vector init" not in str(raised.value)
