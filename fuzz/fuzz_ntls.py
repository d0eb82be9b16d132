"""Harness: the client protocol (hsmclient <-> pedhsm, port 1792), both ends of
``ped.ntls.connection`` fed whatever the peer sends, in pieces, then end of stream.

The input format is in ``fuzz.ntls_target.one_ntls``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["ntls"])
