"""deploy/grafana and deploy/prometheus: the dashboard and the alert rules query what crisync
exports, and the rules do what their unit tests say (with promtool, when it is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docs import ROOT, first_column
from tests.support.metrics import sample_names

DASHBOARD = ROOT / "deploy" / "grafana" / "crisync.json"
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "crisync-alerts.yml"
ALERT_TESTS = PROMETHEUS / "tests.yml"
METRIC = re.compile(r"\bcrisync_\w+")
# Grafana's variables, as a query of one scrape sees them.
GRAFANA_VARIABLES = {"$job": "crisync", "$instance": ".*", "$__rate_interval": "1m"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    variables = [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    return [target["expr"] for panel in panels for target in panel["targets"]] + variables


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
    queries = []
    for panel_query in dashboard_queries():
        if panel_query.startswith("label_values("):
            continue  # Grafana's own function around a selector
        query = panel_query
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        queries.append(query)
    rules = [{"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run(promtool, "check", "rules", str(path))
