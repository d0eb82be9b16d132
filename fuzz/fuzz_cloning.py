"""Harness: the cloning protocol (HSM <-> HSM through hsmclient), both ends of
``ped.cloning`` fed whatever the peer sends, in pieces.

The input format is in ``fuzz.cloning_target.one_cloning``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["cloning"])
