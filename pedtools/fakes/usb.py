"""A fake pyusb backend: USB PEDs that exist only in memory (for tests and demos).

In the style of PyFtdi's virtual backend: `FakeUsbBackend` implements pyusb's
``usb.backend.IBackend``, so ``usb.core.find(backend=...)`` and every pyusb call of the
real USB driver run unchanged; only the bottom layer is simulated.  A `FakeUsbDevice`
has the Remote PED's descriptors (vendor interface 0xFF/0x52/0x01, bulk OUT 0x01, bulk
IN 0x81, 64-byte packets) and exposes its *device side* as a trio stream
(`device_stream`): whatever PED firmware is hosted on it (the emulated PED in tests)
reads what the host wrote to bulk OUT and writes what the host reads from bulk IN.

`unplug()` makes the device vanish mid-transfer (ENODEV, as libusb reports it) and ends
its device-side stream; `FakeUsbBackend.plug()` attaches a new device, as a re-plug.
`deny_access=True` answers open with EACCES, as a missing udev rule does.

This module imports no PED firmware: it moves bytes only.  The backend is called from
``trio.to_thread`` worker threads; the device side lives in the trio run that created
the device (its token carries host writes into it).
"""

from __future__ import annotations

import array
import errno
import itertools
import math
import queue
import threading
import types
from typing import Any

import trio
import usb.backend
import usb.core

from ped.device.usb_ids import DEFAULT_PID, DEFAULT_VID

EP_OUT = 0x01
EP_IN = 0x81
MAX_PACKET = 64
_addresses = itertools.count(2)


def _ns(**fields: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(extra_descriptors=b"", **fields)


def _gone() -> usb.core.USBError:
    return usb.core.USBError("No such device (it may have been disconnected)", -4, errno.ENODEV)


class FakeUsbDevice:
    """One fake USB PED; create it inside a trio run."""

    def __init__(
        self,
        *,
        vid: int = DEFAULT_VID,
        pid: int = DEFAULT_PID,
        serial: str = "FAKE0001",
        product: str = "Remote PED (fake USB)",
        manufacturer: str = "remote-ped",
        deny_access: bool = False,
    ) -> None:
        self.vid, self.pid, self.serial = vid, pid, serial
        self.strings = {1: manufacturer, 2: product, 3: serial}
        self.deny_access = deny_access
        self.address = next(_addresses)
        self.attached = True
        self.claimed = False
        self._token = trio.lowlevel.current_trio_token()
        self._to_device_send, self._to_device_recv = trio.open_memory_channel[bytes](math.inf)
        self._to_host: queue.Queue[bytes | None] = queue.Queue()
        self._host_pending = bytearray()
        self._lock = threading.Lock()
        #: Every bulk OUT transfer's size, so tests can check how frames were written.
        self.out_transfers: list[int] = []
        self.device_stream = FakeDeviceSide(self)

    def __repr__(self) -> str:
        ids = f"{self.vid:04x}:{self.pid:04x}"
        return f"<FakeUsbDevice {ids} serial={self.serial} addr={self.address}>"

    # device side (trio) --------------------------------------------------------------
    def _to_host_put(self, data: bytes) -> None:
        if not self.attached:
            raise trio.BrokenResourceError("fake USB device unplugged")
        self._to_host.put(bytes(data))

    def unplug(self) -> None:
        """Pull the cable: transfers fail with ENODEV, the device side sees EOF."""
        self.attached = False
        self._to_host.put(None)  # wake a blocked bulk read
        try:
            self._to_device_send.close()
        except trio.ClosedResourceError:
            pass

    # host side (worker threads) ------------------------------------------------------
    def _check(self) -> None:
        if not self.attached:
            raise _gone()

    def host_write(self, data: array.array[int]) -> int:
        self._check()
        payload = bytes(data)
        self.out_transfers.append(len(payload))
        # Split into packets as the wire would; the device side sees each packet.
        for start in range(0, len(payload), MAX_PACKET):
            trio.from_thread.run_sync(
                self._deliver, payload[start : start + MAX_PACKET], trio_token=self._token
            )
        return len(payload)

    def _deliver(self, packet: bytes) -> None:
        if self.attached:
            self._to_device_send.send_nowait(packet)

    def host_read(self, buff: array.array[int], timeout: int) -> int:
        self._check()
        with self._lock:
            if not self._host_pending:
                try:
                    chunk = self._to_host.get(timeout=max(timeout, 1) / 1000)
                except queue.Empty:
                    raise usb.core.USBTimeoutError(
                        "Operation timed out", -7, errno.ETIMEDOUT
                    ) from None
                if chunk is None or not self.attached:
                    raise _gone()
                self._host_pending += chunk
            # One bulk read returns at most one packet's worth per packet boundary; the
            # host asks for up to len(buff) and gets whole packets.
            count = min(len(buff), len(self._host_pending))
            buff[:count] = array.array("B", self._host_pending[:count])
            del self._host_pending[:count]
            return count


class FakeDeviceSide(trio.abc.Stream):
    """The firmware's view of the fake device: bytes from bulk OUT, bytes to bulk IN."""

    def __init__(self, device: FakeUsbDevice) -> None:
        self._device = device

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self._device._to_host_put(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._device._to_device_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


# pyusb ships no type hints: its IBackend is Any to mypy.
class FakeUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb backend over a set of fake devices (``usb.core.find(backend=...)``)."""

    def __init__(self, *devices: FakeUsbDevice) -> None:
        self.devices: list[FakeUsbDevice] = list(devices)

    def plug(self, device: FakeUsbDevice) -> FakeUsbDevice:
        self.devices = [d for d in self.devices if d.attached]
        self.devices.append(device)
        return device

    def unplug(self, device: FakeUsbDevice) -> None:
        device.unplug()
        self.devices = [d for d in self.devices if d is not device]

    # enumeration and descriptors -----------------------------------------------------
    def enumerate_devices(self) -> Any:
        return iter([d for d in self.devices if d.attached])

    def get_parent(self, dev: FakeUsbDevice) -> None:
        return None

    def get_device_descriptor(self, dev: FakeUsbDevice) -> Any:
        return _ns(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vid, idProduct=dev.pid,
            bcdDevice=0x0100, iManufacturer=1, iProduct=2, iSerialNumber=3,
            bNumConfigurations=1, address=dev.address, bus=1, port_number=1,
            port_numbers=(1,), speed=2,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: FakeUsbDevice, config: int) -> Any:
        if config != 0:
            raise IndexError("fake PED has one configuration")
        return _ns(
            bLength=9, bDescriptorType=2, wTotalLength=32, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=50,
        )  # fmt: skip

    def get_interface_descriptor(self, dev: FakeUsbDevice, intf: int, alt: int, config: int) -> Any:
        if intf != 0 or alt != 0 or config != 0:
            raise IndexError("fake PED has one interface")
        return _ns(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=2, bInterfaceClass=0xFF, bInterfaceSubClass=0x52,
            bInterfaceProtocol=0x01, iInterface=0,
        )  # fmt: skip

    def get_endpoint_descriptor(
        self, dev: FakeUsbDevice, ep: int, intf: int, alt: int, config: int
    ) -> Any:
        if ep not in (0, 1) or intf != 0 or alt != 0 or config != 0:
            raise IndexError("fake PED has two endpoints")
        return _ns(
            bLength=7, bDescriptorType=5, bEndpointAddress=(EP_OUT, EP_IN)[ep],
            bmAttributes=0x02, wMaxPacketSize=MAX_PACKET, bInterval=0, bRefresh=0,
            bSynchAddress=0,
        )  # fmt: skip

    # handles -----------------------------------------------------------------------
    def open_device(self, dev: FakeUsbDevice) -> FakeUsbDevice:
        dev._check()
        if dev.deny_access:
            raise usb.core.USBError("Access denied (insufficient permissions)", -3, errno.EACCES)
        return dev

    def close_device(self, dev_handle: FakeUsbDevice) -> None:
        dev_handle.claimed = False

    def set_configuration(self, dev_handle: FakeUsbDevice, config_value: int) -> None:
        dev_handle._check()

    def get_configuration(self, dev_handle: FakeUsbDevice) -> int:
        dev_handle._check()
        return 1

    def set_interface_altsetting(self, dev_handle: FakeUsbDevice, intf: int, alt: int) -> None:
        dev_handle._check()

    def claim_interface(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        dev_handle._check()
        if dev_handle.claimed:
            raise usb.core.USBError("Resource busy", -6, errno.EBUSY)
        dev_handle.claimed = True

    def release_interface(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        dev_handle.claimed = False
        dev_handle._check()

    def is_kernel_driver_active(self, dev_handle: FakeUsbDevice, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        return None

    def clear_halt(self, dev_handle: FakeUsbDevice, ep: int) -> None:
        dev_handle._check()

    def reset_device(self, dev_handle: FakeUsbDevice) -> None:
        dev_handle._check()

    # transfers -----------------------------------------------------------------------
    def bulk_write(
        self, dev_handle: FakeUsbDevice, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        if ep != EP_OUT:
            raise usb.core.USBError("Pipe error", -9, errno.EPIPE)
        return dev_handle.host_write(data)

    def bulk_read(
        self, dev_handle: FakeUsbDevice, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        if ep != EP_IN:
            raise usb.core.USBError("Pipe error", -9, errno.EPIPE)
        return dev_handle.host_read(buff, timeout)

    def ctrl_transfer(
        self,
        dev_handle: FakeUsbDevice,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        dev_handle._check()
        get_descriptor = bmRequestType == 0x80 and bRequest == 6
        if get_descriptor and wValue >> 8 == 3:
            index = wValue & 0xFF
            if index == 0:
                body = bytes((4, 3, 0x09, 0x04))  # LANGID en-US
            elif index in dev_handle.strings:
                text = dev_handle.strings[index].encode("utf-16-le")
                body = bytes((2 + len(text), 3)) + text
            else:
                raise usb.core.USBError("Pipe error", -9, errno.EPIPE)
            count = min(len(body), len(data))
            data[:count] = array.array("B", body[:count])
            return count
        raise usb.core.USBError("Pipe error (unsupported control request)", -9, errno.EPIPE)
