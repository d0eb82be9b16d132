"""End-to-end channel between HSM and PED: Noise_NNpsk0_25519_ChaChaPoly_SHA256 keyed by the RPV.

Sans-IO.  The HSM uses `ChannelInitiator`, the PED `ChannelResponder`; both yield a
`SecureChannel`.  PROTOCOL.md documents the bytes; ``ped.channel.noise`` the primitives,
``ped.channel.padding`` how suite 2 pads SEALED plaintexts.
"""

from ped.channel.errors import (
    ChannelClosed,
    ChannelError,
    DecryptFailed,
    HandshakeFailed,
    HandshakeRefused,
    MessageTooLarge,
    NonceExhausted,
    RpvMismatch,
    UnsupportedSuite,
)
from ped.channel.handshake import (
    DEFAULT_SUITE,
    LOCAL_RPV,
    PSK_LABEL,
    RPV_SIZE,
    SUITE_NNPSK0_PADDED,
    SUITE_NNPSK0_V1,
    SUPPORTED_SUITES,
    ChannelInitiator,
    ChannelResponder,
    HandshakeInit,
    HandshakeRefusal,
    PedInfo,
    RefuseReason,
    derive_psk,
)
from ped.channel.noise import PROTOCOL_NAME
from ped.channel.padding import PAD_BLOCK
from ped.channel.secure import MAX_PLAINTEXT, SecureChannel

__all__ = [
    "DEFAULT_SUITE",
    "LOCAL_RPV",
    "MAX_PLAINTEXT",
    "PAD_BLOCK",
    "PROTOCOL_NAME",
    "PSK_LABEL",
    "RPV_SIZE",
    "SUITE_NNPSK0_PADDED",
    "SUITE_NNPSK0_V1",
    "SUPPORTED_SUITES",
    "ChannelClosed",
    "ChannelError",
    "ChannelInitiator",
    "ChannelResponder",
    "DecryptFailed",
    "HandshakeFailed",
    "HandshakeInit",
    "HandshakeRefusal",
    "HandshakeRefused",
    "MessageTooLarge",
    "NonceExhausted",
    "PedInfo",
    "RefuseReason",
    "RpvMismatch",
    "SecureChannel",
    "UnsupportedSuite",
    "derive_psk",
]
