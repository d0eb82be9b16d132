"""hsmclient: the client-host daemon (PKCS#11 applications to HSM partitions over port 1792)."""
