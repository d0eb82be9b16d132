"""docs/integrating.md's worked example, run as written against real daemons.

Its ``python`` blocks are one module: they are extracted in order (each at its line in
the document, so a traceback points into it) and run against pedserver with an emulated
PED (auto operator) and pedclient, started by ``ped.testing``'s ``remote_ped``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from keys import Color, wipe
from ped import hsm_api
from ped.testing import remote_ped, remote_ped_options, remote_ped_pin_file
from pedtools.testing import RemotePed

__all__ = ["remote_ped", "remote_ped_options", "remote_ped_pin_file"]  # fixtures, used below

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrating.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def example_source() -> str:
    """The document's python blocks, each at its own line number, the rest blank."""
    text = DOC.read_text()
    lines = [""] * (text.count("\n") + 1)
    found = 0
    for match in BLOCK.finditer(text):
        first = text.count("\n", 0, match.start(1))
        for offset, line in enumerate(match.group(1).splitlines()):
            lines[first + offset] = line
        found += 1
    assert found >= 3, f"{DOC} lost its worked example"
    return "\n".join(lines)


def load_example() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "integrating_example"}
    exec(compile(example_source(), str(DOC), "exec"), namespace)  # our own document
    return namespace


def test_the_example_compiles_and_defines_what_the_text_describes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load_example()
    for name in ("HsmRecord", "verifier_of", "show_progress", "read_so_key", "login_so"):
        assert name in example, f"the worked example no longer defines {name}"
    # The emulated PED sends no progress notices: give show_progress some by hand.
    example["show_progress"](hsm_api.Notice(1, hsm_api.NoticeKind.INSERT_KEY, 2, 3))
    example["show_progress"](hsm_api.Notice(1, hsm_api.NoticeKind.ENTER_PIN))
    example["show_progress"](hsm_api.Notice(1, hsm_api.NoticeKind.INFO, text="x"))
    assert capsys.readouterr().out == "PED: insert blue key 2 of 3\nPED: enter the PED PIN\n"


async def _imprint_so_key(remote_ped: RemotePed, secret: bytearray) -> bytes:
    """The HSM's initialisation, done earlier: a blue key imprinted with *secret*."""
    async with remote_ped.session(hsm_serial="EXAMPLE-1") as ped:
        made = await ped.imprint(Color.BLUE, new_secret=secret, label="HSM SO")
        assert made.secret is None  # no PIN, no reuse: the login secret is *secret*
        return made.keyset_id


async def test_the_worked_example_logs_in_through_real_daemons(
    remote_ped: RemotePed, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example()
    secret = bytearray(secrets.token_bytes(32))
    keyset_id = await _imprint_so_key(remote_ped, secret)
    where = (str(remote_ped.pedclient_socket), remote_ped.host, remote_ped.port)

    hsm = example["HsmRecord"](
        serial="EXAMPLE-1",
        rpv=remote_ped.rpv(),
        so_keyset_id=keyset_id,
        so_verifier=example["verifier_of"](secret),
    )
    assert await example["login_so"](hsm, *where) is True
    assert hsm.failed_logins == 0
    assert "attend to it" in capsys.readouterr().out

    # The same key against another verifier: the HSM finds the secret wrong and counts it.
    hsm.so_verifier = example["verifier_of"](bytearray(32))
    assert await example["login_so"](hsm, *where) is False
    assert hsm.failed_logins == 1

    # A wrong orange key is not the administrator's wrong blue key: raised, not counted.
    wipe(hsm.rpv)
    hsm.rpv = bytearray(secrets.token_bytes(32))
    with pytest.raises(hsm_api.RpvMismatch):
        await example["login_so"](hsm, *where)
    assert hsm.failed_logins == 1

    # Nothing secret reached pedserver's or pedclient's log.
    for log in (remote_ped.pedserver_log(), remote_ped.pedclient_log()):
        assert secret.hex() not in log.read_text()
    wipe(secret)
    wipe(hsm.rpv)
