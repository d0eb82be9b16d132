"""Harness: the sans-IO connections the daemons run (link hops, both sides; device
transport, both roles), fed whatever their peer sends: state machines, not only decoders.

The input format is in ``fuzz.connection_target.one_connection``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["connections"])
