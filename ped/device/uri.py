"""Device URIs: which driver reaches which PED.

Grammar (PROTOCOL.md, docs/protocol/device.md)::

    uri       = emulated / socket / usb
    emulated  = "emulated:" KEYRING_DIR [ "?" option *( "&" option ) ]
    option    = name "=" value     ; operator=auto|script:FILE, pin-file=F, key-timeout=S,
                                   ; serial=S, mode=remote|local, m=M, n=N, pin=yes|no,
                                   ; duplicates=D, reuse=yes|no
    socket    = "socket:" PATH
    usb       = "usb" [ ":" VID ":" PID [ ":" SERIAL ] ]   ; VID, PID: hex, 0x optional

Values are percent-decoded.  The emulated options are passed to the child ``pedemu``
as command-line options (``--operator auto``...), so the grammar of each is pedemu's.
"""

from __future__ import annotations

import urllib.parse

from ped.device.base import PedDriver
from ped.device.socket_driver import SocketPedDriver
from ped.device.subprocess_driver import SubprocessPedDriver
from ped.device.usb import UsbPedDriver
from ped.device.usb_ids import DEFAULT_PID, DEFAULT_VID
from ped.errors import PedError

#: URI option -> pedemu option.  Only these pass, so a URI cannot smuggle other flags.
EMULATED_OPTIONS = {
    "operator": "--operator",
    "pin-file": "--pin-file",
    "key-timeout": "--key-timeout",
    "serial": "--serial",
    "mode": "--mode",
    "m": "--auto-m",
    "n": "--auto-n",
    "pin": "--auto-pin",
    "duplicates": "--auto-duplicates",
    "reuse": "--auto-reuse",
}


class BadDeviceUri(PedError, ValueError):
    """A device URI does not follow the grammar."""


def _bad(uri: str, why: str) -> BadDeviceUri:
    return BadDeviceUri(
        f"device URI {uri!r}: {why}; use emulated:KEYRING_DIR[?operator=auto|script:FILE], "
        "socket:PATH, usb or usb:VID:PID[:SERIAL]"
    )


def parse_emulated(uri: str) -> tuple[str, list[str]]:
    """``emulated:DIR?opts`` -> (DIR, pedemu options)."""
    rest = uri[len("emulated:") :]
    path, _, query = rest.partition("?")
    path = urllib.parse.unquote(path)
    if not path:
        raise _bad(uri, "name the keyring directory after 'emulated:'")
    options: list[str] = []
    if query:
        for name, value in urllib.parse.parse_qsl(
            query, keep_blank_values=True, strict_parsing=True
        ):
            flag = EMULATED_OPTIONS.get(name)
            if flag is None:
                known = ", ".join(EMULATED_OPTIONS)
                raise _bad(uri, f"unknown option {name!r} (known: {known})")
            if not value:
                raise _bad(uri, f"option {name!r} needs a value")
            options += [flag, value]
    return path, options


def parse_usb(uri: str) -> tuple[int, int, str | None]:
    """``usb[:VID:PID[:SERIAL]]`` -> (vid, pid, serial or None)."""
    if uri == "usb":
        return DEFAULT_VID, DEFAULT_PID, None
    parts = uri.split(":", 3)
    if len(parts) not in (3, 4) or parts[0] != "usb":
        raise _bad(uri, "a USB PED is 'usb' or 'usb:VID:PID[:SERIAL]'")
    try:
        vid, pid = (int(p.removeprefix("0x"), 16) for p in parts[1:3])
    except ValueError:
        raise _bad(uri, "VID and PID are hexadecimal, e.g. usb:1209:0001") from None
    if not (0 <= vid <= 0xFFFF and 0 <= pid <= 0xFFFF):
        raise _bad(uri, "VID and PID are 16-bit values")
    serial = urllib.parse.unquote(parts[3]) if len(parts) == 4 and parts[3] else None
    return vid, pid, serial


def open_driver(uri: str) -> PedDriver:
    """The driver for *uri* (not opened yet: call ``await driver.open()``)."""
    if uri.startswith("emulated:"):
        path, options = parse_emulated(uri)
        return SubprocessPedDriver(path, options, uri=uri)
    if uri.startswith("socket:"):
        path = uri[len("socket:") :]
        if not path:
            raise _bad(uri, "name the socket path after 'socket:'")
        return SocketPedDriver(path, uri=uri)
    if uri == "usb" or uri.startswith("usb:"):
        vid, pid, serial = parse_usb(uri)
        return UsbPedDriver(vid, pid, serial, uri=uri)
    raise _bad(uri, "unknown scheme")
