"""Background start with a readiness pipe, pid files, signals: real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio

from ped.daemon.pidfile import PidFile
from ped.daemon.process import DaemonStartError, start_background
from ped.daemon.signals import watch_stop_signals


def script(home, body: str):
    path = home / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_ready_daemon(home):
    argv = script(home, """
        import time
        from ped.daemon.process import notify_ready
        notify_ready("listening on 1.2.3.4:1503")
        time.sleep(30)
    """)
    proc = start_background(argv, log_path=home / "d.log")
    try:
        assert proc.poll() is None  # returned because it is ready, and it runs on
        assert os.getsid(proc.pid) == proc.pid  # its own session: survives the terminal
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_failing_daemon_reports_its_reason(home):
    argv = script(home, """
        import sys
        from ped.daemon.process import notify_failed
        notify_failed("cannot listen on 0.0.0.0:1503: Address already in use")
        sys.exit(1)
    """)
    with pytest.raises(DaemonStartError, match="Address already in use"):
        start_background(argv)


def test_daemon_dying_silently_points_at_the_log(home):
    argv = script(home, """
        import sys
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(7)
    """)
    with pytest.raises(DaemonStartError, match=r"exited \(code 7\).*d\.log"):
        start_background(argv, log_path=home / "d.log")
    assert "something broke" in (home / "d.log").read_text()


def test_slow_daemon_is_stopped(home):
    argv = script(home, "import time; time.sleep(60)\n")
    with pytest.raises(DaemonStartError, match="did not report ready"):
        start_background(argv, timeout=0.5)


def test_pid_file(home):
    pidfile = PidFile(home / "d.pid")
    assert pidfile.running_pid() is None
    pidfile.write()
    assert pidfile.running_pid() == os.getpid()
    assert (home / "d.pid").stat().st_mode & 0o777 == 0o600
    with pytest.raises(DaemonStartError, match="another instance"):
        PidFile(home / "d.pid").write()  # the lock is taken, even by this very process
    pidfile.remove()
    assert not (home / "d.pid").exists()
    assert PidFile(home / "d.pid").running_pid() is None


def _holder(path) -> subprocess.Popen[bytes]:
    """A process that takes the pid file's lock and says so on stdout."""
    code = (
        "import sys, time\n"
        "from ped.daemon.pidfile import PidFile\n"
        f"PidFile({str(path)!r}).write()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    return proc


def test_a_daemon_holding_the_lock_blocks_a_second_one(home):
    holder = _holder(home / "d.pid")
    try:
        assert PidFile(home / "d.pid").running_pid() == holder.pid
        with pytest.raises(DaemonStartError, match=f"pid {holder.pid}"):
            PidFile(home / "d.pid").write()
    finally:
        holder.kill()
        holder.wait()
    # kill -9 left the file behind; the lock went with the process
    assert (home / "d.pid").exists()
    assert PidFile(home / "d.pid").running_pid() is None
    PidFile(home / "d.pid").write()


def test_a_leftover_naming_a_live_process_never_blocks(home):
    """A reused pid: the file names a live process that is not a daemon."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (home / "d.pid").write_text(f"{other.pid}\n")
        assert PidFile(home / "d.pid").running_pid() is None
        pidfile = PidFile(home / "d.pid")
        pidfile.write()
        assert PidFile(home / "d.pid").read() == os.getpid()
        pidfile.remove()
    finally:
        other.kill()
        other.wait()


def test_a_leftover_naming_a_zombie_never_blocks(home):
    holder = _holder(home / "d.pid")
    holder.kill()
    os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
    try:
        assert PidFile(home / "d.pid").read() == holder.pid
        assert PidFile(home / "d.pid").running_pid() is None
        pidfile = PidFile(home / "d.pid")
        pidfile.write()
        pidfile.remove()
    finally:
        holder.wait()


def test_removing_a_pid_file_we_do_not_hold_leaves_it(home):
    holder = _holder(home / "d.pid")
    try:
        PidFile(home / "d.pid").remove()
        assert PidFile(home / "d.pid").running_pid() == holder.pid
    finally:
        holder.kill()
        holder.wait()


async def test_sigterm_calls_the_stop_callback():
    seen = []
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_stop_signals, seen.append)
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(10):
            while not seen:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert seen == [signal.SIGTERM]


def test_started_daemon_keeps_its_start_up_objects_out_of_collections(home):
    # start_service freezes what the daemon built to start (gc.freeze): a full
    # collection under load then walks only what came later.  In a child process, so
    # that the test process's own collector is left alone.
    argv = script(home, """
        import gc
        import trio
        from ped.daemon.startup import start_service

        class Service:
            async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED):
                task_status.started("ready")
                await trio.sleep_forever()

            def request_stop(self, reason):
                pass

        async def main():
            async with trio.open_nursery() as nursery:
                before = gc.get_freeze_count()
                assert await start_service(nursery, Service()) == "ready"
                print(before, gc.get_freeze_count())
                nursery.cancel_scope.cancel()

        trio.run(main)
    """)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 1000  # the modules, the service, the nursery...
