"""Human-readable output of the HSM's show commands (the shell prints these texts)."""

from __future__ import annotations

from typing import Any


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("   ".join("=" * w for w in widths))
    for r in rows:
        lines.append("   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def hsm_show(d: dict[str, Any]) -> str:
    parts = ", ".join(d["partitions"]) or "(none)"
    return "\n".join(
        [
            f"   HSM Label:              {d['label'] or '(none)'}",
            f"   Serial #:               {d['serial']}",
            f"   Model:                  {d['model']}",
            f"   Firmware:               {d['firmware']}",
            f"   HSM state:              {d['state']}",
            f"   HSM SO logged in:       {'yes' if d['so_logged_in'] else 'no'}",
            f"   SO login attempts left: {d['so_attempts_left']}",
            f"   Auditor:                {d['auditor']}",
            f"   Remote PED Vector:      {d['rpv']}",
            f"   Partitions:             {parts}",
        ]
    )


def hsm_policies(rows: list[dict[str, Any]]) -> str:
    head = (
        "   The following policies describe the current configuration of this HSM and may be\n"
        "   changed by the HSM SO. Changing policies marked destructive ZEROIZES the HSM.\n\n"
    )
    return head + _table(
        [
            (
                r["description"],
                "On" if r["value"] else "Off",
                str(r["code"]),
                "Yes" if r["destructive"] else "No",
            )
            for r in rows
        ],
        ("Description", "Value", "Code", "Destructive"),
    )


def partition_policies(name: str, rows: list[dict[str, Any]]) -> str:
    return f"Partition {name} policies:\n" + _table(
        [(r["description"], str(r["value"]), str(r["code"])) for r in rows],
        ("Description", "Value", "Code"),
    )


def partition_show(d: dict[str, Any]) -> str:
    lines = [
        f"   Partition Name:        {d['name']}",
        f"   Partition SN:          {d['serial']}",
        f"   Initialised:           {'yes' if d['initialised'] else 'no'}",
        f"   Logged in:             {d['logged_in'] or '(nobody)'}",
        f"   Object count:          {d['objects']}",
    ]
    for role, title in (("so", "Partition SO"), ("co", "Crypto Officer"), ("cu", "Crypto User")):
        r = d["roles"][role]
        if r["state"] == "not initialised":
            lines.append(f"   {title + ':':<22} not initialised")
            continue
        extra = f", attempts left {r['attempts_left']}"
        if r["state"] != "ok":
            extra = ", attempts left: none - locked out"
        if r.get("activated"):
            extra += ", activated"
        lines.append(f"   {title + ':':<22} {r['state']}{extra}")
    pol = d["policies"]
    lines.append(
        f"   Policies:              max failed logins {pol[20]}, activation "
        f"{'on' if pol[22] else 'off'}, auto-activation {'on' if pol[23] else 'off'}"
    )
    return "\n".join(lines)


def ped_show(status: dict[str, Any], timeouts: dict[str, int]) -> str:
    lines = [
        f"   PED mode:           {status['mode']}",
        f"   Local PED:          {status.get('local') or '(none configured)'}",
        f"   Remote PED:         {status.get('address') or '(not connected)'}",
        f"   Connected:          {'yes' if status.get('connected') else 'no'}",
    ]
    if status.get("since"):
        lines.append(f"   Connected since:    {status['since']}")
    lost = status.get("lost")
    if lost:
        lines += [
            f"   Link lost:          {lost['at']}: closed by {lost['by']} ({lost['why']})",
            f"   Cause:              {lost['detail']}",
            "   Next:               `hsm ped connect` to reconnect"
            + (", or `hsm ped disconnect` to use the local PED" if status.get("local") else ""),
        ]
    if status.get("pedclient"):
        lines.append(f"   pedclient socket:   {status['pedclient']}")
    if status.get("idle_left") is not None:
        lines.append(f"   Idle timeout in:    {status['idle_left']} s")
    lines.append(
        f"   Timeouts:           rped {timeouts['rped']} s, pedk {timeouts['pedk']} s, "
        f"pedo {timeouts['pedo']} s"
    )
    return "\n".join(lines)


def ped_timeouts(t: dict[str, int]) -> str:
    from hsm.policy import PED_TIMEOUTS

    return _table(
        [
            (n, str(t[n]), str(d.default), f"{d.low}-{d.high}", d.description)
            for n, d in PED_TIMEOUTS.items()
        ],
        ("Type", "Seconds", "Default", "Range", "What"),
    )


def audit_records(records: list[dict[str, Any]]) -> str:
    lines = []
    for r in records:
        skip = {"seq", "time", "event", "prev", "mac"}
        details = " ".join(f"{k}={v}" for k, v in sorted(r.items()) if k not in skip)
        lines.append(f"{r.get('seq', '?'):>6} {r.get('time', '?')} {r.get('event')} {details}")
    return "\n".join(lines) or "(the audit log is empty)"


def objects(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"Partition {name} holds no objects."
    return _table(
        [(r["label"], str(r["size"]), r["sha256"][:16]) for r in rows],
        ("Label", "Bytes", "SHA-256 (prefix)"),
    )


def clients(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No clients are registered (`client register --name N --certificate F`)."
    table: list[tuple[str, ...]] = [
        (r["name"], r["hostname"] or "-", ", ".join(r["partitions"]) or "-",
         r["fingerprint"][:23] + "...")
        for r in rows
    ]  # fmt: skip
    return _table(table, ("Client", "Host name", "Partitions", "Fingerprint (SHA-256)"))


def client_show(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"   Client:        {r['name']}",
            f"   Host name:     {r['hostname'] or '-'}",
            f"   Fingerprint:   {r['fingerprint']}",
            f"   Registered at: {r['registered_at']}",
            f"   Partitions:    {', '.join(r['partitions']) or '(none assigned)'}",
        ]
    )
