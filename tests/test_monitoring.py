"""deploy/grafana and deploy/prometheus: the dashboard and the alert rules query what crisync
exports, the rules do what their unit tests say (with promtool, when it is installed), and
the dashboard's picture is drawn from the dashboard itself."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support.docs import ROOT, first_column
from tests.support.metrics import sample_names

DASHBOARD = ROOT / "deploy" / "grafana" / "crisync.json"
RENDER = ROOT / "deploy" / "grafana" / "render.py"
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "crisync-alerts.yml"
ALERT_TESTS = PROMETHEUS / "tests.yml"
METRIC = re.compile(r"\bcrisync_\w+")


def load_render() -> ModuleType:
    """deploy/grafana/render.py, a script and no package; its parsing half needs no matplotlib."""
    spec = importlib.util.spec_from_file_location("crisync_dashboard_render", RENDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


render = load_render()


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[str]:
    """Every panel's queries and the selectors of the variables' `label_values` queries."""
    panels = render.panels(dashboard())
    variables = render.query_variables(dashboard())
    return [t.expr for p in panels for t in p.targets] + [v.selector for v in variables]


def filled_in(query: str) -> str:
    """A query with the variables as the picture fills them for one scrape target."""
    values = render.interval_variables(step_s=2, scrape_s=2, range_s=150)
    values |= {"job": "crisync", "instance": render.regex_of(["127.0.0.1:9660", "b:9660"])}
    filled: str = render.interpolate(query, values)
    return filled


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return rules


def test_every_metric_the_dashboard_and_the_alerts_query_is_exported() -> None:
    queries = dashboard_queries() + [rule["expr"] for rule in alert_rules()]
    used = {name for query in queries for name in METRIC.findall(query)}
    assert used - sample_names() == set()
    # What an operator watches first: queues, failures, availability, lag, the APIs.
    assert {
        "crisync_backlog_events",
        "crisync_outbox_messages",
        "crisync_dead_letters",
        "crisync_api_available",
        "crisync_cursor_lag_seconds",
        "crisync_api_requests_total",
        "crisync_api_request_duration_seconds_bucket",
        "crisync_outcomes_total",
        "crisync_loop_seconds_since_progress",
    } <= used


def test_every_alert_is_documented_and_unit_tested() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    assert first_column("alert") == alerts
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == fired == alerts


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules_and_their_unit_tests_pass(promtool: str) -> None:
    _run(promtool, "check", "rules", str(ALERTS))
    _run(promtool, "test", "rules", str(ALERT_TESTS))


def test_promtool_parses_every_query_of_the_dashboard(promtool: str, tmp_path: Path) -> None:
    """Each query, its variables filled in, as a recording rule: promtool parses its PromQL."""
    queries = [filled_in(query) for query in dashboard_queries()]
    rules = [{"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run(promtool, "check", "rules", str(path))


def test_the_picture_draws_every_panel_of_the_dashboard_with_its_queries_and_unit() -> None:
    raw = [p for row in dashboard()["panels"] for p in [row, *row.get("panels", [])]]
    drawn = render.panels(dashboard())
    assert Counter((p.title, p.kind, p.y, p.x) for p in drawn) == Counter(
        (p["title"], p["type"], p["gridPos"]["y"], p["gridPos"]["x"]) for p in raw
    )
    assert Counter(t.expr for p in drawn for t in p.targets) == Counter(
        t["expr"] for p in raw for t in p.get("targets", [])
    )
    for panel in drawn:
        render.formatted(panel.unit, 1234.5)  # a unit the picture cannot write raises
        for target in panel.targets:
            assert "$" not in filled_in(target.expr)


def test_the_variables_are_filled_in_from_the_data_source_as_grafana_does() -> None:
    series = [
        {"job": "crisync", "instance": "127.0.0.1:9660"},
        {"job": "crisync", "instance": "b:9660"},
        {"job": "node", "instance": "c:9100"},
    ]
    asked: list[str] = []

    def label_values(selector: str, label: str) -> list[str]:
        """Prometheus's /api/v1/label/<label>/values?match[]=<selector>, over `series`."""
        asked.append(selector)
        wanted = dict(re.findall(r'(\w+)="([^"]*)"', selector))
        return sorted({s[label] for s in series if wanted.items() <= s.items()})

    values = render.resolve_variables(render.query_variables(dashboard()), label_values)
    assert asked == ["crisync_dead_letters", 'crisync_dead_letters{job="crisync"}']
    assert values == {"job": "crisync", "instance": r"(127\\.0\\.0\\.1:9660|b:9660)"}
    backlog = 'sum(crisync_backlog_events{job="$job", instance=~"$instance"})'
    assert render.interpolate(backlog, values) == (
        r'sum(crisync_backlog_events{job="crisync", instance=~"(127\\.0\\.0\\.1:9660|b:9660)"})'
    )
    rate = "rate(crisync_outcomes_total[$__rate_interval])"
    # Grafana's rule: at least four scrapes, and a step plus a scrape.
    assert render.interpolate(rate, render.interval_variables(2, 2, 150)) == (
        "rate(crisync_outcomes_total[8s])"
    )
    assert render.interpolate(rate, render.interval_variables(10, 2, 3600)) == (
        "rate(crisync_outcomes_total[12s])"
    )
    with pytest.raises(KeyError, match="quota"):
        render.interpolate('crisync_x{pool="$quota"}', values)
