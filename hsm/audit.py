"""The HSM's audit log: an append-only, hash-chained (HMAC) file of JSON lines.

Theory of operation
-------------------
Each record carries its sequence number, the time, the event and its details (never a
secret), the MAC of the record before it and its own MAC: HMAC-SHA256 under an audit key
derived from the device key over the previous MAC and the canonical JSON of the record.
Editing a record breaks its MAC; removing or reordering records breaks the sequence and
the ``prev`` links; cutting records off the end is caught by the head (last sequence
number and MAC) that the HSM keeps in its state database.  Each append is flushed and
fsynced before the command that caused it reports its result.

The log survives zeroization (it belongs to the auditor, not to the HSM SO).
"""

from __future__ import annotations

import hmac
import json
import os
import time
from hashlib import sha256
from pathlib import Path
from typing import Any

import attrs

from hsm.crypto import MasterKey
from hsm.store import Store

LOG_FILE = "audit.log"
MAX_LINE = 64 * 1024
_GENESIS = "0" * 64


@attrs.frozen
class VerifyResult:
    ok: bool
    records: int
    problem: str = ""


class AuditLog:
    def __init__(self, home: Path, master: MasterKey, store: Store) -> None:
        self.path = home / LOG_FILE
        self._key = bytes(master.subkey("audit log"))
        self._store = store
        self._seq, self._last = self._read_head()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def _read_head(self) -> tuple[int, str]:
        # The file's tail is authoritative for appending (it may be one record ahead of the
        # head in the database after a crash between the two writes).
        seq, last = 0, _GENESIS
        if self.path.exists():
            with self.path.open("rb") as fh:
                for raw in fh:
                    try:
                        rec = json.loads(raw)
                        seq, last = int(rec["seq"]), str(rec["mac"])
                    except (ValueError, KeyError, TypeError):
                        continue
        return seq, last

    def _mac(self, prev: str, body: dict[str, Any]) -> str:
        canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, prev.encode() + canon, sha256).hexdigest()

    def append(self, event: str, wall_time: float | None = None, **details: Any) -> None:
        body = {
            "seq": self._seq + 1,
            "time": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if wall_time is None else wall_time)
            ),
            "event": event,
            **{k: v for k, v in details.items() if v is not None},
        }
        body["prev"] = self._last
        mac = self._mac(self._last, body)
        line = json.dumps({**body, "mac": mac}, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._seq, self._last = body["seq"], mac
        with self._store.tx():
            self._store.set_meta("audit_head", f"{self._seq}:{mac}")

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open("rb") as fh:
                for raw in fh:
                    try:
                        out.append(json.loads(raw))
                    except ValueError:
                        out.append({"event": "<unreadable record>"})
        return out

    def verify(self) -> VerifyResult:
        prev, expected, count = _GENESIS, 1, 0
        if self.path.exists():
            with self.path.open("rb") as fh:
                for lineno, raw in enumerate(fh, start=1):
                    problem = self._check_line(raw, prev, expected)
                    if problem:
                        return VerifyResult(False, count, f"line {lineno}: {problem}")
                    rec = json.loads(raw)
                    prev, expected, count = rec["mac"], expected + 1, count + 1
        head = self._store.get_meta("audit_head")
        if head:
            head_seq, _, head_mac = head.partition(":")
            if count < int(head_seq):
                return VerifyResult(
                    False,
                    count,
                    f"the log ends at record {count} but the HSM recorded {head_seq}: "
                    "records were removed from the end",
                )
            if count == int(head_seq) and not hmac.compare_digest(head_mac, prev):
                return VerifyResult(False, count, "the last record is not the one the HSM wrote")
        return VerifyResult(True, count)

    def _check_line(self, raw: bytes, prev: str, expected: int) -> str:
        if len(raw) > MAX_LINE:
            return "record too long"
        try:
            rec = json.loads(raw)
            mac = rec.pop("mac")
            seq = int(rec["seq"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return "not a valid audit record"
        if seq != expected:
            return f"sequence number {seq} where {expected} was expected (record removed or moved)"
        if rec.get("prev") != prev:
            return "does not follow the record before it (record removed or moved)"
        if not isinstance(mac, str) or not hmac.compare_digest(self._mac(prev, rec), mac):
            return "record was altered (MAC does not match)"
        canonical = json.dumps({**rec, "mac": mac}, sort_keys=True, separators=(",", ":"))
        if raw != canonical.encode() + b"\n":
            return "record was altered (not as the HSM wrote it)"
        return ""
