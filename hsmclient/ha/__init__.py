"""HA groups: several partitions of one cloning domain served as one virtual PKCS#11 slot."""
