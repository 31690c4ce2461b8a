"""`peak_value` is the most extreme value in the rule's direction: the lowest for `<`
rules, the highest for `>`; the app's alerts view calls it "worst" so `<` rules read right."""

from fleettui.alerts.engine import AlertEngine
from fleettui.alerts.rules import load_rules_text
from fleettui.tui.screens.alerts import COLS
from tests.test_alert_engine import run, setup_store

LOW = """
[[rules]]
name = "TokensTooFast"
scope = "endpoint"
for = "1m"
expr = { metric = "itl_p99_ms", agg = "last", over = "1m", op = "<", threshold = 30 }
"""


def test_peak_of_a_below_rule_is_its_lowest_value_and_of_an_above_rule_its_highest():
    store = setup_store()
    engine = AlertEngine(store, load_rules_text(LOW, "t.toml"), interval_s=15)
    run(store, engine, [{"ep-a": 20.0}, {"ep-a": 5.0}, {"ep-a": 25.0}])
    peak, last = store.cursor().execute("SELECT peak_value, last_value FROM alerts").fetchone()
    assert (peak, last) == (5.0, 25.0)  # the worst in the rule's direction, below the value
    high = setup_store()
    engine = AlertEngine(
        high,
        load_rules_text(LOW.replace('"<"', '">"').replace("30", "10"), "t.toml"),
        interval_s=15,
    )
    run(high, engine, [{"ep-a": 20.0}, {"ep-a": 50.0}, {"ep-a": 25.0}])
    assert high.cursor().execute("SELECT peak_value, last_value FROM alerts").fetchone() == (
        50.0,
        25.0,
    )


def test_alerts_view_labels_the_extreme_worst_not_peak():
    labels = {c.key: c.label for c in COLS}
    assert labels["peak_value"] == "worst"
