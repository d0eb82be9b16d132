"""The established end-to-end channel: seal and open ``SEALED`` frames.

Theory of operation
-------------------
After the handshake each end holds two Noise CipherStates, one per direction.  `seal`
encrypts a plaintext with the send state (empty associated data, as Noise transport
messages have) and wraps the ciphertext in a ``SEALED`` (0x23) frame; `open` does the
reverse.  Nonces are implicit counters, so a replayed, reordered, dropped or altered
message fails authentication; the first failure kills the channel (its keys are wiped)
because a channel that keeps going after a forgery attempt invites an oracle.

A channel of suite 2 (``padded``) encrypts each plaintext padded to a bucket
(`ped.channel.padding`), so that sizes on the wire do not tell operations apart; suite 1
encrypts the plaintext as it is.  The suite is the HSM's choice in the handshake.

Sizes: a plaintext is at most `MAX_PLAINTEXT` bytes (far above any PED operation and
below the Noise limit of 65535 bytes per message); padded, at most `MAX_PADDED`.
"""

from __future__ import annotations

from typing import Literal

from ped.channel.errors import ChannelClosed, DecryptFailed, MessageTooLarge
from ped.channel.noise import TAGLEN, CipherState, wipe
from ped.channel.padding import PAD_BLOCK, is_padded_size, pad, padded_size, unpad
from ped.errors import PedError, UnknownFrameType
from ped.wire.framing import Frame
from ped.wire.types import E2EType

MAX_PLAINTEXT = 16 * 1024
MAX_SEALED = MAX_PLAINTEXT + TAGLEN
#: Largest padded plaintext of suite 2 (`MAX_PLAINTEXT` padded), and its SEALED payload.
MAX_PADDED = padded_size(MAX_PLAINTEXT)
MAX_SEALED_PADDED = MAX_PADDED + TAGLEN


class SecureChannel:
    """One end of an established channel (sans-IO).  Close it to wipe its keys."""

    def __init__(
        self,
        send: CipherState,
        recv: CipherState,
        handshake_hash: bytes,
        *,
        role: Literal["initiator", "responder"],
        padded: bool,
    ) -> None:
        self._send = send
        self._recv = recv
        self.handshake_hash = handshake_hash
        self.role = role
        #: Suite 2: every plaintext travels padded to a multiple of PAD_BLOCK bytes.
        self.padded = padded
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"SecureChannel(role={self.role}, padded={self.padded}, sent={self._send.n}, "
            f"received={self._recv.n}, closed={self._closed})"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def messages_sent(self) -> int:
        return self._send.n

    @property
    def messages_received(self) -> int:
        return self._recv.n

    def seal(self, plaintext: bytes | bytearray) -> Frame:
        self._check_open()
        if len(plaintext) > MAX_PLAINTEXT:
            raise MessageTooLarge(
                f"plaintext is {len(plaintext)} bytes; the channel carries at most {MAX_PLAINTEXT}"
            )
        if not self.padded:
            return Frame(E2EType.SEALED, self._send.encrypt_with_ad(b"", plaintext))
        body = pad(plaintext)
        try:
            return Frame(E2EType.SEALED, self._send.encrypt_with_ad(b"", body))
        finally:
            wipe(body)

    def open(self, frame: Frame) -> bytes:
        """Decrypt a ``SEALED`` frame; any failure closes the channel and raises."""
        self._check_open()
        try:
            if frame.type != E2EType.SEALED:
                raise UnknownFrameType(
                    f"frame type 0x{frame.type:02x} arrived on an established channel; "
                    "only SEALED (0x23) is allowed"
                )
            size = len(frame.payload)
            if not self.padded:
                if not TAGLEN <= size <= MAX_SEALED:
                    raise DecryptFailed(
                        f"sealed message is {size} bytes; allowed {TAGLEN}-{MAX_SEALED}"
                    )
                return self._recv.decrypt_with_ad(b"", frame.payload)
            if not (is_padded_size(size - TAGLEN) and size <= MAX_SEALED_PADDED):
                raise DecryptFailed(
                    f"sealed message is {size} bytes; allowed: {TAGLEN} + a multiple of "
                    f"{PAD_BLOCK} (suite 2 padding), at most {MAX_SEALED_PADDED}"
                )
            body = self._recv.decrypt_with_ad(b"", frame.payload)
            return unpad(body, max_length=MAX_PLAINTEXT)
        except PedError:
            self.close()
            raise

    def close(self) -> None:
        """Wipe both keys; idempotent."""
        self._closed = True
        self._send.wipe()
        self._recv.wipe()

    def _check_open(self) -> None:
        if self._closed:
            raise ChannelClosed("the end-to-end channel is closed; open a new session")
