"""PedRouter's choices and messages that need no PED."""

from __future__ import annotations

import pytest

from hsm.apiport import describe_notice, map_error
from hsm.errors import PedUnavailable
from hsm.pedlink import PedRouter
from ped.link.errors import ConnectRejected, ConnectUnavailable
from ped.link.messages import ConnectCode
from ped.ops.messages import Notice, NoticeKind


def _router(local: str | None = None, pedclient: str | None = None) -> PedRouter:
    return PedRouter(
        local_uri=local,
        pedclient_socket=pedclient,
        serial="1",
        timeouts=lambda: {"rped": 1800, "pedk": 200, "pedo": 920},
        on_drop=lambda loss: None,
    )


def test_notices_become_shell_lines() -> None:
    assert describe_notice(Notice(1, NoticeKind.INSERT_KEY, 2, 3)) == "PED: waiting for key 2 of 3."
    assert describe_notice(Notice(1, NoticeKind.ENTER_PIN)) == "PED: waiting for the PED PIN."
    info = describe_notice(Notice(1, NoticeKind.INFO, text="hello\x1b[2J"))
    assert info.startswith("PED: hello") and "\x1b" not in info
    assert describe_notice(Notice(1, NoticeKind.ATTEND)) == ""


def test_notices_reach_the_command_that_uses_the_ped() -> None:
    router = _router()
    seen: list[str] = []
    router._on_notice(Notice(1, NoticeKind.KEY_ACCEPTED, 1, 2))  # nobody listening: dropped
    router._notify = seen.append
    router._on_notice(Notice(1, NoticeKind.KEY_ACCEPTED, 1, 2))
    assert seen == ["PED: key 1 of 2 read."]


async def test_no_ped_configured_says_how_to_get_one() -> None:
    router = _router()
    assert router.status() == {
        "mode": "none",
        "local": None,
        "address": None,
        "connected": False,
        "pedclient": None,
        "idle_left": None,
        "since": None,
        "lost": None,
    }
    with pytest.raises(PedUnavailable, match="--local-ped URI, or connect a remote PED"):
        async with router.session():
            pass
    with pytest.raises(PedUnavailable, match="cabled to the HSM"):
        async with router.session(local_only=True):
            pass


async def test_a_bad_device_uri_is_a_clear_error() -> None:
    router = _router(local="floppy:/dev/fd0")
    with pytest.raises(PedUnavailable, match="cannot open the local PED floppy:/dev/fd0"):
        async with router.session():
            pass


async def test_connect_needs_pedclient() -> None:
    router = _router(local="usb")
    router._nursery = object()  # type: ignore[assignment]  # as if running
    with pytest.raises(PedUnavailable, match="--pedclient PATH"):
        await router.connect("127.0.0.1", 1503, bytearray(32), lambda text: None)


def test_notices_name_the_colour_and_the_key_timeout() -> None:
    from keys.colors import Color

    line = describe_notice(Notice(1, NoticeKind.INSERT_KEY, 2, 3), Color.BLUE, 200)
    assert line == "PED: waiting for the blue key 2 of 3 (pedk 200 s)."


def test_a_failed_rpv_proof_names_both_causes_and_never_advises_a_new_rpv() -> None:
    from hsm.apiport import map_error
    from ped.channel.errors import RpvMismatch

    text = str(map_error(RpvMismatch("no"), "remote PED 10.0.0.5:1503"))
    assert "does not hold this HSM's Remote PED Vector (RPV)" in text
    assert "present the right orange key" in text
    assert "altered or replayed" in text and "handshakes you did not start" in text
    assert "run `hsm ped vector init`" not in text and "Do not re-initialise the RPV" in text


def test_a_rejected_connect_is_not_advised_to_retry():
    rejected = ConnectRejected("what answered is not a pedserver", ConnectCode.PROTOCOL_ERROR)
    err = map_error(rejected, "A:P")
    assert "(not counted)" in str(err) and "retry" not in str(err)
    err = map_error(ConnectUnavailable("connection refused", ConnectCode.REFUSED), "A:P")
    assert "(not counted; retry)" in str(err)
