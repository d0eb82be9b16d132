"""systemd's notification protocol, spoken without a library, on real datagram sockets."""

from __future__ import annotations

import os
import socket

from ped.daemon import sdnotify
from ped.daemon.process import notify_failed, notify_ready


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    return sock


def test_ready_with_status_on_a_path_socket(home, monkeypatch):
    with receiver(str(home / "notify.sock")) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(home / "notify.sock"))
        assert sdnotify.notify_ready("listening on 127.0.0.1:1503")
        assert sock.recv(4096) == b"READY=1\nSTATUS=listening on 127.0.0.1:1503"


def test_abstract_socket(monkeypatch):
    name = f"remote-ped-test-{os.getpid()}"
    with receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify_stopping("mode stop")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping: mode stop"


def test_a_newline_in_a_status_cannot_add_a_field(home, monkeypatch):
    with receiver(str(home / "n.sock")) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(home / "n.sock"))
        assert sdnotify.notify_status("peer said\nREADY=1")
        assert sock.recv(4096) == b"STATUS=peer said READY=1"


def test_without_systemd_nothing_is_sent(home, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify_ready("x")
    monkeypatch.setenv("NOTIFY_SOCKET", str(home / "nobody-listens.sock"))
    assert not sdnotify.notify_ready("x")  # systemd gone: no error, nothing to do
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not sdnotify.notify_ready("x")


def test_the_readiness_calls_tell_systemd_too(home, monkeypatch):
    """notify_ready / notify_failed (the background start's pipe) also speak to systemd."""
    with receiver(str(home / "notify.sock")) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(home / "notify.sock"))
        monkeypatch.delenv("REMOTE_PED_READY_FD", raising=False)
        notify_failed("cannot listen on 0.0.0.0:1503: Address already in use")
        assert sock.recv(4096) == (
            b"STATUS=could not start: cannot listen on 0.0.0.0:1503: Address already in use"
        )
        notify_ready("serial 1234")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serial 1234"
