"""Any change to the audit log's bytes is caught by `audit log verify` (property test)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm.audit import AuditLog
from hsm.crypto import MasterKey
from hsm.store import Store


def _log(home: Path) -> tuple[AuditLog, Store]:
    store = Store(home)
    log = AuditLog(home, MasterKey.load_or_create(home), store)
    return log, store


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_byte_edit_is_detected_even_whitespace(
    tmp_path_factory: object, data: st.DataObject
) -> None:
    home = tmp_path_factory.mktemp("audit")  # type: ignore[attr-defined]
    log, store = _log(home)
    try:
        for i in range(5):
            log.append("login failed", wall_time=1_800_000_000 + i, role="hsm-so", failures=i)
        assert log.verify().ok
        original = log.path.read_bytes()
        index = data.draw(st.integers(0, len(original) - 1), label="index")
        value = data.draw(st.integers(0, 255).filter(lambda v: v != original[index]), label="byte")
        edited = bytearray(original)
        edited[index] = value
        log.path.write_bytes(bytes(edited))
        assert not log.verify().ok
        log.path.write_bytes(original)
        assert log.verify().ok
    finally:
        store.close()


def test_whitespace_around_a_record_is_an_edit(tmp_path: Path) -> None:
    log, store = _log(tmp_path)
    try:
        log.append("power on", wall_time=1_800_000_000)
        log.path.write_bytes(log.path.read_bytes()[:-1] + b" \n")
        assert "not as the HSM wrote it" in log.verify().problem
    finally:
        store.close()
