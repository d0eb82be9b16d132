"""p11-kit RPC framing, sans-IO: the version byte, then 12-byte-header frames both ways.

The client opens with one byte, the highest protocol version it speaks; the server
answers one byte, min(client's, its own), and the client speaks that.  Then every
message is a frame: call code (4 bytes: the client numbers its requests; the answer
carries the same code), options length (4), body length (4), the options (ignored), the
body.  Lengths are checked against the limits as soon as the header is in, before any
of the announced bytes is waited for.
"""

from __future__ import annotations

import struct

import attrs

from hsmclient.p11kit.errors import MessageTooLarge, TruncatedMessage

#: The protocol versions this server speaks (p11-kit 0.24: 0; 0.25.0-0.25.5: 1; later: 2).
MAX_VERSION = 2
#: The largest request body accepted (a sign or encrypt input, a template, a PIN).
MAX_BODY = 4 * 1024 * 1024
#: The largest options block accepted (p11-kit sends none on a unix socket).
MAX_OPTIONS = 64 * 1024

_HEADER = struct.Struct(">III")


@attrs.frozen
class VersionOffered:
    """The client's version byte; answer with `RpcConnection.accept_version`."""

    offered: int


@attrs.frozen
class Frame:
    """One whole request: the client's call code and the message body."""

    code: int
    body: bytearray = attrs.field(repr=lambda body: f"<{len(body)} bytes>")


class RpcConnection:
    """The server side of one p11-kit RPC connection, without I/O.

    Feed bytes with `receive_data`, take events with `next_event` (None: needs more
    bytes), write what `accept_version` and `frame` return.
    """

    def __init__(self, *, max_body: int = MAX_BODY, max_options: int = MAX_OPTIONS) -> None:
        self._buffer = bytearray()
        self._max_body = max_body
        self._max_options = max_options
        self._version: int | None = None
        self._offered = False
        self._header: tuple[int, int, int] | None = None
        self._eof = False

    @property
    def version(self) -> int | None:
        """The negotiated version, once answered."""
        return self._version

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" is the end of the stream."""
        if not data:
            self._eof = True
        self._buffer += data

    def next_event(self) -> VersionOffered | Frame | None:
        """The next whole event, or None until more bytes come.

        Raises `MessageTooLarge` for a header over the limits and `TruncatedMessage` when
        the stream ended inside a frame (a clean end between frames is `at_clean_end`).
        """
        if not self._offered:
            if not self._buffer:
                return None
            self._offered = True
            offered = self._buffer[0]
            del self._buffer[:1]
            return VersionOffered(offered)
        if self._header is None:
            if len(self._buffer) < _HEADER.size:
                self._check_truncated()
                return None
            code, options_len, body_len = _HEADER.unpack_from(self._buffer)
            if options_len > self._max_options:
                raise MessageTooLarge(
                    f"options of {options_len} bytes announced; the limit is {self._max_options}"
                )
            if body_len > self._max_body:
                raise MessageTooLarge(
                    f"a message of {body_len} bytes announced; the limit is {self._max_body}"
                )
            del self._buffer[: _HEADER.size]
            self._header = (code, options_len, body_len)
        code, options_len, body_len = self._header
        if len(self._buffer) < options_len + body_len:
            self._check_truncated()
            return None
        body = self._buffer[options_len : options_len + body_len]
        # Wipe the copy in the stream buffer: a C_Login body carries the PIN.
        self._buffer[: options_len + body_len] = bytes(options_len + body_len)
        del self._buffer[: options_len + body_len]
        self._header = None
        return Frame(code, body)

    def _check_truncated(self) -> None:
        if self._eof and (self._buffer or self._header is not None):
            raise TruncatedMessage(
                f"the client closed the connection inside a frame ({len(self._buffer)} bytes)"
            )

    @property
    def at_clean_end(self) -> bool:
        """The client closed the connection between frames."""
        return self._eof and not self._buffer and self._header is None

    def accept_version(self, offered: int) -> bytes:
        """The answer to the client's version byte: the version both speak."""
        self._version = min(offered, MAX_VERSION)
        return bytes([self._version])

    @staticmethod
    def frame(code: int, body: bytes) -> bytes:
        """An answer frame for request `code` (no options)."""
        return _HEADER.pack(code, 0, len(body)) + body


def request_frame(code: int, body: bytes, options: bytes = b"") -> bytes:
    """A request frame as p11-kit-client writes one (for tests and the fuzz seeds)."""
    return _HEADER.pack(code, len(options), len(body)) + options + body
