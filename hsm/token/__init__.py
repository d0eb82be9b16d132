"""A partition's PKCS#11 objects for the client path: attributes, keys, sealed storage, mechanisms.

`hsm.token.template` checks templates and fills in an object's attributes,
`hsm.token.keygen` makes keys, `hsm.token.vault` stores objects sealed under the
partition's data key, and `hsm.token.mechanisms` signs, verifies, encrypts and decrypts
with them.  `hsm.access.ClientAccess` puts them in front of a registered client.
"""
