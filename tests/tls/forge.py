"""A minimal TLS 1.3 peer that shows a certificate it does not hold the key for.

The standard library refuses to load a certificate with a private key that does not
match it (``load_cert_chain`` checks), so it cannot play the impostor who copied a pinned
certificate (public) but not its private key.  This test helper speaks just enough TLS 1.3
(RFC 8446: TLS_AES_128_GCM_SHA256, x25519, ecdsa_secp256r1_sha256) to do that, as a client
or as a server, signing CertificateVerify with whatever key it is given.  It checks none
of what the other side sends: it exists to be refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import Certificate

HANDSHAKE, ALERT, APPDATA, CCS = 22, 21, 23, 20
AES128_GCM_SHA256 = 0x1301
X25519 = 0x001D
ECDSA_P256_SHA256 = 0x0403


def _u8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def _u16(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _u24(b: bytes) -> bytes:
    return len(b).to_bytes(3, "big") + b


def _msg(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _u24(body)


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack(">H", kind) + _u16(data)


def _hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int) -> bytes:
    info = struct.pack(">H", length) + _u8(b"tls13 " + label.encode()) + _u8(context)
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _derive(secret: bytes, label: str, transcript: bytes) -> bytes:
    return _hkdf_expand_label(secret, label, hashlib.sha256(transcript).digest(), 32)


class _Keys:
    def __init__(self, secret: bytes) -> None:
        self.aead = AESGCM(_hkdf_expand_label(secret, "key", b"", 16))
        self.iv = _hkdf_expand_label(secret, "iv", b"", 12)
        self.finished_key = _hkdf_expand_label(secret, "finished", b"", 32)
        self.seq = 0

    def nonce(self) -> bytes:
        n = bytes(a ^ b for a, b in zip(self.iv, self.seq.to_bytes(12, "big"), strict=True))
        self.seq += 1
        return n


class ForgingPeer:
    """One TLS 1.3 connection over *stream* presenting *cert* but signing with *key*."""

    def __init__(self, stream: trio.abc.Stream, cert: Certificate, key: ec.EllipticCurvePrivateKey):
        self.stream = stream
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.key = key
        self.eph = x25519.X25519PrivateKey.generate()
        self.transcript = b""
        self.buf = b""
        self.hs_buf = b""
        self.read_keys: _Keys | None = None
        self.write_keys: _Keys | None = None

    # --- records ----------------------------------------------------------------------

    async def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("peer closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def _read_record(self) -> tuple[int, bytes]:
        while True:
            header = await self._recv_exact(5)
            kind, length = header[0], struct.unpack(">H", header[3:5])[0]
            body = await self._recv_exact(length)
            if kind == CCS:
                continue
            if kind == APPDATA and self.read_keys is not None:
                plain = self.read_keys.aead.decrypt(self.read_keys.nonce(), body, header)
                plain = plain.rstrip(b"\x00")
                return plain[-1], plain[:-1]
            return kind, body

    async def _write_record(self, kind: int, payload: bytes) -> None:
        if self.write_keys is None:
            await self.stream.send_all(bytes([kind]) + b"\x03\x01" + _u16(payload))
            return
        inner = payload + bytes([kind])
        header = bytes([APPDATA]) + b"\x03\x03" + struct.pack(">H", len(inner) + 16)
        sealed = self.write_keys.aead.encrypt(self.write_keys.nonce(), inner, header)
        await self.stream.send_all(header + sealed)

    async def _read_handshake(self) -> tuple[int, bytes]:
        while len(self.hs_buf) < 4 or len(self.hs_buf) < 4 + int.from_bytes(
            self.hs_buf[1:4], "big"
        ):
            kind, data = await self._read_record()
            if kind == ALERT:
                raise ForgeryRefused(data[1] if len(data) > 1 else -1)
            if kind != HANDSHAKE:
                raise ValueError(f"unexpected record type {kind}")
            self.hs_buf += data
        length = int.from_bytes(self.hs_buf[1:4], "big")
        msg, self.hs_buf = self.hs_buf[: 4 + length], self.hs_buf[4 + length :]
        self.transcript += msg
        return msg[0], msg[4:]

    async def _send_handshake(self, msg: bytes) -> None:
        self.transcript += msg
        await self._write_record(HANDSHAKE, msg)

    async def read_alert(self) -> int | None:
        """The alert description the other side sent (None if it just closed)."""
        try:
            while True:
                kind, data = await self._read_record()
                if kind == ALERT:
                    return data[1]
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None

    # --- the shared parts ---------------------------------------------------------------

    def _handshake_keys(self, peer_public: bytes) -> tuple[bytes, bytes]:
        shared = self.eph.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        early = _extract(b"\x00" * 32, b"\x00" * 32)
        hs = _extract(_derive(early, "derived", b""), shared)
        self.handshake_secret = hs
        return _derive(hs, "c hs traffic", self.transcript), _derive(
            hs, "s hs traffic", self.transcript
        )

    def _application_secrets(self) -> tuple[bytes, bytes]:
        master = _extract(_derive(self.handshake_secret, "derived", b""), b"\x00" * 32)
        return _derive(master, "c ap traffic", self.transcript), _derive(
            master, "s ap traffic", self.transcript
        )

    def _certificate(self, context: bytes) -> bytes:
        return _msg(11, _u8(context) + _u24(_u24(self.cert_der) + _u16(b"")))

    def _certificate_verify(self, who: str) -> bytes:
        content = (
            b"\x20" * 64
            + f"TLS 1.3, {who} CertificateVerify".encode()
            + b"\x00"
            + hashlib.sha256(self.transcript).digest()
        )
        sig = self.key.sign(content, ec.ECDSA(hashes.SHA256()))
        return _msg(15, struct.pack(">H", ECDSA_P256_SHA256) + _u16(sig))

    def _finished(self, keys: _Keys) -> bytes:
        digest = hashlib.sha256(self.transcript).digest()
        return _msg(20, hmac.new(keys.finished_key, digest, hashlib.sha256).digest())

    # --- client ------------------------------------------------------------------------

    async def run_client(self) -> None:
        """Handshake as a client, presenting the certificate with the wrong key."""
        pub = self.eph.public_key().public_bytes_raw()
        exts = b"".join(
            [
                _ext(43, _u8(b"\x03\x04")),
                _ext(10, _u16(struct.pack(">H", X25519))),
                _ext(51, _u16(struct.pack(">H", X25519) + _u16(pub))),
                _ext(13, _u16(struct.pack(">H", ECDSA_P256_SHA256))),
            ]
        )
        hello = (
            b"\x03\x03"
            + os.urandom(32)
            + _u8(os.urandom(32))
            + _u16(struct.pack(">H", AES128_GCM_SHA256))
            + b"\x01\x00"
            + _u16(exts)
        )
        await self._send_handshake(_msg(1, hello))
        kind, body = await self._read_handshake()
        assert kind == 2, f"expected ServerHello, got {kind}"
        server_pub = _find_key_share(body, server_hello=True)
        c_hs, s_hs = self._handshake_keys(server_pub)
        self.read_keys = _Keys(s_hs)
        request_context = b""
        while True:
            kind, body = await self._read_handshake()
            if kind == 13:  # CertificateRequest
                request_context = body[1 : 1 + body[0]]
            if kind == 20:  # server Finished
                break
        self._application_secrets_at_server_finished = self._application_secrets()
        self.write_keys = _Keys(c_hs)
        await self._send_handshake(self._certificate(request_context))
        await self._send_handshake(self._certificate_verify("client"))
        await self._send_handshake(self._finished(self.write_keys))
        # The server answers with its application keys (it sent its Finished already).
        self.read_keys = _Keys(self._application_secrets_at_server_finished[1])

    # --- server ------------------------------------------------------------------------

    async def run_server(self) -> None:
        """Handshake as a server, presenting the certificate with the wrong key."""
        kind, body = await self._read_handshake()
        assert kind == 1, f"expected ClientHello, got {kind}"
        session_id = body[35 : 35 + body[34]]
        client_pub = _find_key_share(body, server_hello=False)
        pub = self.eph.public_key().public_bytes_raw()
        exts = _ext(43, b"\x03\x04") + _ext(51, struct.pack(">H", X25519) + _u16(pub))
        hello = (
            b"\x03\x03"
            + os.urandom(32)
            + _u8(session_id)
            + struct.pack(">H", AES128_GCM_SHA256)
            + b"\x00"
            + _u16(exts)
        )
        await self._send_handshake(_msg(2, hello))
        c_hs, s_hs = self._handshake_keys(client_pub)
        self.write_keys = _Keys(s_hs)
        await self._send_handshake(_msg(8, _u16(b"")))
        sigalgs = _ext(13, _u16(struct.pack(">H", ECDSA_P256_SHA256)))
        await self._send_handshake(_msg(13, _u8(b"") + _u16(sigalgs)))
        await self._send_handshake(self._certificate(b""))
        await self._send_handshake(self._certificate_verify("server"))
        await self._send_handshake(self._finished(self.write_keys))
        self.read_keys = _Keys(c_hs)  # the client's alert comes under its handshake keys


class ForgeryRefused(Exception):
    def __init__(self, alert: int) -> None:
        super().__init__(f"refused with TLS alert {alert}")
        self.alert = alert


def _find_key_share(body: bytes, *, server_hello: bool) -> bytes:
    pos = 2 + 32
    pos += 1 + body[pos]  # session id
    if server_hello:
        pos += 2 + 1  # cipher suite, compression
    else:
        pos += 2 + struct.unpack(">H", body[pos : pos + 2])[0]  # cipher suites
        pos += 1 + body[pos]  # compression methods
    end = pos + 2 + struct.unpack(">H", body[pos : pos + 2])[0]
    pos += 2
    while pos < end:
        kind, length = struct.unpack(">HH", body[pos : pos + 4])
        data = body[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if kind != 51:
            continue
        if server_hello:
            group, klen = struct.unpack(">HH", data[:4])
            assert group == X25519
            return data[4 : 4 + klen]
        shares = data[2:]
        while shares:
            group, klen = struct.unpack(">HH", shares[:4])
            if group == X25519:
                return shares[4 : 4 + klen]
            shares = shares[4 + klen :]
    raise ValueError("no x25519 key share")
