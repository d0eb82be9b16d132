"""What one restore carries: the bound on a backup partition's objects, and its refusals.

A restore is one clone (docs/protocol/cloning.md, section 7): at most `ped.cloning.MAX_OBJECTS`
objects (100,000), each at most 16 KiB of attributes and 16 KiB of value, in any number of
batches.  Every object a backup partition holds arrived within those per-object bounds,
so the one limit it can outgrow is the count, and only by ``--append``.  A Backup HSM
(`hsm.backup`) checks it where it knows the numbers, before anything is written or sent:

* at a backup's end marker (`check_backup_fits`): what the partition holds, plus what the
  backup adds that it lacks (with ``--replace``: what the backup brings), must fit;
* before an append or a restore starts (`over_limit`): a backup partition over the
  limit already (made before the limit was enforced) is refused up front.

Each refusal is a `BackupOverLimit` (``CKR_DEVICE_MEMORY``) naming the backup partition,
its objects, what the backup would add, the limit and what to do.  Pure: no I/O.
"""

from __future__ import annotations

from hsm.backup_store import BackupRow
from ped.cloning import MAX_OBJECTS
from ped.ntls.messages import ArchiveMode
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import Pkcs11Error

#: Objects one backup partition may hold: what one restore carries, the cloning
#: protocol's bound on one clone.  Read at each check (tests lower it).
MAX_BACKUP_OBJECTS = MAX_OBJECTS

#: What to do when a backup partition is full: the words of the refusals below.
_ANOTHER = "back up into another backup partition (--partition OTHER)"
_REPLACE = "replace what it holds (--replace)"
_IN_PARTS = ("back the objects up in parts, each part's labels into its own backup "
             "partition (--objects LABEL,... --partition OTHER)")  # fmt: skip
_ANEW = "back its source partition up anew, with --replace, while that partition exists"


class BackupOverLimit(Pkcs11Error):
    """A backup partition would hold (or holds) more objects than one restore carries.

    *held*: its objects now; *adding*: the objects the backup would add (0 when nothing
    is added: a refused restore); *total*: what it would hold; *limit*: the bound.
    """

    def __init__(self, name: str, held: int, adding: int, total: int, limit: int,
                 message: str) -> None:  # fmt: skip
        super().__init__(CKR.DEVICE_MEMORY, message)
        self.partition, self.held, self.adding = name, held, adding
        self.total, self.limit = total, limit


def check_backup_fits(name: str, held: int, adding: int, mode: ArchiveMode) -> None:
    """Refuse (`BackupOverLimit`) a backup that would leave backup partition *name* with
    more objects than one restore carries.  *held*: its objects now (0: a new one);
    *adding*: the objects it lacks (with `ArchiveMode.REPLACE`: all it would hold)."""
    limit = MAX_BACKUP_OBJECTS
    total = adding if mode is ArchiveMode.REPLACE else held + adding
    if total <= limit:
        return
    if mode is ArchiveMode.ADD:
        message = (f"backup partition {name!r} holds {held} objects and this backup would "
                   f"add {adding} ({total} in all): one restore carries at most {limit} "
                   f"objects, so nothing was written; {_ANOTHER}, or {_REPLACE}")  # fmt: skip
    else:
        message = (f"this backup would leave backup partition {name!r} with {total} objects "
                   f"(it holds {held}): one restore carries at most {limit} objects, so "
                   f"nothing was written; {_IN_PARTS}")  # fmt: skip
    raise BackupOverLimit(name, held, adding, total, limit, message)


def over_limit(row: BackupRow, doing: str) -> BackupOverLimit | None:
    """The refusal of *doing* (``append``, ``restore``) on a backup partition that holds
    more than one restore carries already, else None."""
    limit = MAX_BACKUP_OBJECTS
    if row.objects <= limit:
        return None
    what_to_do = f"{_ANOTHER}, or {_REPLACE}" if doing == "append" else _ANEW
    return BackupOverLimit(row.name, row.objects, 0, row.objects, limit,
                           f"backup partition {row.name!r} holds {row.objects} objects, more "
                           f"than the {limit} one restore carries (it was made before this "
                           f"limit was enforced): {doing} refused before anything moved; "
                           f"{what_to_do}")  # fmt: skip
