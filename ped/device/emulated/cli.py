"""``pedemu``: an emulated PED as its own process.

    pedemu --keyring DIR --socket PATH [--operator tty|auto|script:FILE|control:PATH]
           [--pin-file F]
           [--log-level debug|info|warning|error] [--log-format text|json] | --version

listens on a Unix socket; pedserver (or a local HSM) reaches it as ``socket:PATH``.  In
a terminal with ``--operator tty`` it is a PED on your desk.  The ``emulated:DIR``
driver starts it with ``--fd N`` instead: one end of a socket pair, served until the
driver closes it, so the driver's process never holds a key.  Ctrl-C or SIGTERM ends
it cleanly (status 0); a failed script ends it with status 1; bad arguments with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket as _socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import trio

from keys import Keyring
from keys import errors as kerr
from ped.cliutil import add_version_option
from ped.daemon.logs import LOG_FORMATS, make_formatter
from ped.daemon.sockets import SocketPath, clear_stale_socket
from ped.device.emulated.auto import AutoOperator, AutoOptions
from ped.device.emulated.control import ControlOperator, ControlSocketError
from ped.device.emulated.engine import DEFAULT_KEY_TIMEOUT
from ped.device.emulated.panel import Panel
from ped.device.emulated.script import ScriptError, ScriptOperator, load_script
from ped.device.emulated.server import EmulatedPed
from ped.device.emulated.tty import TtyOperator
from ped.device.messages import DeviceErrorCode, DeviceErrorMessage, encode_message
from ped.errors import PedError

log = logging.getLogger("pedemu")


def _yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word in ("yes", "y", "true", "1", "on"):
        return True
    if word in ("no", "n", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not yes or no")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError("a key timeout is 1 to 86400 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedemu",
        description="An emulated PIN Entry Device (PED) reading key images from a directory.",
        epilog="Example: pedemu --keyring ~/pedkeys --socket /tmp/ped.sock --operator tty",
    )
    parser.add_argument(
        "--keyring",
        required=True,
        metavar="DIR",
        help="directory of key images (*.pedkey): the keys at hand",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--socket", metavar="PATH", help="listen on this Unix socket (pedserver uses socket:PATH)"
    )
    where.add_argument(
        "--fd",
        type=int,
        metavar="N",
        help="serve an inherited socket (used by the emulated: driver)",
    )
    parser.add_argument(
        "--operator",
        default="auto",
        metavar="tty|auto|script:FILE|control:PATH",
        help="who works the PED: tty (you, in this terminal), auto "
        "(answers from the keyring, default), script:FILE (TOML steps) or control:PATH "
        "(instructions of a conformance adapter on a Unix socket: pedconform ped)",
    )
    parser.add_argument(
        "--pin-file", metavar="F", help="PED PINs for the auto operator: 'label = digits' lines"
    )
    parser.add_argument(
        "--key-timeout",
        type=_seconds,
        default=DEFAULT_KEY_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for a key or answer (default {DEFAULT_KEY_TIMEOUT:g})",
    )
    parser.add_argument("--serial", default="EMU-0001", help="serial number the PED reports")
    parser.add_argument(
        "--mode",
        choices=("remote", "local"),
        default="remote",
        help="remote: always ask for the orange key (default); local: a "
        "cabled HSM may connect without one, after YES on the PED",
    )
    auto = parser.add_argument_group("auto operator answers for imprints")
    auto.add_argument("--auto-m", type=int, default=1, metavar="M", help="M of N: M (default 1)")
    auto.add_argument("--auto-n", type=int, default=1, metavar="N", help="M of N: N (default 1)")
    auto.add_argument(
        "--auto-pin",
        type=_yes_no,
        default=False,
        metavar="yes|no",
        help="set a PED PIN from --pin-file (default no)",
    )
    auto.add_argument(
        "--auto-duplicates",
        type=int,
        default=0,
        metavar="D",
        help="copies of each new key (default 0)",
    )
    auto.add_argument(
        "--auto-reuse",
        type=_yes_no,
        default=False,
        metavar="yes|no",
        help="answer 'reuse an existing keyset?' (default no)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="log lines as text (default) or one JSON object per line",
    )
    add_version_option(parser)
    return parser


class UsageError(PedError):
    pass


def make_operator(
    args: argparse.Namespace, panel: Panel, *, stdin_fd: int = 0, stdout: TextIO | None = None
) -> AutoOperator | ScriptOperator | TtyOperator | ControlOperator:
    spec = args.operator
    if spec == "auto":
        try:
            options = AutoOptions(
                m=args.auto_m,
                n=args.auto_n,
                pin=args.auto_pin,
                duplicates=args.auto_duplicates,
                reuse=args.auto_reuse,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return AutoOperator(panel, args.keyring, pin_file=args.pin_file, options=options)
    if spec.startswith("script:"):
        return ScriptOperator(panel, load_script(spec[len("script:") :], args.keyring))
    if spec.startswith("control:") and spec != "control:":
        return ControlOperator(
            panel, args.keyring, spec[len("control:") :], pin_file=args.pin_file
        )
    if spec == "tty":
        if args.fd is not None:
            raise UsageError("--operator tty needs a terminal; use it with --socket")
        return TtyOperator(panel, args.keyring, stdin_fd=stdin_fd, stdout=stdout)
    raise UsageError(
        f"unknown operator {spec!r}; use tty, auto, script:FILE or control:PATH"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tty_mode = args.operator == "tty"
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(make_formatter("json"))
    else:
        handler.setFormatter(logging.Formatter("pedemu: %(message)s"))
    logging.basicConfig(
        level=logging.WARNING if tty_mode else getattr(logging, args.log_level.upper()),
        handlers=[handler],
    )
    # The format uses none of these: spare each record the look-ups (a getpid per line).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if args.fd is not None:
        # The driver's process handles Ctrl-C; we end when it closes our socket.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        Keyring(args.keyring).paths()
    except kerr.KeyImageError as exc:
        return _startup_error(args, f"keyring: {exc}")
    try:
        return trio.run(_run, args)
    except (UsageError, ScriptError, ControlSocketError, kerr.KeyImageError) as exc:
        return _startup_error(args, str(exc))


def _startup_error(args: argparse.Namespace, text: str) -> int:
    print(f"pedemu: {text}", file=sys.stderr)
    if args.fd is not None:
        # Tell the driver why, so its open() can say more than "device gone".
        with contextlib.suppress(OSError):
            sock = _socket.socket(fileno=args.fd)
            sock.sendall(encode_message(DeviceErrorMessage(DeviceErrorCode.INTERNAL, text[:250])))
            sock.close()
    return 2


async def _run(args: argparse.Namespace) -> int:
    ped = EmulatedPed(
        args.keyring, serial=args.serial, mode=args.mode, key_timeout=args.key_timeout
    )
    with _terminal(args.operator == "tty"):
        operator = make_operator(args, ped.panel)
        # Everything that can fail at start-up fails here, before any task runs.
        listener = await _open_listener(args.socket) if args.socket is not None else None
        status = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, nursery.cancel_scope)

            async def run_operator() -> None:
                nonlocal status
                try:
                    await operator.run()
                except ScriptError as exc:
                    log.error("%s", exc)
                    status = 1
                    nursery.cancel_scope.cancel()

            nursery.start_soon(run_operator)
            if args.fd is not None:
                sock = trio.socket.from_stdlib_socket(_socket.socket(fileno=args.fd))
                await ped.serve(trio.SocketStream(sock))
                nursery.cancel_scope.cancel()
            else:
                assert listener is not None
                await _listen(ped, listener, args.socket, nursery)
        return status


async def _signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("stopping on %s", signal.Signals(signum).name)
            scope.cancel()
            return


async def _open_listener(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    _remove_stale(path)
    # Bind under a temporary name and rename once listening: the path appears only when
    # connections are accepted (whoever waits for it never sees "connection refused").
    temp = f"{path}.{os.getpid()}.tmp"
    old_umask = os.umask(0o177)  # the socket reaches a PED full of keys: owner only
    try:
        await sock.bind(temp)
        sock.listen(4)
        os.rename(temp, path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise UsageError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    return trio.SocketListener(sock)


async def _listen(
    ped: EmulatedPed, listener: trio.SocketListener, path: str, nursery: trio.Nursery
) -> None:
    log.info("emulated PED %s listening on %s", ped.info.serial, path)
    try:
        while True:
            stream = await listener.accept()
            nursery.start_soon(_serve_one, ped, stream)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        with contextlib.suppress(OSError):
            os.unlink(path)


#: A new host waits this long for the previous one's connection to wind down (a
#: restarting pedserver reconnects at once) before it is refused as busy.
TAKEOVER_WAIT = 2.0


async def _serve_one(ped: EmulatedPed, stream: trio.SocketStream) -> None:
    acquired = False
    with trio.move_on_after(TAKEOVER_WAIT):
        await ped.host_lock.acquire()
        acquired = True
    if not acquired:
        await _refuse_busy(stream)
        return
    try:
        await ped.serve(stream)
    finally:
        ped.host_lock.release()


async def _refuse_busy(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(
            encode_message(
                DeviceErrorMessage(DeviceErrorCode.BUSY, "this PED already serves another host")
            )
        )
    await stream.aclose()


def _remove_stale(path: str) -> None:
    """Remove a socket file left by a pedemu that died, never a live one or another file."""
    try:
        found = clear_stale_socket(Path(path))
    except OSError as exc:
        raise UsageError(f"cannot check {path}: {exc.strerror}") from None
    if found is SocketPath.NOT_A_SOCKET:
        raise UsageError(f"{path} exists and is not a socket; choose another path")
    if found is SocketPath.LIVE:
        raise UsageError(f"another PED is already listening on {path}")


@contextlib.contextmanager
def _terminal(raw: bool) -> Iterator[None]:
    """Put the terminal in cbreak mode for the tty operator; always restore it."""
    if not raw or not os.isatty(0):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(0)
    try:
        tty.setcbreak(0)
        new = termios.tcgetattr(0)
        new[3] &= ~termios.ECHO
        termios.tcsetattr(0, termios.TCSADRAIN, new)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
        sys.stdout.write("\x1b[?25h\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
