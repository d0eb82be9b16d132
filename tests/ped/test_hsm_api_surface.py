"""ped.hsm_api as an integrator sees it: one import, every raised type exported, documented.

The session core stays on its layers (transport, channel, ops); the package adds the
transports.  docs/integrating.md names everything `__all__` lists, with the defaults the
code has.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import ped.ops
import ped.ops.errors
from ped import hsm_api
from ped.errors import PedError
from ped.hsm_api import limits
from ped.ops.hsm_side import HsmSideSession

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "integrating.md").read_text()

#: Every module whose raises reach an HSM calling ped.hsm_api (the HSM side of each layer).
HSM_PATH_MODULES = [
    "ped.hsm_api.session",
    "ped.hsm_api.limits",
    "ped.ops.hsm_side",
    "ped.ops.errors",
    "ped.channel.handshake",
    "ped.channel.secure",
    "ped.link.hsm_side",
    "ped.link.errors",
    "ped.device.host",
    "ped.device.uri",
    "ped.transport",
]
#: The catch-alls an integrator is told about; their many subclasses need no export.
CATCH_ALLS = (hsm_api.LocalProtocolError, hsm_api.RemoteProtocolError)


def test_every_name_in_all_is_there_once() -> None:
    assert len(set(hsm_api.__all__)) == len(hsm_api.__all__)
    for name in hsm_api.__all__:
        assert getattr(hsm_api, name) is not None


def _raised_error_classes(module_name: str) -> set[type[BaseException]]:
    """PedError classes a module raises or hands out by name (``raise X``, ``X(...)``)."""
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    found: set[type[BaseException]] = set()
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name):
            name = node.exc.id
        value = getattr(module, name, None) if name else None
        if isinstance(value, type) and issubclass(value, PedError):
            found.add(value)
    return found


@pytest.mark.parametrize("module_name", HSM_PATH_MODULES)
def test_every_error_on_the_hsm_path_is_exported(module_name: str) -> None:
    exported = {getattr(hsm_api, name) for name in hsm_api.__all__}
    missing = {
        cls.__name__
        for cls in _raised_error_classes(module_name)
        if cls not in exported and not issubclass(cls, CATCH_ALLS)
    }
    assert not missing, f"{module_name} raises {sorted(missing)}, which ped.hsm_api lacks"


def test_every_operation_error_is_exported() -> None:
    kinds = {
        cls
        for cls in vars(ped.ops.errors).values()
        if isinstance(cls, type) and issubclass(cls, ped.ops.errors.OperationError)
    }
    assert kinds <= {getattr(hsm_api, name) for name in hsm_api.__all__}


def test_no_cancelled_alias_next_to_trio_cancelled() -> None:
    for module in (hsm_api, ped.ops, ped.ops.errors):
        assert not hasattr(module, "Cancelled"), module.__name__
    assert hsm_api.OperationCancelled.__name__ == "OperationCancelled"


def test_the_public_api_cannot_fix_the_ephemeral_key() -> None:
    assert "ephemeral_private" not in inspect.signature(hsm_api.open_ped_session).parameters
    # The sans-IO object keeps the hook, for the test vectors.
    assert "ephemeral_private" in inspect.signature(HsmSideSession).parameters


@pytest.mark.parametrize(
    "module_name", ["ped.hsm_api.session", "ped.hsm_api.limits", "ped.hsm_api.results"]
)
def test_the_session_core_knows_no_transport_implementation(module_name: str) -> None:
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    allowed = (
        "__future__",
        "attrs",
        "collections",
        "contextlib",
        "math",
        "types",
        "typing",
        "trio",
        "keys.colors",
        "ped.errors",
        "ped.transport",
        "ped.channel",
        "ped.ops",
        "ped.wire",
        "ped.hsm_api.limits",
        "ped.hsm_api.results",
    )
    strays = {m for m in imported if not any(m == a or m.startswith(a + ".") for a in allowed)}
    assert not strays, f"{module_name} imports {sorted(strays)}"


def test_the_guide_names_everything_the_api_exports() -> None:
    missing = [name for name in hsm_api.__all__ if not re.search(rf"\b{name}\b", DOC)]
    assert not missing, f"docs/integrating.md does not mention {missing}"


def _documented_parameters() -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", DOC, flags=re.M))


@pytest.mark.parametrize(
    "function",
    [
        hsm_api.open_ped_session,
        hsm_api.connect_via_pedclient,
        hsm_api.PedSession.read_secret,
        hsm_api.PedSession.imprint,
        hsm_api.PedSession.show_message,
    ],
    ids=lambda f: f.__qualname__,
)
def test_the_guide_documents_every_parameter(function: object) -> None:
    assert callable(function)
    names = [n for n in inspect.signature(function).parameters if n != "self"]
    in_tables = _documented_parameters()
    for name in names:
        assert name in in_tables or re.search(rf"\b{name}\b", DOC), f"{name} is undocumented"


@pytest.mark.parametrize(
    ("parameter", "constant"),
    [
        ("key_timeout", "DEFAULT_KEY_TIMEOUT"),
        ("op_timeout", "DEFAULT_OP_TIMEOUT"),
        ("busy_wait", "DEFAULT_BUSY_WAIT"),
        ("cancel_grace", "DEFAULT_CANCEL_GRACE"),
    ],
)
def test_the_guide_gives_the_defaults_the_code_has(parameter: str, constant: str) -> None:
    default = inspect.signature(hsm_api.open_ped_session).parameters[parameter].default
    assert default == getattr(limits, constant) == getattr(hsm_api, constant)
    row = re.search(rf"^\| `{parameter}` \| seconds \| `{constant}` \((\S+)\) \|", DOC, re.M)
    assert row is not None, f"no row for {parameter} in the open_ped_session table"
    assert float(row.group(1)) == default
    assert f"`MAX_KEY_TIMEOUT` ({limits.MAX_KEY_TIMEOUT:g}," in DOC
