"""Daemon config files: flat TOML, a typed schema, and one precedence rule.

    command line  >  config file  >  built-in defaults

A daemon declares its keys once (`ConfigSchema` of `ConfigKey`s).  `load_config` reads
a file with the standard library's ``tomllib``, refuses unknown keys and wrong types
with the file and key named, and gives a complete mapping (defaults filled in).
`ConfigSchema.merge` lays command-line values (those the user actually gave, i.e. not
None) over it.  `write_config` writes a flat ``key = value`` file atomically (0600),
which is all ``mode config --create`` and ``--set`` need; no TOML library is required.
"""

from __future__ import annotations

import math
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ped.errors import PedError

Value = int | float | str | bool


class ConfigError(PedError):
    """A config file or a config value is not acceptable; the message says which and why."""


@attrs.frozen
class ConfigKey:
    """One setting: its name, type, default, one-line help and an optional range check."""

    name: str
    type: type
    default: Value
    help: str = ""
    check: Callable[[Any], str | None] | None = None  # returns an error text or None

    def convert(self, value: Any, where: str) -> Value:
        """Check a value read from TOML (or converted from text) against this key."""
        want = self.type
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(
                f"{where}: {self.name} must be {_type_word(want)}, not {type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {self.name} must be a finite number")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{where}: {self.name} {problem}")
        checked: Value = value  # one of Value's types: isinstance above
        return checked

    def from_text(self, text: str, where: str = "command line") -> Value:
        """Parse the text of ``mode config --set KEY VALUE``."""
        try:
            if self.type is bool:
                lowered = text.strip().lower()
                if lowered not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError
                value: Value = lowered in ("true", "yes", "1", "on")
            elif self.type is int:
                value = int(text, 10)
            elif self.type is float:
                value = float(text)
            else:
                value = text
        except ValueError:
            raise ConfigError(
                f"{where}: {self.name} must be {_type_word(self.type)}, got {text!r}"
            ) from None
        return self.convert(value, where)


def _type_word(t: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[t]


def in_range(low: float, high: float) -> Callable[[Any], str | None]:
    """A `ConfigKey.check` for numbers between *low* and *high* inclusive."""

    def check(value: Any) -> str | None:
        if not low <= value <= high:
            return f"must be between {low:g} and {high:g}, got {value:g}"
        return None

    return check


#: The ``log_level`` values every daemon accepts (config key and ``--log-level``).
LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level_check(value: str) -> str | None:
    """A `ConfigKey.check` for a log level."""
    if value.lower() not in LOG_LEVELS:
        return "must be debug, info, warning or error"
    return None


def log_level_key() -> ConfigKey:
    """The ``log_level`` setting, the same in every daemon."""
    return ConfigKey("log_level", str, "info", "debug, info, warning or error", log_level_check)


def settings_fields(cls: type, values: Mapping[str, object]) -> dict[str, Any]:
    """The entries of *values* that are fields of the attrs class *cls* (its keyword
    arguments): how a daemon's ``Settings.from_mapping`` picks its settings."""
    return {f.name: values[f.name] for f in attrs.fields(cls) if f.name in values}


def _compact(name: str) -> str:
    """*name* without case, dashes or underscores: how Luna spells an option."""
    return name.replace("-", "").replace("_", "").lower()


class ConfigSchema:
    """The keys one daemon understands."""

    def __init__(self, keys: Iterable[ConfigKey]) -> None:
        self.keys: dict[str, ConfigKey] = {k.name: k for k in keys}

    def defaults(self) -> dict[str, Value]:
        return {name: key.default for name, key in self.keys.items()}

    def key(self, name: str) -> ConfigKey:
        """The key *name* names: ``idle_timeout``, ``idle-timeout`` or Luna's
        ``idletimeout`` (the command line's spellings; a file must use the first)."""
        found = self.keys.get(name.replace("-", "_"))
        if found is None:
            compact = _compact(name)
            found = next((k for n, k in self.keys.items() if _compact(n) == compact), None)
        if found is None:
            raise ConfigError(
                f"unknown config key {name!r}; known keys: {', '.join(sorted(self.keys))}"
            )
        return found

    def validate(self, raw: Mapping[str, Any], where: str) -> dict[str, Value]:
        """Check a mapping read from a file; unknown keys are errors (typos must not pass)."""
        out: dict[str, Value] = {}
        for name, value in raw.items():
            if isinstance(value, dict):
                raise ConfigError(f"{where}: [{name}] tables are not used; write flat keys")
            if name.replace("-", "_") not in self.keys:
                raise ConfigError(
                    f"{where}: unknown config key {name!r}; known keys: "
                    f"{', '.join(sorted(self.keys))}"
                )
            out[self.key(name).name] = self.key(name).convert(value, where)
        return out

    def merge(
        self, file_values: Mapping[str, Value], cli_values: Mapping[str, Value | None]
    ) -> dict[str, Value]:
        """Defaults, then the file, then whatever the command line set (None = not given)."""
        merged = self.defaults()
        merged.update(file_values)
        for name, value in cli_values.items():
            if value is not None:
                merged[self.key(name).name] = self.key(name).convert(value, "command line")
        return merged


def load_config(path: str | os.PathLike[str], schema: ConfigSchema) -> dict[str, Value]:
    """Read *path*; a missing file gives an empty mapping (defaults apply)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    if len(data) > 64 * 1024:
        raise ConfigError(f"config file {p} is over 64 KiB; is it the right file?")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return schema.validate(raw, str(p))


def _toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = "".join(
        {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, ch)
        if ch.isprintable() or ch in "\n\t\r"
        else (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        for ch in str(value)
    )
    return f'"{escaped}"'


def dumps_config(values: Mapping[str, Value], schema: ConfigSchema | None = None) -> str:
    """Flat TOML text for *values*, with each key's help as a comment when known."""
    lines: list[str] = []
    for name, value in values.items():
        key = schema.keys.get(name) if schema else None
        if key is not None and key.help:
            lines.append(f"# {key.help}")
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config(
    path: str | os.PathLike[str],
    values: Mapping[str, Value],
    schema: ConfigSchema | None = None,
    *,
    header: str = "",
) -> None:
    """Write *values* as a flat TOML file, atomically and owner-only (0600)."""
    p = Path(path)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + dumps_config(values, schema)
    tomllib.loads(text)  # we never write a file we could not read back
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
