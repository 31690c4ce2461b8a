"""The README's and docs' examples name files that exist (a new user copies them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_CONFIG_ARG = re.compile(r"--config[ =]([^\s`|]+)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_config_examples_name_real_files(doc):
    named = _CONFIG_ARG.findall(doc.read_text())
    # files in this repository (a deployment's /etc/... path is the operator's)
    local = [n for n in named if n not in ("FILE", "X") and not n.startswith(("/", "~", "$"))]
    missing = [n for n in local if not (ROOT / n).is_file()]
    assert missing == [], f"{doc.name}: --config names files that do not exist"


def test_readme_says_where_the_demo_store_is():
    text = (ROOT / "README.md").read_text()
    assert "~/.local/share/fleettui/demo.duckdb" in text
    from fleettui.paths import demo_db_path

    assert demo_db_path(None).name == "demo.duckdb"
