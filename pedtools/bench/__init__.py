"""The Remote PED benchmark (``make bench`` -> ``python -m pedtools.bench``).

Every figure stands beside a baseline measured in the same run, on the same process
topology, so a noisy machine slows both alike.  Every actor is its own process on
loopback: the HSM side (`pedtools.bench.client`, using `ped.hsm_api` through pedclient like
any HSM), pedclient, pedserver with emulated PEDs (``emulated:DIR?operator=auto``, the
auto operator; no PED PIN), and for the baselines the echo device
(`pedtools.bench.echo_ped`, reached by a second pedserver as ``socket:PATH``) and the TLS
fronts (`pedtools.bench.p2p_front`).

Figures (``bench-results.json``):

* ``login_p50_ms``/``login_p99_ms``: ``read_secret(BLUE)`` on an open session: OpBegin
  to pedserver, the sealed request to the PED, its sealed answer, OpEnd.
  ``relay_p50_ms``: the same link messages with end-to-end frames of the same sizes
  (the sizes are recorded from a real login), bounced by the echo device through the
  same kinds of processes and hops: no channel crypto, no operation logic, no PED.
  Samples alternate login/relay.  ``login_ratio`` = login p50 / relay p50.
* ``connect_p50_ms``: HSM -> pedclient connect request, pedclient's TCP connect and link
  hello to pedserver, the welcome, then the RPV handshake with the orange key (OpBegin,
  handshake init/response, OpEnd).  ``connect_baseline_p50_ms``: the same connect, then
  one round trip of the handshake's frame sizes through the echo device.
* ``rtt``: login and connect over a delay proxy between pedclient and pedserver (added
  RTT 100, 300 and 600 ms), in round trips beyond the local time, with each hold's first
  frame pipelined behind OP_BEGIN and with an HSM that waits for OP_GRANTED: see
  `pedtools.bench.rtt`.
* ``p2p_connect_p50_ms``/``tls_baseline_p50_ms``/``p2p_connect_ratio``: a cold pinned
  mutual TLS 1.3 handshake + link hello + RPV handshake, beside a bare TLS handshake +
  hello + one bounce over the same hops; ``tls_direct_p50_ms`` and
  ``p2p_connect_direct_ratio``: beside a one-hop bare TLS handshake + one round trip;
  ``p2p_spare_connect_p50_ms``/``p2p_spare_baseline_p50_ms``/``p2p_spare_connect_ratio``:
  the daemons' peer-to-peer mode (a spare TLS connection ready); ``p2p_note`` says all
  this in the JSON.  See `pedtools.bench.p2p`.
* ``throughput``: K links through one pedserver with a pool of K emulated PEDs, logging
  in as fast as they can: logins per second and p50/p99 latency for each K.
  ``offered``: the largest K offered a fixed rate in all (open loop, ``--rate``, default
  550/s), latency from each login's scheduled time.
* ``clientpath``: ECDSA P-256 signs through PKCS#11 -> p11-kit-client -> hsmclient ->
  pedhsm, beside the same signature made in-process with ``cryptography``, a
  C_GenerateRandom of the same size and a bare TLS round trip over the same hops, for 1
  and 8 concurrent sessions: see `pedtools.bench.clientpath`.
* ``ha``: signs per second through an HA group's virtual slot with 1, 2 and 3 members
  (the ratio to one member), and the failover pause (p50, p99) an application sees when
  a member's pedhsm is killed: see `pedtools.bench.ha`.
* ``backup``: objects per second of a backup into a Backup HSM and of a restore
  (``--replace``) from it, HSM to HSM through hsmclient: see `pedtools.bench.backup`.
* ``idle_link_kib``: pedserver's resident memory growth (VmRSS) per idle link, over
  1,000 links opened through pedclient and left idle.
* ``pin_kdf_ms``: the PED PIN derivation (scrypt) alone.
* ``machine``: CPU count and model, Python, trio and cryptography versions, load.
"""
