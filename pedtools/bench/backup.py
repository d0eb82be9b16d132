"""The backup/restore figure: objects per second through a Backup HSM, HSM to HSM, relayed.

    python -m pedtools.bench.backup [--quick] [--out FILE]   (this figure alone)

Set up with the programs' own commands (`pedtools.bench.backup_site`: a source pedhsm
with an activated partition, a Backup HSM, hsmclient registered with both), then, in one
run, with hsmclient's identity in this process (`hsmclient.commands_archive`, what the
``partition archive`` command's daemon runs, without the command line's start-up):
N P-256 key pairs are made on p1 (2N objects), backed up into a new backup partition
(the red key was injected at set-up: not timed), and restored with ``--replace`` into p1,
each ROUNDS times.  Every object crosses both HSMs' client listeners (mutual TLS 1.3),
sealed in the cloning channel, in batches that fit one answer.

Figures (``backup`` in the JSON): objects, the best and median seconds of a backup and a
restore, ``backup_objects_per_s`` and ``restore_objects_per_s`` (from the median).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import trio

from hsmclient.commands_archive import archive_list, backup, restore
from hsmclient.remote import RemoteBackend
from hsmclient.slots import SlotMap
from ped.ntls.messages import ArchiveMode
from ped.pkcs11.constants import CKU
from ped.tls import PinStore
from pedtools.bench.backup_site import BackupSite
from pedtools.testing.procs import Site

FULL = (100, 5)  # key pairs, rounds
QUICK = (10, 1)


async def _timed(b: BackupSite, rounds: int) -> tuple[int, list[float], list[float]]:
    pins = PinStore(b.client_home, program="hsmclient")
    backend = RemoteBackend(b.client_home, pins, SlotMap(b.client_home))
    app = await backend.connect()
    try:
        slots = {s.slot_id: s for s in await app.slots() if s.token_present}
        p1 = next(i for i, s in slots.items() if "partition p1 " in s.description)
        admin_slot = next(i for i, s in slots.items() if "backup HSM" in s.description)
        admin = await app.open_session(admin_slot, True)
        source = await app.open_session(p1, True)
        await app.login(source, CKU.USER, bytearray(b.challenge.encode()))
        ups: list[float] = []
        downs: list[float] = []
        for n in range(rounds):
            started = time.perf_counter()
            row = await backup(app, source, admin, f"bench{n}")
            ups.append(time.perf_counter() - started)
            started = time.perf_counter()
            await restore(app, admin, source, f"bench{n}", ArchiveMode.REPLACE)
            downs.append(time.perf_counter() - started)
        assert len(await archive_list(app, admin)) == rounds + 1  # and the injected one
        return int(row["objects"]), ups, downs
    finally:
        await app.close()
        await backend.aclose()


def measure(work: Path, quick: bool, log: Any) -> dict[str, Any]:
    """Set up the two HSMs and hsmclient in *work*, time backups and restores."""
    keys, rounds = QUICK if quick else FULL
    with Site(work / "backup") as site:
        b = BackupSite(site)
        log("backup: a source pedhsm, a Backup HSM, hsmclient ...")
        b.up()
        b.make_keys("p1", keys, "bench")
        b.must(b.archive("backup", *b.backup_args("injected")))  # the red key, once
        objects, ups, downs = trio.run(_timed, b, rounds)
    up, down = statistics.median(ups), statistics.median(downs)
    return {
        "objects": objects, "rounds": rounds,
        "backup_s_best": round(min(ups), 3), "backup_s_median": round(up, 3),
        "restore_s_best": round(min(downs), 3), "restore_s_median": round(down, 3),
        "backup_objects_per_s": round(objects / up, 1),
        "restore_objects_per_s": round(objects / down, 1),
    }  # fmt: skip


def markdown(r: dict[str, Any]) -> list[str]:
    """The figure's lines, for `pedtools.bench.report`."""
    bk = r.get("backup")
    if not bk:
        return []
    return [f"Backup/restore through a Backup HSM ({bk['objects']} objects, median of "
            f"{bk['rounds']}): backup {bk['backup_objects_per_s']} objects/s "
            f"({bk['backup_s_median']} s), restore --replace {bk['restore_objects_per_s']} "
            f"objects/s ({bk['restore_s_median']} s)", ""]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.backup",
                                     description="the backup/restore figure alone")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="10 key pairs, one round")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    with Site(prefix="bench-backup-") as site:
        result = measure(site.root, args.quick, lambda text: print(text, flush=True))
    text = json.dumps({"backup": result}, indent=2)
    print(text)
    print("\n".join(markdown({"backup": result})))
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
