"""The Grafana dashboard and the Prometheus rules only use metrics the service really exports.

Metric names are pulled out of every PromQL expression (dashboard panels, annotations, alert rules)
and compared with the sample names of the metrics defined in ``service/metrics.py`` (counters ->
``_total``; histograms -> ``_bucket``/``_count``/``_sum``), so a renamed metric or a typo fails
here instead of silently drawing an empty panel or an alert that can never fire.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service import metrics
from tests.unit.test_log_reference import logged_events

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "callbridge.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_BUILTINS = frozenset({"up"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "inf", "nan", "Inf", "NaN"})


# ------------------------------------------------------------------------------------------ helpers

def metric_families() -> dict[str, str]:
    """Family name -> type for every metric object defined in service/metrics.py."""
    families: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for described in value.describe():
                families[described.name] = described.type
    return families


def sample_names(families: dict[str, str]) -> dict[str, str]:
    """Exported sample name -> family name (what a PromQL expression may select)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created")}
    return {family + suffix: family for family, kind in families.items() for suffix in suffixes[kind]}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (strings, label matchers, ranges, grouping
    clauses, Grafana variables and function names removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        following = text[match.end():].lstrip()
        if following.startswith("(") or match.group(0) in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def prometheus_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression of the dashboard."""
    found = []
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == "prometheus":
                found.append((f"panel {panel['id']} {panel['title']!r}", target["expr"]))
    for annotation in board["annotations"]["list"]:
        if annotation["datasource"]["type"] == "prometheus":
            found.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return found


def loki_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"panel {panel['id']} {panel['title']!r}", target["expr"])
        for panel in all_panels(board)
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "loki"
    ]


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------- the extractor

def test_extractor_finds_metrics_and_ignores_functions_labels_and_variables() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, instance) (rate(foo_seconds_bucket{instance=~"$instance", '
            'le!="bar_total"}[$__rate_interval]))) / clamp_min(sum(increase(baz_total[1h])), 1e-9) > 0.015 '
            "unless on (job) up == 0")
    assert promql_metric_names(expr) == {"foo_seconds_bucket", "baz_total", "up"}
    assert promql_metric_names("sum(rate(x_total[5m])) by (outcome) * 60") == {"x_total"}


def test_service_metrics_are_found() -> None:
    families = metric_families()
    assert families["callbridge_active_calls"] == "gauge"
    assert families["callbridge_calls_started"] == "counter"
    assert families["callbridge_frame_forward_seconds"] == "histogram"
    names = sample_names(families)
    assert "callbridge_calls_started_total" in names and "callbridge_frame_forward_seconds_bucket" in names


# --------------------------------------------------------------------------------------- dashboard

def test_dashboard_loads_with_unique_panel_ids_and_a_sane_grid() -> None:
    board = dashboard()
    panels = all_panels(board)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert board["uid"] and board["title"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area


def test_every_dashboard_expression_uses_only_exported_metrics() -> None:
    known = set(sample_names(metric_families())) | PROMETHEUS_BUILTINS
    exprs = prometheus_exprs(dashboard())
    assert len(exprs) > 20
    unknown = {where: sorted(promql_metric_names(expr) - known) for where, expr in exprs}
    assert {where: names for where, names in unknown.items() if names} == {}
    empty = [where for where, expr in exprs if not promql_metric_names(expr)]
    assert empty == []


def test_every_service_metric_has_a_panel() -> None:
    names = sample_names(metric_families())
    used = {names[name] for _, expr in prometheus_exprs(dashboard()) for name in promql_metric_names(expr) if name in names}
    assert set(metric_families()) - used == set(), "add a panel for these metrics"


def test_rate_functions_only_take_counters_and_quantiles_take_buckets_by_le() -> None:
    families = metric_families()
    names = sample_names(families)
    exprs = prometheus_exprs(dashboard()) + [(rule["alert"], rule["expr"]) for rule in alert_rules()]
    for where, expr in exprs:
        for match in re.finditer(r"\b(?:rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)", expr):
            name = match.group(1)
            family_type = families[names[name]] if name in names else "builtin"
            assert family_type in ("counter", "histogram") and not name.endswith("_created"), (where, name)
        if "histogram_quantile" in expr:
            assert re.search(r"by \([^)]*\ble\b[^)]*\)", expr), where
            assert all(name.endswith("_bucket") for name in promql_metric_names(expr)), where


def test_panels_use_the_datasource_variables_that_provisioning_defines() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "datasource"}
    assert set(variables) == {"prometheus", "loki"}
    provisioned = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "callbridge.yml")["datasources"]
    uids = {source["type"]: source["uid"] for source in provisioned}
    assert uids == {"prometheus": variables["prometheus"]["current"]["value"], "loki": variables["loki"]["current"]["value"]}
    for panel in all_panels(board):
        if panel["type"] == "row":
            continue
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${" + target["datasource"]["type"] + "}", panel["title"]


def test_loki_panels_query_real_events_with_the_pod_label() -> None:
    events = set(logged_events())
    exprs = loki_exprs(dashboard())
    assert len(exprs) >= 4
    deployment = _yaml(DEPLOY / "k8s" / "base" / "deployment.yaml")
    app_label = deployment["spec"]["template"]["metadata"]["labels"]["app"]
    for where, expr in exprs:
        assert f'{{app="{app_label}"}}' in expr and "| json" in expr, where
        referenced = re.findall(r'event="([^"]+)"', expr)
        for pattern in re.findall(r'event=~"([^"]+)"', expr):
            referenced.extend(pattern.split("|"))
        assert all(name in events for name in referenced), (where, sorted(set(referenced) - events))
    assert any("call.summary" in expr for _, expr in exprs)
    assert any("escalation.decided" in expr for _, expr in exprs)


def test_dashboard_provider_points_where_compose_mounts_the_dashboards() -> None:
    provider = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "callbridge.yml")["providers"][0]
    compose = _yaml(DEPLOY / "docker-compose.yml")
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


# ------------------------------------------------------------------------------------------ alerts

def test_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"].strip()
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}") and '"{{"' not in text, rule["alert"]


def test_alert_expressions_use_only_exported_metrics() -> None:
    known = set(sample_names(metric_families())) | PROMETHEUS_BUILTINS
    for rule in alert_rules():
        used = promql_metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used - known == set(), rule["alert"]


@pytest.mark.parametrize(
    ("concern", "metric"),
    [
        ("escalation retries", "callbridge_escalation_deliveries_total"),
        ("stuck outbox", "callbridge_escalation_outbox_pending"),
        ("frame latency", "callbridge_frame_forward_seconds_bucket"),
        ("realtime errors", "callbridge_realtime_errors_total"),
        ("redis down", "callbridge_redis_up"),
        ("queue drops", "callbridge_state_writes_dropped_total"),
        ("draining too long", "callbridge_draining"),
    ],
)
def test_required_alerts_exist(concern: str, metric: str) -> None:
    assert any(metric in promql_metric_names(rule["expr"]) for rule in alert_rules()), concern


def test_dead_letter_and_latency_alerts_have_the_agreed_thresholds() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    dead = rules["CallbridgeEscalationDeadLetter"]
    assert 'outcome="dead_letter"' in dead["expr"] and "increase(" in dead["expr"]
    latency = rules["CallbridgeFrameForwardLatencyHigh"]
    assert "histogram_quantile(0.99" in latency["expr"].replace("\n", "").replace(" ", "")
    assert float(latency["expr"].rsplit(">", 1)[1]) == pytest.approx(0.015)
    assert latency["for"] == "5m"


# -------------------------------------------------------------------------------------- prometheus

def test_compose_prometheus_scrapes_every_gateway_and_loads_the_rules() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    compose = _yaml(DEPLOY / "docker-compose.yml")
    gateways = {name for name, svc in compose["services"].items() if svc.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert targets == {f"{name}:8080" for name in gateways}
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus/alerts.yml"] in config["rule_files"]


def test_kubernetes_scrape_job_matches_the_pod_labels_and_annotations() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus-kubernetes.yml")
    pod = _yaml(DEPLOY / "k8s" / "base" / "deployment.yaml")["spec"]["template"]["metadata"]
    relabels = config["scrape_configs"][0]["relabel_configs"]
    keep = {r["source_labels"][0]: r["regex"] for r in relabels if r.get("action") == "keep"}
    assert keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == pod["labels"]["app.kubernetes.io/name"]
    assert keep["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == pod["annotations"]["prometheus.io/scrape"]
    # the HPA's custom metric needs namespace and pod labels on the series
    targets = {r.get("target_label") for r in relabels}
    assert {"namespace", "pod"} <= targets
