"""The emulated PED: engine, front panel, operators (auto, script, tty) and ``pedemu``.

It reads key images, so it holds secrets: only the PED's own process imports it
(``pedemu``, or tests driving it in-process).  Drivers reach it through
``ped.device`` (``emulated:DIR`` starts it as a child process, ``socket:PATH`` connects).
"""
