"""PED PIN: how a PIN is combined with a key secret, and PIN files.

Theory of operation
-------------------
The HSM never receives the key secret of a PIN-protected key.  It receives

    scrypt(password = key secret (32 bytes) || PIN digits (ASCII),
           salt     = b"remote-ped/ped-pin/v1" || 0x00 || keyset id,
           n = 2**15, r = 8, p = 1, length = 32)

so a wrong PIN yields a different, wrong secret and the HSM counts a failed login exactly
as for a wrong key.  Nothing anywhere stores a PIN or a value derived from it (no check
value, no hash in the image, no fingerprint of the derived secret): whoever holds a key
image cannot test PINs offline; each guess costs a counted login on the HSM.

Why scrypt with these parameters: it is memory-hard (32 MiB, about 0.1 s here), so even
someone who stole a key image *and* the HSM's stored verifier pays heavily per guess.  The
secret is already 256 bits of entropy, so the KDF protects the PIN, not the secret.  The
salt binds the derivation to the keyset (a keyset reused on several HSMs derives the same
value there, as it must) and to this purpose (domain label, versioned).

Keys without a PIN: the HSM receives a copy of the key secret itself.  Any extra hashing
would add nothing (the secret is uniformly random already) and running scrypt with an
empty PIN would only cost time.  The choice is part of the protocol: both sides must agree.

PIN files (used by ``pedkey new --pin-file`` and the emulated PED's operator) are UTF-8
text: blank lines and ``#`` comments are ignored; ``LABEL = DIGITS`` lines give the PIN of
the keyset labelled LABEL (split at the *last* ``=``, both sides stripped); a file holding
one bare line of digits gives the PIN for any label.  PINs are 4 to 48 digits.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keys.errors import InvalidPin, InvalidSplit, PinFileError
from keys.shamir import KEYSET_ID_SIZE, SECRET_SIZE, wipe

PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 48
PIN_DOMAIN = b"remote-ped/ped-pin/v1"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MAX_PIN_FILE_SIZE = 64 * 1024


def validate_pin(pin: str) -> str:
    """Return the PIN if it is 4 to 48 ASCII digits; `InvalidPin` otherwise (never echoing it)."""
    if not isinstance(pin, str):
        raise InvalidPin("a PED PIN must be given as text of 4 to 48 digits")
    if not (pin.isascii() and pin.isdigit()):
        raise InvalidPin("a PED PIN holds digits 0-9 only; type 4 to 48 digits")
    if not PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS:
        raise InvalidPin(
            f"a PED PIN is {PIN_MIN_DIGITS} to {PIN_MAX_DIGITS} digits long; type a PIN of "
            "that length"
        )
    return pin


def _check_inputs(secret: bytes | bytearray, keyset_id: bytes) -> None:
    if len(secret) != SECRET_SIZE:
        raise InvalidSplit(f"a key secret is {SECRET_SIZE} bytes (got {len(secret)})")
    if len(keyset_id) != KEYSET_ID_SIZE:
        raise InvalidSplit(f"a keyset id is {KEYSET_ID_SIZE} bytes (got {len(keyset_id)})")


def derive_pin_secret(secret: bytes | bytearray, keyset_id: bytes, pin: str) -> bytearray:
    """scrypt(secret || PIN, domain || keyset id): what the HSM sees for a PIN-protected key."""
    _check_inputs(secret, keyset_id)
    validate_pin(pin)
    password = bytearray(secret)
    password += pin.encode("ascii")
    try:
        kdf = Scrypt(
            salt=PIN_DOMAIN + b"\x00" + bytes(keyset_id),
            length=SECRET_SIZE,
            n=SCRYPT_N,
            r=SCRYPT_R,
            p=SCRYPT_P,
        )
        # cryptography returns immutable bytes; copy into a wipeable buffer at once.
        return bytearray(kdf.derive(bytes(password)))
    finally:
        wipe(password)


def secret_for_hsm(secret: bytearray, keyset_id: bytes, pin: str | None) -> bytearray:
    """The secret a PED hands the HSM for a rebuilt key secret.

    ``pin`` is None for a key without PED PIN (the result is a copy of the secret) and the
    typed digits otherwise (scrypt, see the module docstring).  The caller owns and wipes
    both ``secret`` and the returned buffer.
    """
    if pin is None:
        _check_inputs(secret, keyset_id)
        return bytearray(secret)
    return derive_pin_secret(secret, keyset_id, pin)


def parse_pin_file(text: str, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Parse PIN file text into {label: pin}; a bare digits line is stored under key ``""``.

    Errors name the line number, never the line (it may hold a PIN).
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line:
            label, _, digits = line.rpartition("=")
            label, digits = label.strip(), digits.strip()
            if not label:
                raise PinFileError(f"line {number}: no label before '='", path)
        else:
            label, digits = "", line
        try:
            validate_pin(digits)
        except InvalidPin as exc:
            raise PinFileError(f"line {number}: {exc.problem}", path) from None
        if label in pins:
            what = f"label {label!r}" if label else "a bare PIN"
            raise PinFileError(f"line {number}: {what} is given twice", path)
        pins[label] = digits
    if not pins:
        raise PinFileError("holds no PIN; write 'LABEL = DIGITS' lines or one line of digits", path)
    return pins


def read_pin_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse a PIN file (bounded size)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PIN_FILE_SIZE + 1)
    except FileNotFoundError:
        raise PinFileError("PIN file does not exist", path) from None
    except OSError as exc:
        raise PinFileError(f"cannot read PIN file ({exc.strerror})", path) from None
    if len(data) > MAX_PIN_FILE_SIZE:
        raise PinFileError(f"PIN file is larger than {MAX_PIN_FILE_SIZE} bytes", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PinFileError("PIN file is not UTF-8 text", path) from None
    return parse_pin_file(text, path)


def pin_for_label(
    pins: dict[str, str], label: str, path: str | os.PathLike[str] | None = None
) -> str:
    """The PIN for keyset ``label``: its own line, else the file's bare PIN line."""
    if label in pins:
        return pins[label]
    if "" in pins:
        return pins[""]
    raise PinFileError(f"has no PIN for label {label!r}; add a line '{label} = DIGITS'", path)
