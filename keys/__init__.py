"""PED key images, M of N splits and the PED PIN (stands alone: stdlib, cryptography, attrs).

The public API, re-exported here:

* images: `KeyHeader`, `KeyImage`, `load_image`, `write_image`, `read_header`
* directories and PED operations: `Keyring`, `KeyEntry`, `new_keyset`, `imprint`,
  `duplicate`, `erase`, `ShareCollector`, `fingerprint_of`, `keyset_fingerprint`
* M of N: `Share`, `split`, `combine`
* PED PIN: `secret_for_hsm`, `derive_pin_secret`, `validate_pin`, `read_pin_file`,
  `pin_for_label`
* errors: `keys.errors` (all derive from `KeyImageError`)
"""

from keys.collector import ShareCollector
from keys.colors import Color
from keys.errors import KeyImageError
from keys.fingerprint import keyset_fingerprint
from keys.image import (
    IMAGE_SUFFIX,
    KeyHeader,
    KeyImage,
    load_image,
    read_header,
    write_image,
)
from keys.keyring import (
    KeyEntry,
    Keyring,
    duplicate,
    erase,
    fingerprint_of,
    imprint,
    new_keyset,
)
from keys.pin import derive_pin_secret, pin_for_label, read_pin_file, secret_for_hsm, validate_pin
from keys.shamir import KEYSET_ID_SIZE, SECRET_SIZE, Share, combine, split, wipe

__all__ = [
    "IMAGE_SUFFIX",
    "KEYSET_ID_SIZE",
    "SECRET_SIZE",
    "Color",
    "KeyEntry",
    "KeyHeader",
    "KeyImage",
    "KeyImageError",
    "Keyring",
    "Share",
    "ShareCollector",
    "combine",
    "derive_pin_secret",
    "duplicate",
    "erase",
    "fingerprint_of",
    "imprint",
    "keyset_fingerprint",
    "load_image",
    "new_keyset",
    "pin_for_label",
    "read_header",
    "read_pin_file",
    "secret_for_hsm",
    "split",
    "validate_pin",
    "wipe",
    "write_image",
]
