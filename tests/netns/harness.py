"""Two test hosts in network namespaces, joined by a veth pair, with an optional firewall.

Theory of operation
-------------------
`make_two_hosts()` (a context manager; also the pytest fixture `two_hosts`) creates, with
iproute2, two network namespaces ``ped-<pid>-<run>-a`` and ``ped-<pid>-<run>-b`` (``<run>``
is random per test, so parallel runs never collide; namespaces left by a run that was
killed, whose ``<pid>`` is gone, are removed on the next start), a veth pair
with one end in each, and the addresses ``10.200.N.1/30`` (host A) and ``10.200.N.2/30``
(host B) *inside* the namespaces only.  Nothing is added to the machine's own network.

`Host.command(...)` prefixes ``ip netns exec NAME`` so any program (pedserver,
pedclient, pedhsm, a probe) runs on that host; `Host.popen` starts one and remembers it.
`Host.block_new_outgoing()` loads an nftables ruleset on that host that drops every
*new* outgoing connection on its network interface (not loopback), while replies to
connections that others open to it still flow: a firewalled HSM host.

Teardown always runs, also when the test fails or is interrupted: every process started
in the namespaces (ours, found by ``ip netns pids``) is terminated, then killed, and the
namespaces are deleted, which removes the veth pair and the firewall with them.

`netns_unavailable()` says why namespaces cannot be used here (not root, no ``ip``, no
``nft``, the kernel refuses); `require_netns()` skips the test with that reason, or fails
it when ``PED_REQUIRE_NETNS=1`` (CI, where the test must run).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence

import attrs
import pytest

REQUIRE_ENV = "PED_REQUIRE_NETNS"
COMMAND_TIMEOUT = 30.0

#: nftables ruleset for `Host.block_new_outgoing`: what a locked-down HSM host has.
BLOCK_NEW_OUTGOING = """\
table inet ped_firewall {
    chain output {
        type filter hook output priority filter; policy accept;
        oifname "lo" accept
        ct state established,related accept
        ct state new counter drop
    }
}
"""

_PROBE_CONNECT = textwrap.dedent(
    """
    import socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    except OSError as exc:
        print(type(exc).__name__); sys.exit(1)
    print("connected")
    """
)

_PROBE_LISTEN = textwrap.dedent(
    """
    import socket, sys
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.close()
    """
)


class NetnsError(RuntimeError):
    """A namespace, link or command of the harness failed."""


@functools.cache
def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, as CI does)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install Debian's {package})"
    probe = f"ped-probe-{secrets.token_hex(3)}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"the kernel refused a network namespace: {made.stderr.strip()}"
    try:
        nft = _run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"], check=False)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace: {nft.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def require_netns() -> None:
    """Skip (or fail, with PED_REQUIRE_NETNS=1) when namespaces cannot be used."""
    reason = netns_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@attrs.define
class Host:
    """One test host: a network namespace with one veth interface."""

    netns: str
    ifname: str
    ip: str
    processes: list[subprocess.Popen[bytes]] = attrs.field(factory=list, repr=False)

    def command(self, *argv: str) -> list[str]:
        """*argv* run on this host (for subprocess or trio.run_process)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on this host to completion; output is captured as text."""
        return _run(self.command(*argv), check=check, timeout=timeout)

    def popen(self, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a long-running process on this host; it is stopped at teardown."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(*argv), **kwargs)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def python(self, code: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``python -c code args...`` (this interpreter) on this host."""
        return self.popen(sys.executable, "-c", code, *args, **kwargs)

    def block_new_outgoing(self) -> None:
        """Drop every new outgoing connection from this host (replies still flow)."""
        subprocess.run(
            self.command("nft", "-f", "-"),
            input=BLOCK_NEW_OUTGOING,
            text=True,
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )

    def firewall_drops(self) -> int:
        """How many packets the firewall of `block_new_outgoing` has dropped so far."""
        out = self.run("nft", "list", "chain", "inet", "ped_firewall", "output").stdout
        for line in out.splitlines():
            if "drop" in line and "packets" in line:
                return int(line.split("packets")[1].split()[0])
        return 0

    def can_connect(self, ip: str, port: int, *, timeout: float = 3.0) -> bool:
        """Whether a TCP connection from this host to *ip*:*port* opens in *timeout* s."""
        probe = self.run(
            sys.executable,
            "-c",
            _PROBE_CONNECT,
            ip,
            str(port),
            str(timeout),
            check=False,
            timeout=timeout + COMMAND_TIMEOUT,
        )
        return probe.returncode == 0 and probe.stdout.strip() == "connected"

    def listen(self, port: int) -> subprocess.Popen[bytes]:
        """A TCP listener on this host's address that accepts and closes connections."""
        proc = self.python(_PROBE_LISTEN, self.ip, str(port), stdout=subprocess.PIPE)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"listening":
            raise NetnsError(f"probe listener on {self.netns} did not start")
        return proc

    def wait_for_port(self, port: int, *, ip: str | None = None, tries: int = 100) -> None:
        """Wait until something on this host listens on *port* (polls `ss`)."""
        for _ in range(tries):
            out = self.run("ss", "-Htln", f"sport = :{port}", check=False).stdout
            if out.strip() and (ip is None or ip in out or "*" in out or "0.0.0.0" in out):
                return
            time.sleep(0.1)
        raise NetnsError(f"nothing listens on port {port} on {self.netns}")

    def stop_processes(self) -> None:
        procs, self.processes = self.processes, []
        for proc in procs:
            _stop(proc.pid, proc)


@attrs.define
class TwoHosts:
    """Host A (``.a``, 10.200.N.1) and host B (``.b``, 10.200.N.2), joined by veth."""

    run_id: str
    a: Host
    b: Host

    @property
    def hosts(self) -> tuple[Host, Host]:
        return (self.a, self.b)


@contextlib.contextmanager
def make_two_hosts(prefix: str = "ped") -> Iterator[TwoHosts]:
    """Create two hosts; always tear them down (see the module docstring)."""
    remove_stale_namespaces(prefix)
    run_id = secrets.token_hex(3)
    subnet = secrets.randbelow(256)
    base = f"{prefix}-{os.getpid()}-{run_id}"
    a = Host(f"{base}-a", f"pv{run_id}a", f"10.200.{subnet}.1")
    b = Host(f"{base}-b", f"pv{run_id}b", f"10.200.{subnet}.2")
    pair = TwoHosts(run_id, a, b)
    created: list[str] = []
    try:
        for host in pair.hosts:
            _run(["ip", "netns", "add", host.netns])
            created.append(host.netns)
        _run(
            [
                "ip",
                "link",
                "add",
                a.ifname,
                "netns",
                a.netns,
                "type",
                "veth",
                "peer",
                "name",
                b.ifname,
                "netns",
                b.netns,
            ]
        )
        for host in pair.hosts:
            _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
            _run(["ip", "-n", host.netns, "addr", "add", f"{host.ip}/30", "dev", host.ifname])
            _run(["ip", "-n", host.netns, "link", "set", host.ifname, "up"])
        yield pair
    finally:
        for host in pair.hosts:
            host.stop_processes()
        for netns in created:
            _kill_namespace_processes(netns)
            _run(["ip", "netns", "del", netns], check=False)


@pytest.fixture(name="two_hosts")
def two_hosts_fixture() -> Iterator[TwoHosts]:
    """pytest fixture ``two_hosts``: skip/fail per `require_netns`, then `TwoHosts`."""
    require_netns()
    with make_two_hosts() as pair:
        yield pair


def remove_stale_namespaces(prefix: str = "ped") -> list[str]:
    """Delete namespaces this harness made in a run whose process has died (a test run
    killed with SIGKILL cannot tear down).  Names carry the creating pid for this."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-[0-9a-f]{{6}}-[ab]")
    listed = _run(["ip", "netns", "list"], check=False).stdout.split()
    removed = []
    for name in listed:
        match = pattern.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _kill_namespace_processes(netns: str) -> None:
    """Stop whatever our tests left running inside *netns* (ip netns pids lists them)."""
    listed = _run(["ip", "netns", "pids", netns], check=False)
    for word in listed.stdout.split():
        if word.isdigit():
            _stop(int(word), None)


def _stop(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, wait up to 5 s, then SIGKILL: one process we started (and, for a Popen
    started in its own session, its process group)."""
    group = proc is not None and os.getpgid(pid) == pid if _alive(pid) else False

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig) if group else os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if proc is None and not _alive(pid):
            break
        time.sleep(0.05)
    else:
        send(signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result
