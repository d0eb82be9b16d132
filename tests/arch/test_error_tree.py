"""The error tree: one root, one name per public exception or enum.

Every exception of the product derives from `ped.errors.PedError`, except those of
``keys``, which stands alone by contract (it imports nothing of ours) and roots its own
tree at `keys.errors.KeyImageError`; the emulated PED translates those into its operation
errors.  No two public exceptions or enums share a name anywhere in the product: a name
says which error it is without its module (``except WrongColor`` must not depend on an
import line).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
from collections import defaultdict
from types import ModuleType

import pytest

from keys.errors import KeyImageError
from ped.errors import PedError

PACKAGES = ("ped", "keys", "pedserver", "pedclient", "hsm", "pedtools")


def _modules() -> list[ModuleType]:
    modules = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.rpartition(".")[2] == "__main__":
                continue  # running a program is not importing it
            modules.append(importlib.import_module(info.name))
    return modules


def _defined_classes() -> list[type]:
    """Every class defined (not merely imported) at the top level of a product module."""
    found = []
    for module in _modules():
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


CLASSES = _defined_classes()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_walk_sees_the_tree() -> None:
    names = {_qualname(c) for c in CLASSES}
    assert {"ped.errors.PedError", "keys.errors.KeyImageError", "hsm.errors.HsmError"} <= names


def test_no_two_public_exceptions_or_enums_share_a_name() -> None:
    by_name: dict[str, set[str]] = defaultdict(set)
    for cls in CLASSES:
        if cls.__name__.startswith("_"):
            continue
        if issubclass(cls, BaseException | enum.Enum):
            by_name[cls.__name__].add(_qualname(cls))
    clashes = {name: sorted(where) for name, where in by_name.items() if len(where) > 1}
    assert not clashes, f"public names defined more than once (rename one): {clashes}"


@pytest.mark.parametrize(
    "cls",
    [c for c in CLASSES if issubclass(c, BaseException)],
    ids=_qualname,
)
def test_every_exception_is_under_one_root(cls: type) -> None:
    if cls.__module__.partition(".")[0] == "keys":
        # keys stands alone: its own root (its command line's private refusal included).
        assert issubclass(cls, KeyImageError) or cls.__name__.startswith("_"), cls
        assert not issubclass(cls, PedError)
        return
    assert issubclass(cls, PedError), f"{_qualname(cls)} must derive from ped.errors.PedError"


#: A subclass that says otherwise than its base, each with why it is left so.
KNOWN_CONTRADICTIONS = {
    # A handshake that timed out may succeed later; every other TLS handshake failure
    # needs a change first.  Splitting it out of TlsHandshakeFailed would change what an
    # ``except TlsHandshakeFailed`` catches.
    "ped.tls.errors.HandshakeTimeout",
}


def test_no_subclass_contradicts_a_retriable_base() -> None:
    """``retriable`` set on a base (``TransportError``: always) is a promise to catchers.

    (``close_code`` is not: a subclass may name a more precise code, as `LinkClosed`.)
    """
    broken = []
    for cls in CLASSES:
        if not issubclass(cls, BaseException) or _qualname(cls) in KNOWN_CONTRADICTIONS:
            continue
        own = cls.__dict__.get("retriable")
        if own is None:
            continue
        for base in cls.__mro__[1:]:
            promised = base.__dict__.get("retriable")
            if promised is not None:
                if promised != own:
                    broken.append(f"{_qualname(cls)}: retriable={own} under {base.__name__}")
                break
    assert not broken, broken
