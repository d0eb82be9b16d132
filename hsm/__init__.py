"""The emulated PED-authenticated HSM (``pedhsm``): the other end of the trusted path.

Modules, one job each:

* `hsm.policy`: roles, key colours, failed-login thresholds and outcomes, policies and
  PED timeouts, as data (REFERENCE.md's table).
* `hsm.crypto`: HKDF key-encryption keys from PED secrets, AES-GCM wrapping, the device
  master key that seals what must survive power-off (RPV, auto-activation cache).
* `hsm.store`: durable state in SQLite (WAL, ``synchronous=FULL``, ``secure_delete``,
  integrity check at start).
* `hsm.audit`: the HMAC-chained audit log (``audit.log`` in the home).
* `hsm.state`: the HSM's state (durable handles, the RAM of the powered HSM) and the
  checks every command shares.
* `hsm.logins`: the login service, the one place where a failure is counted and a
  threshold applied.
* `hsm.activation`: the activation cache (policies 22 and 23) and its sealed disk copy.
* `hsm.enrol`: imprinting a role's PED key and wrapping its role key under it.
* `hsm.changepw`: changing a role's secret (old key proven as a login, new key set
  imprinted, the role key re-wrapped in one transaction).
* `hsm.admin`, `hsm.pedadmin`, `hsm.partitions`, `hsm.roles`, `hsm.objects`,
  `hsm.auditor`: the command groups (HSM SO; RPV, PED link and timeouts; partitions;
  partition roles; objects; the auditor).
* `hsm.engine`: `Hsm`, the composition root that builds the above (and says where the
  client listener, cloning and HA membership will go).
* `hsm.pedport` / `hsm.pedlink`: the PED as the HSM sees it, and its implementation
  over ``ped.hsm_api`` (local PED through ``ped.device``, remote PED through pedclient);
  `hsm.localped`: the cabled PED's driver and its per-operation sessions;
  `hsm.apiport`: ``ped`` errors and notices in the HSM's terms; `hsm.linkloss`: a remote
  link that ended without ``hsm ped disconnect``, and how the HSM words it.
* The client path (PKCS#11 applications through hsmclient): `hsm.ntlsd`, the listener on
  port 1792 (pinned mutual TLS 1.3, ``ped.ntls`` inside); `hsm.access`, one registered
  client's `ped.pkcs11.token.PartitionAccess`; `hsm.token`, a partition's PKCS#11 objects,
  key generation and mechanisms; `hsm.clients`, the client registry and the HSM's
  certificate for 1792; `hsm.clientparser`, the shell's ``client``/``ntls`` commands.
* `hsm.control`: the control socket's commands as a table (arguments, handler, renderer);
  `hsm.render`: the texts of the show commands.
* `hsm.server` / `hsm.cli`: the daemon (the powered HSM) and its shell; `hsm.homes`:
  where the shell finds its HSM and pedclient's socket; `hsm.waiting`: the time waited,
  shown on a terminal; `hsm.shellparser`: the shell's commands and arguments;
  `hsm.lunawords`: LunaSH's case-insensitive unique prefixes; `hsm.current`: the current
  partition of each user of the shell.

Files in the home (``--home``, else ``PEDHSM_HOME``, else the per-user default; 0700):
``state.db`` (+ WAL), ``device.key`` (stands for the battery-backed device key: deleting
it is a factory reset), ``audit.log``, ``control.sock``, ``pedhsm.pid``, ``pedhsm.log``,
``ntls/`` (the certificate for port 1792 and the registered clients' pins).

Test hooks (documented, never needed in production):

* ``PEDHSM_TEST_CLOCK=FILE``: the daemon's wall clock is the number in FILE (seconds
  since the epoch), so tests can move time for the auditor lockout and the two-hour
  auto-activation limit; ``mode show`` warns while it is in use.
* ``pedhsm hsm tamper``: records a tamper event, which clears the activation cache
  (memory and sealed disk copy), as a real HSM's tamper response does.
"""
