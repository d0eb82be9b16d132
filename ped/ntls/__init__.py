"""The client protocol between hsmclient and pedhsm (port 1792, inside mutual TLS 1.3).

Sans-IO, as ``ped.link``: `messages` are the frozen messages (one per call of
``ped.pkcs11.token.PartitionAccess`` and its answer), `values` the one encoding of the
typed values, `frames` the bytes and frame reassembly, `connection` the state machine of
either end.  The trio shells are pedhsm's listener (``hsm.ntlsd``) and hsmclient's
``hsmclient.remote``.  docs/protocol/client.md documents every byte.
"""
