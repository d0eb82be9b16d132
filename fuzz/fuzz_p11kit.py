"""Harness: hsmclient's p11-kit RPC server (framing, codec, call table, dispatcher).

The input format is in ``fuzz.p11kit_target.one_p11kit_stream``.
"""

from __future__ import annotations

from _harness import run

if __name__ == "__main__":
    import atheris

    with atheris.instrument_imports(include=["hsmclient", "ped", "pedtools", "fuzz"]):
        from fuzz import p11kit_target
    run(p11kit_target.one_p11kit_stream)
