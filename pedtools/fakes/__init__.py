"""Stand-ins for tests: `pedtools.fakes.usb` (USB PEDs in memory, a pyusb backend) and
`pedtools.fakes.inprocess` (an emulated PED served in the caller's nursery)."""
