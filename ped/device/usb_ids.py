"""The USB identity a Remote PED has unless its URI names another (VID:PID)."""

#: pid.codes test VID 0x1209, PID 0x0001 (docs/protocol/device.md, section 5).
DEFAULT_VID = 0x1209
DEFAULT_PID = 0x0001
