"""The PED's side of a login: collecting the presented keys' shares until M are in (sans-IO).

`ShareCollector` is fed the images the operator presents; it refuses blanks, wrong
colours, other keysets and repeated shares with typed errors (nothing is added when it
refuses), says how many more are needed, and finally hands out `secret_for_hsm(pin)`:
the secret the HSM receives (the combined shares mixed with the PED PIN, `keys.pin`).
It does no I/O: the emulated PED's read flow and the test kits drive it.
"""

from __future__ import annotations

import hmac

from keys.colors import Color
from keys.errors import (
    BlankKey,
    ImageKeysetMismatch,
    InconsistentShares,
    InvalidPin,
    RepeatedShare,
    TooFewShares,
    WrongImageColor,
)
from keys.fingerprint import keyset_fingerprint
from keys.image import (
    KeyHeader,
    KeyImage,
)
from keys.pin import secret_for_hsm
from keys.shamir import Share, combine, wipe


class ShareCollector:
    """Collects the keys an operator presents for one role until M shares are in.

    ``color``: the colour the HSM asked for.  ``keyset_id``: the keyset the HSM expects,
    or None to accept the first key's keyset.  `add` raises, and adds nothing, for a blank
    (`BlankKey`), a wrong colour (`WrongImageColor`: not a failed login), another keyset
    (`ImageKeysetMismatch`), a share already presented or its duplicate (`RepeatedShare`), or a
    key whose M/N/PIN flag disagree with the first (`InconsistentShares`).
    """

    def __init__(self, color: Color, keyset_id: bytes | None = None) -> None:
        self.color = Color(color)
        self.expected_keyset = keyset_id
        self._shares: list[Share] = []
        self._first: KeyHeader | None = None

    def __repr__(self) -> str:
        have = len(self._shares)
        need = "?" if self._first is None else str(self._first.m)
        return f"<ShareCollector {self.color.label} {have} of {need} shares>"

    @property
    def header(self) -> KeyHeader | None:
        """Header of the first accepted key (label, keyset, M, N, PIN flag)."""
        return self._first

    @property
    def pin_protected(self) -> bool:
        return self._first is not None and self._first.pin_protected

    @property
    def remaining(self) -> int | None:
        """Shares still needed; None before the first key (M is not known yet)."""
        return None if self._first is None else self._first.m - len(self._shares)

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    @property
    def indices(self) -> list[int]:
        return [s.index for s in self._shares]

    def add(self, image: KeyImage) -> int:
        """Accept one presented key; returns how many more are needed."""
        where = image.path
        h = image.header
        if h.blank:
            raise BlankKey(f"is a blank key; present {self.color.a_label} key", where)
        if h.color != self.color:
            assert h.color is not None
            raise WrongImageColor(
                f"is {h.color.a_label} key; present {self.color.a_label} key", where
            )
        keyset = self._first.keyset_id if self._first else self.expected_keyset
        if keyset is not None and h.keyset_id != keyset:
            raise ImageKeysetMismatch(
                f"belongs to keyset {h.keyset_hex}, not the expected {keyset.hex()}; present "
                "a key of the right keyset",
                where,
            )
        first = self._first
        if first is not None:
            if h.split_id != first.split_id:
                raise InconsistentShares(
                    "is from another split of this keyset (it was reused with a new M of N) "
                    "than the keys already presented; present keys of one split only",
                    where,
                )
            if (h.m, h.n, h.pin_protected) != (first.m, first.n, first.pin_protected):
                raise InconsistentShares(
                    "disagrees with the keys already presented about M, N or the PED PIN; "
                    "it is damaged",
                    where,
                )
            if self.complete:
                raise RepeatedShare(
                    f"all {first.m} shares are already in; no more keys are needed", where
                )
        share = image.share()
        for other in self._shares:
            if other.index == share.index:
                duplicate_key = hmac.compare_digest(other.value, share.value)
                share.wipe()
                same = "a duplicate of a key" if duplicate_key else "the same share index as a key"
                raise RepeatedShare(
                    f"is {same} already presented (share {h.index} of {h.n}); present a "
                    "different key of the keyset",
                    where,
                )
        self._shares.append(share)
        if self._first is None:
            self._first = h
        remaining = self.remaining
        assert remaining is not None
        return remaining

    def secret(self) -> bytearray:
        """The rebuilt key secret (caller wipes).  `TooFewShares` until complete."""
        if self._first is None:
            raise TooFewShares(f"no {self.color.label} key was presented yet")
        return combine(self._shares)

    def fingerprint(self) -> str:
        secret = self.secret()
        try:
            assert self._first is not None and self._first.keyset_id is not None
            return keyset_fingerprint(secret, self._first.keyset_id)
        finally:
            wipe(secret)

    def secret_for_hsm(self, pin: str | None) -> bytearray:
        """What the HSM receives: the key secret, or scrypt(secret, PIN) for a PIN key.

        ``pin`` must be given exactly when the keyset is PIN-protected (`InvalidPin`).
        A wrong PIN is not detectable here: it yields a wrong secret, by design.
        """
        if self._first is None:
            raise TooFewShares(f"no {self.color.label} key was presented yet")
        if self.pin_protected and pin is None:
            raise InvalidPin("this key is protected by a PED PIN; enter the PIN")
        if not self.pin_protected and pin is not None:
            raise InvalidPin("this key has no PED PIN; none should be entered")
        assert self._first.keyset_id is not None
        secret = self.secret()
        try:
            return secret_for_hsm(secret, self._first.keyset_id, pin)
        finally:
            wipe(secret)

    def wipe(self) -> None:
        for s in self._shares:
            s.wipe()
        self._shares.clear()
        self._first = None

    def __del__(self) -> None:
        # The collector owns copies of the shares: never leave them to the allocator.
        if hasattr(self, "_shares"):
            self.wipe()
