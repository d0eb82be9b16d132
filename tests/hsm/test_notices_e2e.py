"""The PED's own progress on the host: pedhsm -> pedclient -> pedserver -> emulated PED.

The emulated PED sends sealed NOTICEs as it works ("insert key 2 of 3", "enter the PIN");
the relays pass them on untouched and pedhsm's shell shows each as a line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm.clock import TEST_CLOCK_ENV
from tests.hsm.emulated import Script, step
from tests.hsm.test_remote_e2e import Site

pytestmark = pytest.mark.process

SO_PIN = "2468"


@pytest.fixture
def site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    monkeypatch.delenv(TEST_CLOCK_ENV, raising=False)
    s = Site(tmp_path, capsys)
    yield s
    s.stop_all()


def _imprint_two_of_three(script: Script, blanks: list[str]) -> None:
    script.parts.append(step("Reuse an existing", press="NO"))
    script.parts.append(step("M value", pin="2"))
    script.parts.append(step("N value", pin="3"))
    script.parts.append(step("New PED PIN", pin=SO_PIN))
    script.parts.append(step("Confirm new PED PIN", pin=SO_PIN))
    script.parts.append(step("duplicating", press="NO"))
    for blank in blanks:
        script.parts.append(step("Insert a blank key", insert=blank))


def test_a_remote_m_of_n_login_with_pin_shows_the_peds_progress(site: Site) -> None:
    orange, red = site.blanks[0], site.blanks[4]
    so = site.blanks[1:4]
    local = Script()
    local.session().imprint(orange)  # hsm ped vector init on the cabled PED
    remote = Script(orange=orange)
    remote.session()  # hsm ped connect
    _imprint_two_of_three(remote, so)  # hsm init: the SO keyset, 2 of 3 with a PIN
    remote.imprint(red)
    remote.parts.append(step("Insert a BLUE PED key", insert=so[2]))  # hsm login
    remote.parts.append(step("Enter PED PIN", pin=SO_PIN))
    remote.parts.append(step("Key 2 of 2", insert=so[0]))
    site.start_all(local, remote)

    site.hsm_ok("hsm", "ped", "vector", "init")
    site.hsm_ok("hsm", "ped", "connect", "-ip", "127.0.0.1", "-port", str(site.port))
    init = site.hsm_ok("hsm", "init", "--label", "far").splitlines()
    assert "PED: answer the question on the PED screen." in init
    writing = [line for line in init if line.startswith("PED: writing key")]
    assert writing[:3] == [f"PED: writing key {k} of 3." for k in (1, 2, 3)], init

    out = site.hsm_ok("hsm", "login")
    lines = [line for line in out.splitlines() if line.startswith("PED:")]
    assert lines[0].startswith("PED: present the blue key(s) for HSM SO")  # the HSM's own
    assert lines[1:] == [
        "PED: waiting for the blue key (pedk 200 s).",  # M is known once a key is read
        "PED: key 1 of 2 read.",
        "PED: waiting for the PED PIN.",
        "PED: waiting for the blue key 2 of 2 (pedk 200 s).",
    ], out
    assert "Please attend to the PED." in out and "HSM SO logged in." in out
