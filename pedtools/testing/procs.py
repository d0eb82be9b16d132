"""Run the Remote PED programs as real processes in one scratch directory, and clean up.

Theory of operation
-------------------
A `Site` owns a directory (its *root*).  Everything it starts lives under it: the key
directory, PIN files, and one home per daemon (pedserver, pedclient, pedhsm...).  Daemons
are started with their own ``mode start`` (so they go to the background exactly as an
administrator's would) and stopped with ``mode stop``; `Site.close` stops every daemon
it started, newest first, then makes sure no process whose command line names the root
is left (a daemon that ignored ``mode stop`` gets SIGTERM, then SIGKILL, by pid), and
removes the root if the site made it.  `Site` is a context manager, so a failure or
Ctrl-C in the middle still ends in a clean machine.

The programs are run by module (``python -m pedserver``) or by their console script next
to this interpreter (``pedhsm``, ``pedkey``), never imported: each runs as the process it
is in production, with its own signals, sockets and logs.  Every child runs with the root
as its working directory, whose entries are named so that none shadows a package
(``python -m`` puts the working directory first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import attrs

from ped.errors import PedError

#: Environment variables a child must not inherit (they would point it elsewhere).
_SCRUBBED_ENV = (
    "PEDSERVER_HOME",
    "PEDCLIENT_HOME",
    "PEDHSM_HOME",
    "PEDHSM_TEST_CLOCK",
    "PYTHONSTARTUP",
)
#: Seconds one command may take (the longest wait at an auto-operated PED is a few s).
DEFAULT_COMMAND_TIMEOUT = 120.0
#: Seconds a daemon has to exit after `mode stop` before it gets SIGTERM, then SIGKILL.
STOP_GRACE = 10.0
_PID = re.compile(r"\(pid (\d+)")


class SiteError(PedError):
    """A program of the site failed; the message names the command and its output."""


def program(name: str) -> list[str]:
    """The argv prefix that runs program *name* with this interpreter's installation.

    pedserver and pedclient have a ``__main__``; pedhsm, pedkey and pedemu are console
    scripts installed next to the interpreter (``make`` installs them in ``.venv/bin``).
    """
    if name in ("pedserver", "pedclient"):
        return [sys.executable, "-m", name]
    if name == "pedemu":
        return [sys.executable, "-m", "ped.device.emulated"]
    if name == "watched_ped":
        return [sys.executable, "-m", "pedtools.testing.watched_ped"]
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    if found is None:
        raise SiteError(
            f"the {name} console script is not installed next to {sys.executable}; "
            "install the project (`make demo` or `pip install -e .`)"
        )
    return [found]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@attrs.frozen
class Result:
    """One finished command: what was typed, its exit status, output and duration."""

    argv: tuple[str, ...]
    code: int
    out: str
    err: str
    seconds: float

    @property
    def output(self) -> str:
        return self.out + self.err

    def must(self) -> str:
        """The output of a command that had to succeed; else `SiteError` with all of it."""
        if self.code != 0:
            raise SiteError(f"`{' '.join(self.argv)}` exited {self.code}:\n{self.output}")
        return self.output


def write_private(path: Path, text: str) -> Path:
    """*text* in a new owner-only file at *path* (a challenge, a PIN file): never 0644."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@attrs.define
class Daemon:
    name: str
    home: Path
    pid: int | None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose (its parent reaps it)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line contains *text* (Linux /proc)."""
    pids = []
    needle = text.encode()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return sorted(pids)


class Site:
    """A scratch directory with daemons in it (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, prefix: str = "ped-") -> None:
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
            self._owns_root = True
        else:
            self.root = Path(root).resolve()
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._owns_root = False
        self.daemons: list[Daemon] = []
        self.spawned: list[Spawned] = []  # foreground programs run in the background
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}

    # -- paths -------------------------------------------------------------------------
    def home(self, name: str) -> Path:
        """A daemon home under the root, created owner-only (``home-NAME``)."""
        path = self.root / f"home-{name}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    # -- running -----------------------------------------------------------------------
    def run(
        self,
        prog: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
        check: bool = False,
    ) -> Result:
        """Run *prog* with *args* to completion in the root; never raises for a bad exit
        status unless *check*."""
        argv = [*program(prog), *args]
        full_env = dict(self.env)
        full_env.update(env or {})
        started = time.monotonic()
        try:
            done = subprocess.run(  # our own programs, no shell
                argv,
                cwd=self.root,
                env=full_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SiteError(
                f"`{prog} {' '.join(args)}` did not finish within {timeout:g} s"
            ) from exc
        result = Result(
            (prog, *args), done.returncode, done.stdout, done.stderr, time.monotonic() - started
        )
        if check and result.code != 0:
            raise SiteError(
                f"`{prog} {' '.join(args)}` exited with status {result.code}:\n{result.output}"
            )
        return result

    def start(self, prog: str, home: Path, *args: str) -> Result:
        """``PROG mode start --home HOME ARGS``; the daemon is remembered for `close`."""
        result = self.run(prog, "mode", "start", "--home", str(home), *args)
        if result.code != 0:
            raise SiteError(f"{prog} did not start (status {result.code}):\n{result.output}")
        found = _PID.search(result.output)
        self.daemons.append(Daemon(prog, home, int(found.group(1)) if found else None))
        return result

    def stop(self, prog: str, home: Path) -> Result | None:
        """``PROG mode stop`` for a daemon this site started; waits until it is gone."""
        for daemon in list(self.daemons):
            if daemon.name == prog and daemon.home == home:
                self.daemons.remove(daemon)
                return self._stop(daemon)
        return None

    def _stop(self, daemon: Daemon) -> Result | None:
        result = None
        with contextlib.suppress(SiteError):
            result = self.run(daemon.name, "mode", "stop", "--home", str(daemon.home), timeout=30)
        if daemon.pid is not None:
            _wait_gone([daemon.pid])
        return result

    def spawn(self, prog: str, *args: str, ready: Path, timeout: float = 30.0) -> Spawned:
        """Run *prog* in the site's root in the background (its output in ``PROG-N.log``)
        until it has made the path *ready* (its socket); `Site.close` stops it after the
        daemons."""
        log = self.root / f"{prog}-{len(self.spawned) + 1}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # our own programs, no shell
                [*program(prog), *args],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        spawned = Spawned(prog, process, log)
        self.spawned.append(spawned)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() >= deadline:
                spawned.stop()
                why = "exited" if process.returncode is not None else f"not ready in {timeout:g} s"
                raise SiteError(f"{prog} {why}:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
        return spawned

    # -- cleaning up -------------------------------------------------------------------
    def close(self) -> None:
        """Stop every daemon (newest first), kill stragglers naming the root, remove the
        root if this site made it.  Safe to call twice."""
        while self.daemons:
            self._stop(self.daemons.pop())
        while self.spawned:
            self.spawned.pop().stop()
        _wait_gone(processes_naming(str(self.root)))
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Site:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_gone(pids: Sequence[int]) -> None:
    """Wait for *pids* to exit; SIGTERM after `STOP_GRACE`, SIGKILL after as long again."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.05)


class Spawned:
    """A foreground program a `Site` runs in the background (`Site.spawn`)."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `STOP_GRACE`; waits until it is gone."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

