"""Every secret a PED keyring stands for, and a search for it in recorded bytes.

`secrets_of` rebuilds each keyset's secret from a directory of key images (its M of N
shares), derives the login secret the PED hands an HSM with each PIN table given (the
operators' PED PINs, a mistyped one...), and returns every one of them, with the shares,
the PINs and any other secret named, each in the forms a leak would take (raw, hex in
both cases, base64 and URL-safe base64, padded or not, and the first 16 bytes of each).
`find` says which of them appear in which of the recorded byte strings (logs, a byte
tap's record, a program's output).  The results name secrets, never show them.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from keys import Color, Keyring, ShareCollector, load_image, secret_for_hsm, wipe
from keys.pin import pin_for_label

#: A secret's name -> the byte strings that would show it.
Needles = dict[str, set[bytes]]


def forms(data: bytes) -> set[bytes]:
    """*data* and its first 16 bytes, raw, hex and base64 (both alphabets, +- padding)."""
    found = set()
    for piece in (data, data[:16]):
        b64 = base64.b64encode(piece)
        url = base64.urlsafe_b64encode(piece)
        found |= {
            piece,
            piece.hex().encode(),
            piece.hex().upper().encode(),
            b64,
            b64.rstrip(b"="),
            url,
            url.rstrip(b"="),
        }
    return found


def secrets_of(
    keyring: Path,
    pin_tables: Mapping[str, dict[str, str]] | None = None,
    others: Mapping[str, bytes] | None = None,
) -> Needles:
    """The secrets of *keyring* (see the module docstring).

    *pin_tables*: a name (``""`` for the operators' own) -> PED PINs by key label, as
    `keys.read_pin_file` reads them; *others*: more secrets by name (a challenge...).
    The orange keyset's secret is the RPV and is named so.
    """
    tables = dict(pin_tables or {})
    needles: Needles = {}
    for which, table in tables.items():
        for label, pin in table.items():
            needles[f"{which}PIN of {label}".strip()] = {pin.encode()}
    for name, data in (others or {}).items():
        needles[name] = forms(data)
    keysets: dict[bytes, list[Path]] = defaultdict(list)
    for entry in Keyring(keyring).keys():
        if entry.header is not None and entry.header.keyset_id is not None:
            keysets[entry.header.keyset_id].append(entry.path)
    for keyset_id, paths in keysets.items():
        first = load_image(paths[0]).header
        assert first.color is not None and first.label is not None
        collector = ShareCollector(first.color, keyset_id)
        for path in paths:
            image = load_image(path)
            share = image.share()
            needles[f"share {path.name}"] = forms(bytes(share.value))
            share.wipe()
            if not collector.complete:
                collector.add(image)
            image.wipe()
        secret = collector.secret()
        name = f"{first.color.label} {first.label}"
        needles[f"secret of {name}"] = forms(bytes(secret))
        if first.color is Color.ORANGE and not first.pin_protected:
            needles["RPV"] = forms(bytes(secret))
        if first.pin_protected:
            for which, table in tables.items():
                login = secret_for_hsm(secret, keyset_id, pin_for_label(table, first.label))
                needles[f"{which}login secret of {name}".strip()] = forms(bytes(login))
                wipe(login)
        wipe(secret)
    return needles


def find(needles: Needles, stacks: Mapping[str, bytes | bytearray]) -> list[str]:
    """``"WHAT in WHERE"`` for each secret found in each byte string; [] when none is."""
    return [
        f"{what} in {where}"
        for what, variants in needles.items()
        for where, data in stacks.items()
        if any(variant in data for variant in variants)
    ]
