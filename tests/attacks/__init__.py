"""Daemon-level attacks of issue 9: each against real processes on real sockets.

Where each attack of the issue is covered (in-memory and sans-IO versions of several
live in ``tests/adversarial/``; the demo-wide ones in ``tests/system/``):

* 2, 3, 4 (replay, bit flips, drop/duplicate/reorder/cut): ``test_relay_daemons.py``
  (a malicious relay between real pedclient and pedserver, the PED a real pedemu) and
  ``test_relay_hsm.py`` (the real pedhsm through that relay: not counted);
* 5 (versions, no downgrade), 6 (oversize, gigabyte length prefix), 12 (operations
  outside a channel): ``test_raw_peers.py``;
* 7 (slowloris, 1,000 half-open connections, memory bound): ``test_resources.py``;
* 9, 10 (wrong colour, other keyset, blank, tampered image, wrong PIN; M of N mixed,
  repeated, too few): ``test_keys_hsm.py`` through pedhsm and its emulated PED;
* 11 (challenge guessed until lockout, across restarts): ``test_challenge_lockout.py``.

Crash consistency (SIGKILL of pedhsm) is in ``tests/crash/``.
"""
