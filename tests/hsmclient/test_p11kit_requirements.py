"""Without p11-kit-client.so or pkcs11-tool the p11-kit tests fail, saying how to get them
(never a silent skip); with PED_REQUIRE_P11=1 (CI) they fail as a broken requirement."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hsmclient import conftest


def test_missing_tools_fail_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "P11KIT_CLIENT", Path("/nonexistent/p11-kit-client.so"))
    monkeypatch.delenv("PED_REQUIRE_P11", raising=False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install p11-kit-modules opensc"):
        conftest.require_p11_tools()


def test_missing_tools_with_the_requirement_set_fail_as_such(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "P11KIT_CLIENT", Path("/nonexistent/p11-kit-client.so"))
    monkeypatch.setenv("PED_REQUIRE_P11", "1")
    with pytest.raises(pytest.fail.Exception, match="PED_REQUIRE_P11=1 but"):
        conftest.require_p11_tools()


def test_the_tools_are_here() -> None:
    module, tool = conftest.require_p11_tools()
    assert module.exists() and Path(tool).exists()
