"""Bad input: one clear line naming what and where, a non-zero exit, nothing written."""

import pytest


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[daemon]\nbogus = 1\n", "[daemon]: unknown key 'bogus'"),
        ("[daemon]\nstatus_interval_s = 'often'\n", "key 'status_interval_s' must be float"),
        (
            "[[sources]]\nkind = 'sim'\nscale = 'big'\n",
            "[[sources]] #1 (sim): key 'scale' must be int",
        ),
        ("[[sources]]\nkind = 'nope'\n", "unknown source kind 'nope'"),
        ("[[sources]]\ninterval_s = 1\n", "[[sources]] #1: missing key 'kind'"),
        ("[daemon\n", "invalid TOML"),
        ("[extras]\n", "unknown section 'extras'"),
    ],
)
def test_bad_config(tmp_path, fleettui, config, expected):
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(config)
    res = fleettui("daemon", "--config", str(cfg))
    assert res.returncode == 1
    assert expected in res.stderr
    assert str(cfg) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "fleet.duckdb").exists()


def test_missing_config_file(tmp_path, fleettui):
    res = fleettui("daemon", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 1 and "nope.toml: no such config file" in res.stderr


def test_sql_on_missing_database(tmp_path, fleettui):
    res = fleettui("sql", "--db", str(tmp_path / "absent.duckdb"), "SELECT 1")
    assert res.returncode == 1
    assert "absent.duckdb: no such database" in res.stderr
    assert not (tmp_path / "absent.duckdb").exists()


def test_nothing_to_collect(fleettui):
    res = fleettui("daemon")
    assert res.returncode == 1 and "pass --config FILE or --sim" in res.stderr


def test_every_subcommand_has_help(fleettui):
    for cmd in ("daemon", "sql", "demo"):
        res = fleettui(cmd, "--help", check_rc=0)
        assert "usage: fleettui " + cmd in res.stdout


def test_bad_alert_rule_file_is_caught_before_the_store_is_created(tmp_path, fleettui):
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rules]]\nname = 'Broken'\nscope = 'gpu'\n")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text("[[sources]]\nkind = 'sim'\n[alerts]\nrules = ['rules.toml']\n")
    res = fleettui("daemon", "--config", str(cfg))
    assert res.returncode == 1
    assert "rules.toml" in res.stderr and "Broken" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "fleet.duckdb").exists()


@pytest.mark.parametrize(
    ("files", "section", "expected"),
    [
        (
            {"topo.csv": "host,rack,rack_slot\nn1,r1,1\nn2,r1,top\n"},
            "[topology]\nfile = 'topo.csv'",
            "topo.csv:3: rack_slot must be a whole number",
        ),
        (
            {},
            "[topology]\nhost_pattern = '(unnamed)'",
            "[topology]: host_pattern needs named groups",
        ),
        (
            {"asg.csv": "tenant,gpu_uuid,since\nacme,GPU-1,\n"},
            "[tenancy]\nassignments = 'asg.csv'",
            "asg.csv:2: since is required",
        ),
        (
            {},
            "[latency_targets]\nitl_p99_ms = -5",
            "[latency_targets]: itl_p99_ms must be a number",
        ),
    ],
)
def test_bad_topology_or_tenancy_is_one_line_before_the_store_is_created(
    tmp_path, fleettui, files, section, expected
):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f"[daemon]\ndb = '{tmp_path / 'fleet.duckdb'}'\n[[sources]]\nkind = 'sim'\n{section}\n"
    )
    res = fleettui("daemon", "--config", str(cfg))
    assert res.returncode == 1
    assert expected in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "fleet.duckdb").exists()


def test_options_before_the_command_are_the_commands(tmp_path, fleettui):
    """`fleettui --db F sql ...` reads F, never the default store ($FLEETTUI_DB here)."""
    res = fleettui("--db", str(tmp_path / "mine.duckdb"), "sql", "SELECT 1")
    assert res.returncode == 1
    assert "mine.duckdb: no such database" in res.stderr
    assert "fleet.duckdb" not in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--token", "t", "daemon", "--sim"), "`fleettui daemon` takes no --token"),
        (("--db", "a.duckdb", "sql", "--db", "b.duckdb", "SELECT 1"), "--db given twice"),
        (("--db", "a.duckdb", "sql", "--connect", "quack:127.0.0.1:1", "SELECT 1"), "give one of"),
    ],
)
def test_options_before_the_command_that_cannot_apply(tmp_path, fleettui, args, expected):
    res = fleettui(*args)
    assert res.returncode == 2
    assert expected in res.stderr.splitlines()[-1]
    assert not list(tmp_path.glob("*.duckdb"))  # nothing started, nothing written
