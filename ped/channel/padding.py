"""Suite 2's padding of SEALED plaintexts: a length, the message, zeros up to a bucket.

Theory of operation
-------------------
A relay sees the size of every SEALED frame.  Unpadded (suite 1), that size tells which
operation ran (a READ_RESULT has a fixed length) and how long a label or a message is.
Suite 2 encrypts, instead of the message M itself::

    u16 len(M) || M || zero bytes        (total: a multiple of PAD_BLOCK bytes)

A sender pads to the *smallest* such multiple.  `PAD_BLOCK` holds the length field and the
largest operation message (SHOW_MESSAGE with 512 bytes of text: 526 bytes), so every
operation message, request or answer, of any kind, colour or label length, is one block:
every SEALED frame of an operation is 8 + 544 + 16 = 568 bytes on the wire.  A receiver
accepts any multiple (a later sender may pad more) that holds the length it reads.

The padding is inside the AEAD, so it is authenticated like the message; a receiver
removes it only after the tag verified, and a message whose length field or padding is
wrong fails the channel (a peer holding the keys sent it: there is no oracle for anyone
else).  The check compares the whole block against its expected form with one
constant-time comparison, so its time depends on the block size, not on where the
message ends or what it holds; the final copy of the message is proportional to its
length, which is what Python allows.
"""

from __future__ import annotations

import hmac

from ped.errors import FieldOutOfRange, LocalProtocolError

#: Padded plaintexts are whole multiples of this many bytes (the 2-byte length included).
PAD_BLOCK = 544
LENGTH_SIZE = 2


def padded_size(length: int) -> int:
    """Bytes a *length*-byte message takes once padded: the smallest multiple of PAD_BLOCK."""
    return -(-(LENGTH_SIZE + length) // PAD_BLOCK) * PAD_BLOCK


def pad(message: bytes | bytearray) -> bytearray:
    """The padded form of *message* (a new bytearray: wipe it once it is encrypted)."""
    length = len(message)
    if length >= 1 << (8 * LENGTH_SIZE):
        raise LocalProtocolError(f"a padded message holds at most {(1 << 16) - 1} bytes")
    padded = bytearray(padded_size(length))
    padded[:LENGTH_SIZE] = length.to_bytes(LENGTH_SIZE, "big")
    padded[LENGTH_SIZE : LENGTH_SIZE + length] = message
    return padded


def is_padded_size(size: int) -> bool:
    """Whether *size* bytes can be a padded plaintext (checked before decryption)."""
    return size > 0 and size % PAD_BLOCK == 0


def unpad(padded: bytes, *, max_length: int) -> bytes:
    """The message inside *padded* (already authenticated); `FieldOutOfRange` if malformed."""
    size = len(padded)
    if not is_padded_size(size):
        raise FieldOutOfRange(
            f"padded message is {size} bytes; suite 2 pads to a multiple of {PAD_BLOCK}"
        )
    length = int.from_bytes(padded[:LENGTH_SIZE], "big")
    room = min(size - LENGTH_SIZE, max_length)
    if length > room:
        raise FieldOutOfRange(
            f"padded message says it holds {length} bytes; its {size} bytes hold at most {room}"
        )
    end = LENGTH_SIZE + length
    expected = padded[:end] + bytes(size - end)
    if not hmac.compare_digest(padded, expected):
        raise FieldOutOfRange("the padding of a sealed message is not all zero bytes")
    return padded[LENGTH_SIZE:end]
