"""Alert rules: the TOML format, its validation, and what a rule compiles to."""

import pytest

from fleettui.alerts.rules import (
    SCOPES,
    RuleError,
    default_rules,
    load_rule_files,
    load_rules_text,
    parse_duration,
    render,
)

GOOD = """
[[rules]]
name = "SlowTokens"
scope = "endpoint"
severity = "critical"
for = "2m"
keep_firing_for = "30s"
expr = { metric = "itl_p99_ms", agg = "avg", over = "1m", op = ">", threshold = "itl_target_ms" }
labels = { team = "serving" }
annotations.summary = "{{ $scope_key }} ITL {{ $value | printf \\"%.1f\\" }} ms > {{ $threshold }}"
"""


def test_a_good_rule_loads_with_its_durations_labels_and_query():
    (rule,) = load_rules_text(GOOD, "site.toml")
    assert (rule.name, rule.scope, rule.severity) == ("SlowTokens", "endpoint", "critical")
    assert (rule.for_s, rule.keep_firing_for_s) == (120.0, 30.0)
    assert rule.labels == {"team": "serving"}
    assert "JOIN endpoints d" in rule.query and "itl_target_ms" in rule.query
    assert rule.params == ("now",)


def test_default_pack_loads_and_covers_every_issue_rule():
    names = {r.name for r in default_rules()}
    assert {
        "EndpointItlP99High",
        "EndpointTtftP99High",
        "HostTelemetryStale",
        "CollectorSilent",
        "CollectorSlow",
        "AllocatedGpuIdle",
        "AllocatedSliceIdle",
        "GpuSaturated",
        "GpuMemoryHigh",
        "TenantAllocationIdle",
        "GpuXidCritical",
        "GpuEccUncorrectable",
        "GpuThermalThrottle",
        "LinkErrorsRising",
        "LinkDown",
    } <= names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('scope = "endpoint"', 'scope = "rack"'),
            "site.toml rule 'SlowTokens': scope must be one of",
        ),
        (('for = "2m"', 'for = "2 minutes"'), "site.toml rule 'SlowTokens': for: bad duration"),
        (('for = "2m"', "for = true"), "site.toml rule 'SlowTokens': key 'for' must be"),
        (('severity = "critical"', 'severity = "page"'), "severity must be one of"),
        (('op = ">"', 'op = "=>"'), "site.toml rule 'SlowTokens' expr: op must be one of"),
        (('agg = "avg"', 'agg = "p99"'), "agg must be one of"),
        (
            ('threshold = "itl_target_ms"', 'threshold = "itl_goal"'),
            "threshold 'itl_goal' is not a column of endpoints",
        ),
        (
            ('metric = "itl_p99_ms"', 'metric = "itl_p99"'),
            "site.toml rule 'SlowTokens': query fails",
        ),
        (("labels = {", "labelz = {"), "site.toml rule 'SlowTokens': unknown key 'labelz'"),
        (('team = "serving"', "team = 3"), "labels.team must be a string"),
        (("$scope_key }}", "$scopekey }}"), "unknown template variable $scopekey"),
        (('printf \\"%.1f\\"', 'printf \\"%.1q\\"'), "bad printf format"),
    ],
)
def test_bad_rules_are_one_line_errors_naming_file_and_rule(change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(RuleError) as err:
        load_rules_text(GOOD.replace(old, new), "site.toml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_sql_rules_must_return_scope_key_and_value_and_use_known_params():
    base = '[[rules]]\nname = "R"\nscope = "host"\nsql = """{q}"""\n'
    (ok,) = load_rules_text(
        base.format(
            q="SELECT host AS scope_key, 1.0 AS value, rack FROM hosts WHERE last_seen < $now"
        ),
        "f.toml",
    )
    assert ok.params == ("now",)
    with pytest.raises(RuleError, match=r"f.toml rule 'R': query must return column\(s\) value"):
        load_rules_text(base.format(q="SELECT host AS scope_key FROM hosts"), "f.toml")
    with pytest.raises(RuleError, match=r"unknown parameter \$since"):
        load_rules_text(
            base.format(
                q="SELECT host AS scope_key, 1 AS value FROM hosts WHERE last_seen > $since"
            ),
            "f.toml",
        )
    with pytest.raises(RuleError, match="give exactly one of `expr` or `sql`"):
        load_rules_text('[[rules]]\nname = "R"\nscope = "host"\n', "f.toml")


def test_rule_files_are_merged_with_the_default_pack_and_names_stay_unique(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(GOOD)
    rules = load_rule_files([site])
    assert rules[-1].name == "SlowTokens" and len(rules) == len(default_rules()) + 1
    clash = tmp_path / "clash.toml"
    clash.write_text(GOOD.replace("SlowTokens", "LinkDown"))
    with pytest.raises(RuleError, match="rule name already defined in default_rules.toml"):
        load_rule_files([clash])
    with pytest.raises(RuleError, match="cannot read rule file"):
        load_rule_files([tmp_path / "missing.toml"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\n")
    with pytest.raises(RuleError, match="bad.toml: not valid TOML"):
        load_rule_files([bad], default_pack=False)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5 and parse_duration(12) == 12.0
    for bad in ("", "5", "m5", "5 m", "-5s", -1, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_templates_render_values_labels_and_printf():
    text = '{{ $scope_key }} on {{ $labels.host }}: {{ $value | printf "%.1f" }} ({{ $value }})'
    out = render(text, {"scope_key": "GPU-1", "labels": {"host": "n1"}, "value": 96.12345})
    assert out == "GPU-1 on n1: 96.1 (96.12)"
    assert render("{{ $labels.rack }}|{{ $value }}", {"labels": {}, "value": None}) == "|"


def test_every_scope_has_a_sample_table_with_its_key():
    for name, scope in SCOPES.items():
        (rule,) = load_rules_text(
            f'[[rules]]\nname = "R"\nscope = "{name}"\n'
            f'expr = {{ metric = "1", agg = "count", op = ">", threshold = 0 }}\n',
            "f.toml",
        )
        assert f"FROM {scope.table} s" in rule.query


def test_a_rule_name_ending_in_a_newline_is_refused():
    with pytest.raises(RuleError, match="name must be letters, digits and _"):
        load_rules_text(GOOD.replace('"SlowTokens"', '"SlowTokens\\n"'), "site.toml")
