"""Tools around the Remote PED that drive its programs from outside: bench, demo, test kit.

`pedtools.bench` (``make bench``), `pedtools.demo` (``make demo``), `pedtools.testing`
(processes in a scratch directory and the pytest fixtures behind ``ped.testing``) and
`pedtools.fakes` (an in-memory USB PED, an emulated PED in the caller's process).  They
start pedserver, pedclient and pedhsm as processes, so they sit outside the protocol
core: ``ped``, ``keys``, the relays and ``hsm`` never import ``pedtools`` (an import
contract in pyproject.toml; ``ped.testing`` is the one named exception).
"""
