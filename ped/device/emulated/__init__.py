"""The emulated PED: engine and its flows, front panel, device server, operators and ``pedemu``.

It reads key images, so it holds secrets: only the PED's own process imports it
(``pedemu``, or tests driving it in-process).  Drivers reach it through
``ped.device`` (``emulated:DIR`` starts it as a child process, ``socket:PATH`` connects).
"""
