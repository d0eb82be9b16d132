"""PKCS#11 as the client path speaks it: constants, typed values and the `Token` contract."""
