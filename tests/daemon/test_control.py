"""The control socket: JSON lines, progress, errors, permissions, bounds."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading

import pytest
import trio

from ped.daemon.control import (
    ControlError,
    ControlUnavailable,
    control_request,
    control_request_sync,
    serve_control,
)


async def handler(command, args, progress):
    if command == "show":
        await progress.send("looking")
        await progress.send({"step": 2})
        return {"links": [], "echo": args}
    if command == "boom":
        raise RuntimeError("internal detail that must not leak")
    raise ControlError(f"unknown command {command!r}", "bad-request")


async def test_request_progress_result_and_errors(home):
    path = home / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        seen = []
        result = await control_request(path, "show", {"a": 1}, on_progress=seen.append)
        assert result == {"links": [], "echo": {"a": 1}}
        assert seen == ["looking", {"step": 2}]
        with pytest.raises(ControlError) as error:
            await control_request(path, "nope")
        assert error.value.code == "bad-request"
        with pytest.raises(ControlError) as error:
            await control_request(path, "boom")
        assert error.value.code == "internal" and "detail" not in str(error.value)
        sync = await trio.to_thread.run_sync(lambda: control_request_sync(path, "show"))
        assert sync["links"] == []
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_garbage_requests_get_an_error_and_do_not_stop_the_server(home):
    path = home / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        for junk in (b"not json\n", b"[1,2]\n", b'{"command": 5}\n', b"\xff\xfe\n"):
            stream = await trio.open_unix_socket(str(path))
            await stream.send_all(junk)
            answer = json.loads(await stream.receive_some(65536))
            assert answer["ok"] is False and answer["code"] == "bad-request"
            await stream.aclose()
        stream = await trio.open_unix_socket(str(path))
        await stream.send_all(b"x" * 300_000)  # no newline, over the line limit
        answer = json.loads(await stream.receive_some(65536))
        assert answer["code"] == "bad-request"
        await stream.aclose()
        assert (await control_request(path, "show"))["links"] == []
        nursery.cancel_scope.cancel()


async def test_stale_socket_is_replaced_and_a_live_one_refused(home):
    path = home / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a leftover from a crash
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        with pytest.raises(ControlError, match="already answers"):
            await serve_control(path, handler)
        nursery.cancel_scope.cancel()
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="not a socket"):
        await serve_control(path, handler)


def test_nothing_running(home):
    with pytest.raises(ControlUnavailable, match="pedserver is not running") as error:
        control_request_sync(home / "absent.sock", "show", what="pedserver")
    assert error.value.retriable


def _reset_after_progress(listener: socket.socket) -> None:
    """A daemon killed mid-answer: one progress line, then gone with the request unread
    (a Unix socket closed with unread data resets its peer)."""
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b'{"progress": "Please attend to the PED."}\n')
        conn.recv(1, socket.MSG_PEEK)  # the request is in, and stays unread


def test_a_daemon_gone_mid_answer_is_unavailable_not_a_reset(home):
    path = home / "reset.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    seen = []
    with listener:
        server = threading.Thread(target=_reset_after_progress, args=(listener,))
        server.start()
        try:
            with pytest.raises(ControlUnavailable, match="pedhsm broke off its answer") as error:
                control_request_sync(path, "show", what="pedhsm", on_progress=seen.append)
        finally:
            server.join()
    assert seen == ["Please attend to the PED."]
    assert error.value.code == "unavailable" and error.value.retriable
    assert "start it again" in error.value.message
    assert error.value.__cause__ is None and error.value.__suppress_context__


async def test_silent_client_is_dropped(home, autojump_clock):
    path = home / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, handler)
        stream = await trio.open_unix_socket(str(path))
        with trio.fail_after(60):
            assert await stream.receive_some(100) == b""  # closed after REQUEST_TIMEOUT
        nursery.cancel_scope.cancel()
