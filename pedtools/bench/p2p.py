"""Peer-to-peer connect cost, each figure beside a baseline on the same hops and processes.

Four connects are timed alternately in each round (so that a busy machine slows all alike):

* ``p2p_connect``: a *cold* pinned mutual TLS 1.3 handshake + TCP connect + link hello +
  RPV handshake with the orange key.  The TLS hop is made by the bench's TLS front
  (``python -m pedtools.bench.p2p_front serve --mode pinned-relay``), which accepts with
  ``ped.tls.accept_pinned_tls`` (the registry of pins, the ACCEPTED message: exactly what
  pedclient's peer listener runs) and relays to pedserver's TCP port; the HSM-side
  process dials it with ``ped.tls.open_pinned_tls_client`` (what pedserver runs when it
  dials a spare).  Path: HSM --TLS--> front --TCP--> pedserver --> emulated PED.  The
  daemons' own mode cannot be timed cold from the HSM: pedserver dials its spares
  before any HSM asks, so no TLS handshake is ever on an HSM's path when a spare is
  ready; this front puts one there, with the same ped.tls code.
* ``tls_baseline``: a bare trio mutual TLS 1.3 handshake (plain ``ssl`` contexts: TLS
  1.3, client certificate required, the peer's certificate as the only trust anchor; no
  pin registry, no ACCEPTED message) + link hello + one round trip of the RPV
  handshake's frame sizes bounced by the echo device, over the *same hops*: HSM --TLS-->
  a bare TLS front (``--mode bare-relay``) --TCP--> a second pedserver --> the echo
  device.  This is the standard connect's baseline with TLS in front of it.
* ``tls_direct`` (extra, the figure this bench used to call the baseline): a bare TLS
  handshake + one 32-byte round trip directly with an echoing TLS server
  (``--mode bare-echo``): one hop, no pedserver, no device.
* ``p2p_spare_connect``: the daemons' real peer-to-peer mode as an HSM sees it in
  steady use: pedclient (``--peer-listen``) hands the HSM a spare TLS connection
  pedserver dialled beforehand; then link hello + RPV handshake.  Its baseline,
  ``p2p_spare_baseline``, is the same on a spare from a second peer-to-peer pedserver
  whose device is the echo device: link hello + one bounce of the handshake's sizes.

All TLS ends use identities made by ``ped.tls``.  This module starts the fronts
(`pedtools.bench.p2p_front`) and the peer-to-peer daemons, runs the HSM side's job
(`pedtools.bench.p2p_client`) and computes the figures.
"""


from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from pedtools.bench.limits import BENCH_SERVER_CONFIG
from pedtools.bench.p2p_front import setup_pins
from pedtools.bench.procs import Daemon, run_client, spawn, stop, wait_for
from pedtools.bench.stats import percentile, ratio


def run_p2p_jobs(rig: Any, plan: Any) -> dict[str, Any]:
    """Start the TLS fronts and the peer-to-peer pedclient and pedservers, run the p2p
    job, stop them (called by `pedtools.bench.run`)."""
    work: Path = rig.work
    client_home, front_home = work / "tls-dialler", work / "tls-front"
    client_home.mkdir(mode=0o700)
    front_home.mkdir(mode=0o700)
    setup_pins(client_home, front_home)
    fronts: list[subprocess.Popen[bytes]] = []

    def front(mode: str, target: int = 0) -> Path:
        ready = work / f"front-{mode}.port"
        fronts.append(spawn(["-m", "pedtools.bench.p2p_front", "serve", "--mode", mode, "--home",
                             str(front_home), "--peer-home", str(client_home), "--target",
                             str(target), "--ready", str(ready)], work / f"front-{mode}.out"))
        return ready

    daemons: list[Any] = []
    try:
        readies = [front("pinned-relay", rig.ped_port), front("bare-relay", rig.echo_port),
                   front("bare-echo")]
        for ready, proc in zip(readies, fronts, strict=True):
            wait_for(ready, proc, f"the TLS front ({ready.stem})")
        p2p_socket = start_p2p_daemons(rig, daemons)
        job = rig.job("p2p", count=plan.p2p_count, warmup=plan.warmup,
                      front_port=int(readies[0].read_text()),
                      bare_relay_port=int(readies[1].read_text()),
                      echo_tls_port=int(readies[2].read_text()),
                      tls_client_home=str(client_home), tls_server_home=str(front_home),
                      p2p_socket=p2p_socket, p2p_peer="workstation",
                      p2p_echo_peer="workstation-echo")
        got = run_client(job, work, "p2p")
    finally:
        for daemon in daemons:
            daemon.stop()
        for proc in fronts:
            stop(proc)
    p50 = {key: percentile(got[key], 50) for key in (
        "p2p_connect_ms", "tls_baseline_ms", "tls_direct_ms", "p2p_daemon_connect_ms",
        "p2p_spare_baseline_ms")}
    return {
        "p2p_connect_p50_ms": p50["p2p_connect_ms"],
        "tls_baseline_p50_ms": p50["tls_baseline_ms"],
        "p2p_connect_ratio": ratio(p50["p2p_connect_ms"], p50["tls_baseline_ms"]),
        "tls_direct_p50_ms": p50["tls_direct_ms"],
        "p2p_connect_direct_ratio": ratio(p50["p2p_connect_ms"], p50["tls_direct_ms"]),
        "p2p_spare_connect_p50_ms": p50["p2p_daemon_connect_ms"],
        "p2p_spare_baseline_p50_ms": p50["p2p_spare_baseline_ms"],
        "p2p_spare_connect_ratio": ratio(p50["p2p_daemon_connect_ms"],
                                         p50["p2p_spare_baseline_ms"]),
        "p2p_note": (
            "p2p_connect: a cold pinned mutual TLS 1.3 handshake (ped.tls, through the "
            "bench's TLS front relaying to pedserver) + TCP connect + link hello + RPV "
            "handshake. tls_baseline: a bare mutual TLS 1.3 handshake (plain ssl "
            "contexts, no pins) + link hello + one round trip of the RPV handshake's "
            "sizes through the echo device, over the same hops (HSM side -> bare TLS "
            "front -> pedserver -> device). tls_direct: a bare TLS handshake + one round "
            "trip directly with an echoing TLS server (one hop; the old baseline), with "
            "p2p_connect_direct_ratio. p2p_spare_connect: the daemons' peer-to-peer mode "
            "as an HSM sees it: pedclient hands over a spare TLS connection pedserver "
            "dialled beforehand, then link hello + RPV handshake; p2p_spare_baseline: the "
            "same on a spare from a pedserver whose device is the echo device (link hello "
            "+ one round trip of the same sizes)"
        ),
    }


def start_p2p_daemons(rig: Any, daemons: list[Any]) -> str:
    """A pedclient listening for peers and two pedservers dialling it (the daemons' own
    peer-to-peer mode, certificates exchanged through their CLIs): ``workstation`` with
    the emulated PED, ``workstation-echo`` with the echo device; pedclient's socket."""
    client_home = rig.work / "p2p-client"

    def cli(program: str, home: Path, *argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", program, *argv, "--home", str(home)],
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    client = Daemon("pedclient", client_home, {"max_links": 1024, "connect_timeout": 600},
                    ["--peer-listen", "--port", "0", "--peer-ip", "127.0.0.1"])
    daemons.append(client)
    servers: dict[str, Any] = {}
    for name, device in (("workstation", rig.ped_uri),
                         ("workstation-echo", f"socket:{rig.work / 'echo.sock'}")):
        servers[name] = Daemon(
            "pedserver", rig.work / f"p2p-{name}",
            BENCH_SERVER_CONFIG,
            ["--ip", "127.0.0.1", "--port", "0", "--device", device])
        daemons.insert(0, servers[name])
    listen = str(client.wait_ready()["peer_listen"])
    port = listen.split(",")[0].rsplit(":", 1)[1]
    client_pem = rig.work / "p2p-client.pem"
    cli("pedclient", client_home, "certificate", "export", str(client_pem))
    for name, server in servers.items():
        server.wait_ready()
        server_pem = rig.work / f"p2p-{name}.pem"
        cli("pedserver", server.home, "certificate", "export", str(server_pem))
        cli("pedclient", client_home, "peer", "register", "--name", name,
            "--certificate", str(server_pem))
        cli("pedserver", server.home, "appliance", "register", "--name", "hsmhost",
            "--certificate", str(client_pem), "--ip", "127.0.0.1", "--port", port)
        cli("pedserver", server.home, "mode", "connect", "--name", "hsmhost")
    return str(client_home / "pedclient.sock")
