from pathlib import Path

import pytest

from fleettui.config import ConfigError, load_config, parse_config
from fleettui.daemon import build_sources

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "fleet.example.toml"


def test_example_config_is_valid_and_builds_its_sources():
    config = load_config(EXAMPLE)
    sources = build_sources(config)
    assert [s.name for s in sources][0] == "sim"
    assert config.daemon.serve.startswith("127.0.0.1:")


def test_duplicate_source_names_are_refused():
    config = parse_config({"sources": [{"kind": "sim"}, {"kind": "sim"}]}, "f.toml")
    with pytest.raises(ConfigError, match="two sources are named 'sim'"):
        build_sources(config)


def test_sources_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match=r"array of tables"):
        parse_config({"sources": {"kind": "sim"}}, "f.toml")
