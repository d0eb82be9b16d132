"""Conformance kits for outside PED and HSM makers (``pedconform ped`` / ``pedconform hsm``).

Like Autobahn|Testsuite for WebSocket or h2spec for HTTP/2: numbered cases, each citing
the section of PROTOCOL.md or docs/protocol/ it checks, a table for the person at the
terminal and a JSON report for a machine (`report`).  `ped_suite` drives a PED under test
from the project's host and HSM side; `hsm_suite` offers the project's PED side to an HSM
under test.  docs/protocol/conformance.md describes both and the operator adapter.
"""
