"""`usb[:VID:PID[:SERIAL]]`: a USB PED through pyusb.

The USB PED protocol (docs/protocol/device.md): a vendor-specific interface
(bInterfaceClass 0xFF, subclass 0x52 'R', protocol 0x01) with one bulk OUT and one bulk
IN endpoint.  Each direction is a byte stream carrying device-transport frames; the
host writes each frame as one bulk transfer, the device may send frames in transfers of
any size, and both sides reassemble frames by their length field.

pyusb calls block, so every one runs in `trio.to_thread` with a short USB timeout
(`USB_POLL_MS`): a cancelled read returns within that time, never hangs a thread.  USB
errors become the driver's typed errors: no device (`DeviceNotFound`), no permission
(`DeviceAccessDenied`, naming the udev rule that fixes it), unplugged (`DeviceGone`;
`open()` again after the PED is plugged back in).
"""

from __future__ import annotations

import errno
from typing import Any

import trio
import usb.core
import usb.util

from ped.device.errors import DeviceAccessDenied, DeviceNotFound
from ped.device.host import StreamPedDriver
from ped.device.usb_ids import DEFAULT_PID, DEFAULT_VID

INTERFACE_CLASS = 0xFF
INTERFACE_SUBCLASS = 0x52
INTERFACE_PROTOCOL = 0x01
#: Timeout of one bulk read; bounds how long a cancelled read takes to return.
USB_POLL_MS = 200
#: Timeout of one bulk write of a whole frame.
USB_WRITE_MS = 2000
READ_SIZE = 16384

# libusb error codes pyusb reports as backend_error_code.
_LIBUSB_ACCESS = -3
_LIBUSB_NO_DEVICE = -4
_LIBUSB_NOT_FOUND = -5
_LIBUSB_IO = -1
_LIBUSB_PIPE = -9
_GONE_ERRNOS = {errno.ENODEV, errno.ENXIO, errno.EIO, errno.EPIPE, errno.ESHUTDOWN, errno.ENOENT}
_GONE_CODES = {_LIBUSB_NO_DEVICE, _LIBUSB_NOT_FOUND, _LIBUSB_IO, _LIBUSB_PIPE}


def udev_hint(vid: int, pid: int) -> str:
    return (
        "add a udev rule such as "
        f'SUBSYSTEM=="usb", ATTRS{{idVendor}}=="{vid:04x}", ATTRS{{idProduct}}=="{pid:04x}", '
        'MODE="0660", GROUP="plugdev" '
        "to /etc/udev/rules.d/70-remote-ped.rules, run `udevadm control --reload && "
        "udevadm trigger`, replug the PED, and make sure this user is in group plugdev"
    )


def _is_access_error(exc: usb.core.USBError) -> bool:
    return bool(exc.errno == errno.EACCES or exc.backend_error_code == _LIBUSB_ACCESS)


def _is_gone_error(exc: usb.core.USBError) -> bool:
    return exc.errno in _GONE_ERRNOS or exc.backend_error_code in _GONE_CODES


class UsbPedDriver(StreamPedDriver):
    """A USB PED found by VID:PID and optionally serial number."""

    def __init__(
        self,
        vid: int = DEFAULT_VID,
        pid: int = DEFAULT_PID,
        serial: str | None = None,
        *,
        uri: str | None = None,
        backend: Any = None,
    ) -> None:
        if uri is None:
            uri = f"usb:{vid:04x}:{pid:04x}" + (f":{serial}" if serial else "")
        super().__init__(uri)
        self.vid, self.pid, self.serial = vid, pid, serial
        #: A pyusb backend; None lets pyusb pick libusb.  Tests pass a fake one.
        self.backend = backend

    def _find(self) -> Any:
        try:
            devices = list(
                usb.core.find(
                    find_all=True, idVendor=self.vid, idProduct=self.pid, backend=self.backend
                )
            )
        except usb.core.NoBackendError:
            raise DeviceNotFound(
                f"{self.uri}: pyusb found no USB library; install libusb-1.0 "
                "(e.g. `apt install libusb-1.0-0`)"
            ) from None
        where = f"VID:PID {self.vid:04x}:{self.pid:04x}"
        if not devices:
            raise DeviceNotFound(
                f"{self.uri}: no USB PED with {where} is plugged in "
                f"(check the cable and `lsusb -d {self.vid:04x}:{self.pid:04x}`)"
            )
        if self.serial is None:
            if len(devices) > 1:
                raise DeviceNotFound(
                    f"{self.uri}: {len(devices)} PEDs with {where} are plugged in; name one "
                    f"with usb:{self.vid:04x}:{self.pid:04x}:SERIAL"
                )
            return devices[0]
        seen = []
        for dev in devices:
            try:
                serial = usb.util.get_string(dev, dev.iSerialNumber) if dev.iSerialNumber else ""
            except (usb.core.USBError, ValueError) as exc:
                if isinstance(exc, usb.core.USBError) and _is_access_error(exc):
                    raise DeviceAccessDenied(
                        f"{self.uri}: cannot read the PED's serial number: permission "
                        f"denied; {udev_hint(self.vid, self.pid)}"
                    ) from None
                continue
            if serial == self.serial:
                return dev
            seen.append(serial or "?")
        raise DeviceNotFound(
            f"{self.uri}: no PED with {where} has serial {self.serial!r} (found: {', '.join(seen)})"
        )

    def _open_blocking(self) -> UsbLink:
        dev = self._find()
        try:
            try:
                config = dev.get_active_configuration()
            except usb.core.USBError as exc:
                if _is_access_error(exc):
                    raise
                dev.set_configuration()
                config = dev.get_active_configuration()
            intf = usb.util.find_descriptor(
                config,
                custom_match=lambda i: (
                    i.bInterfaceClass == INTERFACE_CLASS
                    and i.bInterfaceSubClass == INTERFACE_SUBCLASS
                ),
            )
            if intf is None:
                raise DeviceNotFound(
                    f"{self.uri}: the device has no Remote PED interface (class 0xFF, "
                    "subclass 0x52); is it a Remote PED?"
                )
            try:
                if dev.is_kernel_driver_active(intf.bInterfaceNumber):
                    dev.detach_kernel_driver(intf.bInterfaceNumber)
            except NotImplementedError:
                pass  # backends without kernel drivers (and the fake one)
            usb.util.claim_interface(dev, intf)
            ep_out = usb.util.find_descriptor(
                intf,
                custom_match=lambda e: (
                    usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_OUT
                    and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
                ),
            )
            ep_in = usb.util.find_descriptor(
                intf,
                custom_match=lambda e: (
                    usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
                    and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
                ),
            )
            if ep_out is None or ep_in is None:
                usb.util.dispose_resources(dev)
                raise DeviceNotFound(
                    f"{self.uri}: the Remote PED interface lacks a bulk IN or OUT endpoint"
                )
            return UsbLink(dev, intf.bInterfaceNumber, ep_out, ep_in)
        except usb.core.USBError as exc:
            usb.util.dispose_resources(dev)
            if _is_access_error(exc):
                raise DeviceAccessDenied(
                    f"{self.uri}: permission denied opening the PED; "
                    f"{udev_hint(self.vid, self.pid)}"
                ) from None
            if exc.errno == errno.EBUSY:
                raise DeviceAccessDenied(
                    f"{self.uri}: the PED is claimed by another program (another pedserver?); "
                    "stop it first"
                ) from None
            raise DeviceNotFound(f"{self.uri}: cannot open the PED: {exc.strerror}") from None

    async def connect_stream(self) -> trio.abc.Stream:
        link = await trio.to_thread.run_sync(self._open_blocking)
        return UsbStream(link)


class UsbLink:
    """The claimed interface and its two bulk endpoints (blocking calls)."""

    def __init__(self, dev: Any, interface: int, ep_out: Any, ep_in: Any) -> None:
        self.dev, self.interface, self.ep_out, self.ep_in = dev, interface, ep_out, ep_in

    def release(self) -> None:
        try:
            usb.util.release_interface(self.dev, self.interface)
        except usb.core.USBError:
            pass  # unplugged: nothing left to release
        usb.util.dispose_resources(self.dev)


class UsbStream(trio.abc.Stream):
    """A trio byte stream over a bulk OUT / bulk IN endpoint pair."""

    def __init__(self, link: UsbLink) -> None:
        self._link = link
        self._closed = False
        self._broken = False
        self._sending = _Exclusive("another task is writing to the USB PED")
        self._receiving = _Exclusive("another task is reading from the USB PED")

    def _fail(self, exc: usb.core.USBError) -> trio.BrokenResourceError:
        self._broken = True
        what = "unplugged" if _is_gone_error(exc) else f"USB error: {exc.strerror}"
        return trio.BrokenResourceError(f"USB PED {what}")

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("USB stream closed")
        if self._broken:
            raise trio.BrokenResourceError("USB PED gone")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._sending:
            self._check()
            payload = bytes(data)
            if not payload:
                await trio.lowlevel.checkpoint()
                return
            try:
                written = await trio.to_thread.run_sync(
                    self._link.ep_out.write, payload, USB_WRITE_MS
                )
            except usb.core.USBTimeoutError:
                self._broken = True
                raise trio.BrokenResourceError("USB PED stopped accepting data") from None
            except usb.core.USBError as exc:
                raise self._fail(exc) from None
            if written != len(payload):
                self._broken = True
                raise trio.BrokenResourceError("USB PED accepted only part of a frame")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        with self._receiving:
            size = min(max_bytes or READ_SIZE, READ_SIZE)
            while True:
                self._check()
                try:
                    data = await trio.to_thread.run_sync(self._link.ep_in.read, size, USB_POLL_MS)
                except usb.core.USBTimeoutError:
                    await trio.lowlevel.checkpoint()  # lets a cancel in between reads
                    continue
                except usb.core.USBError as exc:
                    raise self._fail(exc) from None
                if len(data):
                    return bytes(data)
                await trio.lowlevel.checkpoint()  # a zero-length packet ends a transfer

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await trio.to_thread.run_sync(self._link.release)
        await trio.lowlevel.checkpoint()


class _Exclusive:
    """One task at a time (trio streams forbid concurrent sends or receives)."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        self._held = False
