"""Config files: schema checks, precedence, the flat TOML writer."""

from __future__ import annotations

import os
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.daemon.config import (
    ConfigError,
    ConfigKey,
    ConfigSchema,
    dumps_config,
    in_range,
    load_config,
    write_config,
)

SCHEMA = ConfigSchema(
    [
        ConfigKey("port", int, 1503, "TCP port", in_range(1, 65535)),
        ConfigKey("ip", str, "0.0.0.0", "address"),
        ConfigKey("ratio", float, 0.5, "a number"),
        ConfigKey("verbose", bool, False, "talk more"),
    ]
)


def test_command_line_beats_file_beats_defaults(home):
    path = home / "c.toml"
    path.write_text('port = 2000\nip = "10.0.0.1"\n')
    merged = SCHEMA.merge(load_config(path, SCHEMA), {"port": 3000, "ip": None})
    assert merged == {"port": 3000, "ip": "10.0.0.1", "ratio": 0.5, "verbose": False}
    assert SCHEMA.merge({}, {}) == SCHEMA.defaults()


def test_missing_file_means_defaults(home):
    assert load_config(home / "absent.toml", SCHEMA) == {}


@pytest.mark.parametrize(
    "text, words",
    [
        ("prot = 1", "unknown config key 'prot'"),
        ("port = 'x'", "port must be an integer"),
        ("port = 70000", "between 1 and 65535"),
        ("port = true", "port must be an integer"),
        ("[section]\nport = 1", "tables are not used"),
        ("port = ", "not valid TOML"),
        ("ratio = nan", "finite"),
    ],
)
def test_bad_files_name_the_problem(home, text, words):
    path = home / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as error:
        load_config(path, SCHEMA)
    assert str(path) in str(error.value)


def test_writer_is_atomic_owner_only_and_round_trips(home):
    path = home / "sub" / "c.toml"
    values = {"port": 1504, "ip": 'we"ird\\name\n', "ratio": 2.0, "verbose": True}
    write_config(path, values, SCHEMA, header="test header")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_config(path, SCHEMA) == values
    assert "# TCP port" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["c.toml"]  # no temp file left


def test_set_from_text():
    assert SCHEMA.key("port").from_text("1600") == 1600
    assert SCHEMA.key("verbose").from_text("yes") is True
    assert SCHEMA.key("ratio").from_text("1.5") == 1.5
    with pytest.raises(ConfigError, match="must be an integer"):
        SCHEMA.key("port").from_text("lots")
    with pytest.raises(ConfigError, match="unknown config key"):
        SCHEMA.key("nope")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_any_string_survives_the_writer(text):
    assert tomllib.loads(dumps_config({"ip": text}))["ip"] == text
