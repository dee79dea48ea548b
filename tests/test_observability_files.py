"""The observability files under deploy/ (Prometheus config and alert rules, the Grafana
dashboard) checked with promtool and against what a real gateway and a real node export.

One module-wide world: Redis, one demo-model node, an initialized registry and a gateway
in front of the node, with one scoring call made through it so that the labelled series
exist. Every metric an alert or a panel names must be one of the series those two
``/metrics`` answers expose: a renamed metric breaks this test, not a dashboard at 3 am.

promtool is Debian's ``prometheus`` package. Debian builds it without Kubernetes service
discovery (``kubernetes_sd_configs`` is an unknown field there), so the Kubernetes part
of prometheus.yml is checked by simulating its relabeling on the pods of deploy/k8s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from helpers import REPO, GatewayProcess, NodeProcess, RedisServer, seed_registry_from
from prometheus_client.parser import text_string_to_metric_families

from geogate.gateway.config import GatewayConfig
from geogate.shared.config import nested

PROMETHEUS = REPO / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "geogate.json"
K8S_BASE = REPO / "deploy" / "k8s" / "base"

# A metric name as it appears in PromQL. No label used in these files starts with geogate_,
# so this cannot pick up a label name.
METRIC_TOKEN = re.compile(r"\bgeogate_[a-z0-9_]+\b")
# Series names a family of each type exposes, for families that have no child yet (a
# labelled counter nobody incremented still has its # TYPE line, but no sample).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
SCORING_CALL = {"pairs": [["杭州市余杭区文一西路969号", "浙江省杭州市余杭区文一西路969号"]]}


# ------------------------------------------------------------------------------ promtool


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        reason = ("promtool is not installed (Debian package `prometheus`: "
                  "apt-get install -y prometheus); .ci/run installs it, so CI never skips this")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return subprocess.run([path, *args], check=False, input=stdin, capture_output=True, text=True, timeout=60)


def check_rules_file(path: Path) -> subprocess.CompletedProcess[str]:
    return promtool("check", "rules", str(path))


# ------------------------------------------------------------------------------ the files


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def panels(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(row title, panel) for every non-row panel, also those nested in collapsed rows."""
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            for inner in panel.get("panels", []):
                yield row, inner
        else:
            yield row, panel


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [(f"panel {p['title']!r} target {t['refId']}", t["expr"])
           for _, p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", query))
    return out


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by what Grafana sends."""
    return expr.replace("$__rate_interval", "5m").replace("$region", "cn-east")


def unknown_metrics(queries: list[tuple[str, str]], exposed: set[str]) -> list[str]:
    return [f"{where}: {name}" for where, expr in queries for name in sorted(set(METRIC_TOKEN.findall(expr)))
            if name not in exposed]


def exposed_series(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Series names a ``/metrics`` text exposes, and the label names seen per series name.

    Names are compared exactly, not with suffixes stripped: PromQL must name the series
    (``..._total``, ``..._bucket``), and a bare counter or histogram family name would
    select nothing in Prometheus, so accepting it would let a broken alert pass.
    """
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            names.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


# ------------------------------------------------------------------------------ the world


async def _call_and_scrape(gateway: GatewayProcess, node: NodeProcess) -> dict[str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.url + "/v1/similarity", json=SCORING_CALL) as resp:
            assert resp.status == 200, await resp.text()
        texts = {}
        for name, process in (("gateway", gateway), ("node", node)):
            async with http.get(process.url + "/metrics") as resp:
                assert resp.status == 200
                texts[name] = await resp.text()
    return texts


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``/metrics`` text of a real gateway and a real node after one scoring call."""
    tmp = tmp_path_factory.mktemp("observability")
    redis_server = RedisServer(tmp)
    node = NodeProcess(tmp, "--region", "cn-east", "--color", "blue", "--cpu-threads", "1")
    gateway = None
    try:
        asyncio.run(node.wait_ready())
        asyncio.run(seed_registry_from(redis_server.url, [node], ["cn-east", "eu-central"]))
        config = tmp / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "gateway": nested(GatewayConfig, {"region": "cn-east", "probe_interval_s": 0.2, "deep_probe_interval_s": 0}),
            "regions": {"cn-east": {"failover": ["eu-central"]}, "eu-central": {"failover": ["cn-east"]}},
            "nodes": [{"region": "cn-east", "color": "blue", "url": node.url}],
        }))
        gateway = GatewayProcess(tmp, "--config", str(config), "--registry-url", redis_server.url)
        asyncio.run(gateway.wait_ready())
        yield asyncio.run(_call_and_scrape(gateway, node))
    finally:
        for process in (node, *([gateway] if gateway else [])):
            process.stop()
        redis_server.stop()


@pytest.fixture(scope="module")
def exposed(scrapes: dict[str, str]) -> tuple[set[str], dict[str, set[str]]]:
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for text in scrapes.values():
        more_names, more_labels = exposed_series(text)
        names |= more_names
        for name, label_names in more_labels.items():
            labels.setdefault(name, set()).update(label_names)
    return names, labels


# ------------------------------------------------------------------------------ (a) promtool on the files


def test_alert_rules_pass_promtool() -> None:
    result = check_rules_file(ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    result = promtool("check", "config", str(CONFIG))
    if result.returncode != 0:
        # Accepted only when the one complaint is a build without Kubernetes discovery;
        # then the same file with that discovery swapped for file-based discovery must
        # pass, which still checks everything else, relabel rules and rule_files included.
        output = result.stdout + result.stderr
        problems = [line.strip() for line in output.splitlines() if re.match(r"\s*line \d+:", line)]
        assert problems and all("field kubernetes_sd_configs not found" in p for p in problems), output
        config = load_yaml(CONFIG)
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["file_sd_configs"] = [{"files": ["targets/*.json"]}]
        (tmp_path / CONFIG.name).write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.copy(ALERTS, tmp_path / ALERTS.name)
        result = promtool("check", "config", str(tmp_path / CONFIG.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout, "the rule file is not checked along with the config"


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def test_alert_logic_on_synthetic_series(tmp_path: Path) -> None:
    """``promtool test rules`` on made-up series: each alert fires where it should and not
    where it should not. Annotations are dropped from the copy under test: they are
    prose, and promtool would otherwise compare them word for word."""
    doc = load_yaml(ALERTS)
    for rule in alert_rules(doc):
        rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    scoring = {"route": "/v1/similarity", "region": "cn-east", "color": "blue"}
    healthy = "geogate_gateway_healthy_nodes"
    requests = "geogate_gateway_requests_total"
    cache = "geogate_gateway_cache_items_total"
    bucket = "geogate_gateway_request_duration_seconds_bucket"
    tests = [
        {  # cn-east: no node of any color; eu-central: only green is down.
            "interval": "1m",
            "input_series": [
                _series(healthy, "0x20", job="gw", instance="g1", region="cn-east", color="blue"),
                _series(healthy, "0x20", job="gw", instance="g1", region="cn-east", color="green"),
                _series(healthy, "2x20", job="gw", instance="g1", region="eu-central", color="blue"),
                _series(healthy, "0x20", job="gw", instance="g1", region="eu-central", color="green"),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "RegionWithoutHealthyNodes", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "job": "gw", "instance": "g1", "region": "cn-east"}}]},
                {"eval_time": "5m", "alertname": "RegionColorWithoutHealthyNodes", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "RegionColorWithoutHealthyNodes", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": "gw", "instance": "g1", "region": r, "color": c}}
                    for r, c in (("cn-east", "blue"), ("cn-east", "green"), ("eu-central", "green"))]},
            ],
        },
        {  # job a: 2% of scoring calls fail, and /readyz traffic must not dilute that;
           # job b: 0.5%; job c: 50% but only 2 calls a minute.
            "interval": "1m",
            "input_series": [
                _series(requests, "0+600x30", job="a", instance="g1", status="200", **scoring),
                _series(requests, "0+12x30", job="a", instance="g1", status="503", **scoring),
                _series(requests, "0+6000x30", job="a", instance="g1", route="/readyz", status="200", region="",
                        color=""),
                _series(requests, "0+600x30", job="b", instance="g1", status="200", **scoring),
                _series(requests, "0+3x30", job="b", instance="g1", status="502", **scoring),
                _series(requests, "0+1x30", job="c", instance="g1", status="200", **scoring),
                _series(requests, "0+1x30", job="c", instance="g1", status="503", **scoring),
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "HighErrorRate",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "a"}}]},
            ],
        },
        {  # 10% of calls between 0.5 and 1 s: p99 is about 0.9 s.
            "interval": "1m",
            "input_series": [
                _series(bucket, f"0+{n}x30", job="gw", instance="g1", route="/v1/parse", le=le)
                for le, n in (("0.25", 80), ("0.5", 90), ("1.0", 100), ("+Inf", 100))
            ] + [_series(bucket, "0+100x30", job="gw", instance="g1", route="/readyz", le=le)
                 for le in ("0.25", "0.5", "1.0", "+Inf")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "P99OverSLO", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "P99OverSLO", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "slo_seconds": "0.5", "route": "/v1/parse"}}]},
            ],
        },
        {  # 2 items/s; the hit ratio falls from 0.8 to 0.2 at minute 60.
            "interval": "1m",
            "input_series": [
                _series(cache, "0+96x60 5784+24x59", job="gw", instance="g1", task="similarity", result="hit"),
                _series(cache, "0+24x60 1464+96x59", job="gw", instance="g1", task="similarity", result="miss"),
            ],
            "alert_rule_test": [
                {"eval_time": "55m", "alertname": "CacheHitRatioCollapse", "exp_alerts": []},
                {"eval_time": "100m", "alertname": "CacheHitRatioCollapse", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": "gw", "task": "similarity"}}]},
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                _series("geogate_node_queue_depth", "3300x10", job="node", instance="n1", task="similarity"),
                _series("geogate_node_queue_depth", "3000x10", job="node", instance="n1", task="parse"),
                _series("geogate_gateway_registry_snapshot_age_seconds", "-1x10", job="gw", instance="g1"),
                _series("geogate_gateway_registry_snapshot_age_seconds", "45x10", job="gw", instance="g2"),
                _series("geogate_gateway_registry_snapshot_age_seconds", "2x10", job="gw", instance="g3"),
                _series("geogate_gateway_limiter_local", "1x10", job="gw", instance="g1"),
                _series("geogate_gateway_limiter_local", "0x10", job="gw", instance="g2"),
                _series("geogate_gateway_client_throttled_total", "0+600x20", job="gw", instance="g1",
                        client="noisy", scope="requests"),
                _series("geogate_gateway_client_throttled_total", "0+6x20", job="gw", instance="g1",
                        client="calm", scope="requests"),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "NodeQueueSaturation", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "job": "node", "instance": "n1", "task": "similarity"}}]},
                {"eval_time": "5m", "alertname": "RegistryUnreachable", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", "job": "gw", "instance": "g1"}}]},
                {"eval_time": "5m", "alertname": "RegistrySnapshotStale", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": "gw", "instance": "g2"}}]},
                {"eval_time": "5m", "alertname": "ClientLimitsFailOpen", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": "gw", "instance": "g1"}}]},
                {"eval_time": "16m", "alertname": "ClientThrottled", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": "gw", "client": "noisy", "scope": "requests"}}]},
            ],
        },
    ]
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests},
                                   allow_unicode=True))
    result = promtool("test", "rules", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ prometheus.yml and deploy/k8s


def _label_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _pod_targets(namespace: str = "geogate-cn-east") -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """What Prometheus's pod discovery yields for every pod template of deploy/k8s/base:
    (workload name, pod template, meta labels) per container port."""
    targets = []
    for path in sorted(K8S_BASE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            template = ((doc or {}).get("spec") or {}).get("template")
            if not template:
                continue
            labels = {**template["metadata"].get("labels", {}), "geogate.io/region": namespace.removeprefix("geogate-")}
            for container in template["spec"]["containers"]:
                for port in container.get("ports", []):
                    meta = {f"__meta_kubernetes_pod_label_{_label_name(k)}": str(v) for k, v in labels.items()}
                    meta.update({
                        "__address__": f"10.0.0.1:{port['containerPort']}",
                        "__meta_kubernetes_namespace": namespace,
                        "__meta_kubernetes_pod_name": f"{doc['metadata']['name']}-abc12",
                        "__meta_kubernetes_pod_phase": "Running",
                        "__meta_kubernetes_pod_container_name": container["name"],
                        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    })
                    targets.append((doc["metadata"]["name"], template, meta))
    return targets


def _relabel(meta: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabeling, for the actions prometheus.yml uses (keep, drop, replace)."""
    labels = dict(meta)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
        assert action in ("keep", "drop", "replace"), f"extend _relabel for action {action}"
    return {k: v for k, v in labels.items() if not k.startswith("__") or k == "__address__"}


def _selected(job: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    for sd in job["kubernetes_sd_configs"]:
        assert sd["role"] == "pod"
        for selector in sd.get("selectors", []):
            for term in selector.get("label", "").split(","):
                key, _, value = term.partition("=")
                if term and pod_labels.get(key) != value:
                    return False
    return True


def test_kubernetes_jobs_scrape_exactly_the_metrics_ports_of_deploy_k8s() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(CONFIG)["scrape_configs"] if "kubernetes_sd_configs" in job}
    expected = {"geogate-gateway": {"gateway"}, "geogate-node": {"node-blue", "node-green"}}
    assert set(jobs) == set(expected)
    for name, job in jobs.items():
        kept = {}
        for workload, template, meta in _pod_targets():
            if _selected(job, template["metadata"].get("labels", {})):
                target = _relabel(meta, job.get("relabel_configs", []))
                if target is not None:
                    kept.setdefault(workload, []).append((template, target))
        assert set(kept) == expected[name], f"{name} scrapes {sorted(kept)}"
        for workload, found in kept.items():
            assert len(found) == 1, f"{name} scrapes {len(found)} ports of {workload}"
            template, target = found[0]
            # The pods' own prometheus.io/* annotations state port, scheme and path too.
            notes = template["metadata"].get("annotations", {})
            assert target["__address__"].endswith(":" + notes["prometheus.io/port"]), (workload, target)
            assert job.get("scheme", "http") == notes.get("prometheus.io/scheme", "http"), workload
            assert job.get("metrics_path", "/metrics") == notes["prometheus.io/path"], workload
            assert target["namespace"] == "geogate-cn-east" and target["pod"].startswith(workload)


def test_static_example_uses_the_default_ports() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(CONFIG)["scrape_configs"] if "static_configs" in job}
    ports = {name: {t.rsplit(":", 1)[1] for sc in job["static_configs"] for t in sc["targets"]}
             for name, job in jobs.items()}
    assert "8080" in ports["geogate-gateway-static"] and ports["geogate-node-static"] == {"8081"}
    assert load_yaml(CONFIG)["rule_files"] == ["alerts.yml"]


# ------------------------------------------------------------------------------ (b) real scrapes


@pytest.mark.parametrize("service", ["gateway", "node"])
def test_real_scrapes_pass_promtool_check_metrics(scrapes: dict[str, str], service: str) -> None:
    # Nothing is tolerated: prometheus-client's exposition (counters with _total, units
    # in base units) passes the linter cleanly, so any finding would be about our names.
    result = promtool("check", "metrics", stdin=scrapes[service])
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_the_scoring_call_created_the_labelled_series(scrapes: dict[str, str]) -> None:
    served = r'^geogate_gateway_requests_total\{.*region="cn-east".*route="/v1/similarity".*\} 1\.0$'
    assert re.search(served, scrapes["gateway"], re.MULTILINE)
    assert re.search(r'^geogate_node_items_total\{task="similarity"\} 1\.0$', scrapes["node"], re.MULTILINE)


# ------------------------------------------------------------------------------ (c) names used = names exported


def test_every_alert_names_only_exported_metrics(exposed: tuple[set[str], dict[str, set[str]]]) -> None:
    queries = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules(load_yaml(ALERTS))]
    assert unknown_metrics(queries, exposed[0]) == []
    # Every alert names at least one metric, or the check above proves nothing for it.
    assert all(METRIC_TOKEN.search(expr) for _, expr in queries)


def test_every_panel_names_only_exported_metrics(exposed: tuple[set[str], dict[str, set[str]]]) -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    assert unknown_metrics(queries, exposed[0]) == []
    assert all(METRIC_TOKEN.search(expr) for _, expr in queries)


def test_no_target_label_hides_an_exported_label(exposed: tuple[set[str], dict[str, set[str]]]) -> None:
    # A target label of the same name as a scraped one renames the scraped one to
    # exported_<name>, and every region/color query would silently select nothing.
    exported_labels = set().union(*exposed[1].values())
    for job in load_yaml(CONFIG)["scrape_configs"]:
        added = {rule["target_label"] for rule in job.get("relabel_configs", []) if "target_label" in rule}
        added |= {k for sc in job.get("static_configs", []) for k in sc.get("labels", {})}
        assert not added & exported_labels, (job["job_name"], added & exported_labels)


def test_alerts_are_actionable() -> None:
    rules = alert_rules(load_yaml(ALERTS))
    names = {r["alert"] for r in rules}
    assert {"RegionWithoutHealthyNodes", "RegionColorWithoutHealthyNodes", "HighErrorRate", "P99OverSLO",
            "VersionSkew", "RegistryUnreachable", "RegistrySnapshotStale", "FailoversHappening",
            "CacheHitRatioCollapse", "NodeQueueSaturation", "VersionMismatchFencing",
            "GatewayRetryBudgetExhausted", "ClientLimitsFailOpen", "ClientThrottled"} <= names
    assert len(names) == len(rules), "duplicate alert names"
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: no `for`"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
        assert len(rule["annotations"].get("description", "")) > 80, f"{rule['alert']}: say what to do"
    # The SLO number appears in the expression, the label and the summary: one value.
    slo = next(r for r in rules if r["alert"] == "P99OverSLO")
    threshold = re.search(r">\s*([0-9.]+)\s*$", slo["expr"].strip())
    assert threshold and threshold.group(1) == slo["labels"]["slo_seconds"]
    assert f"{slo['labels']['slo_seconds']} s SLO" in slo["annotations"]["summary"]


def test_dashboard_filters_by_region(exposed: tuple[set[str], dict[str, set[str]]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    region = variables["region"]
    assert region["query"]["query"] == "label_values(geogate_gateway_healthy_nodes, region)"
    assert "region" in exposed[1]["geogate_gateway_healthy_nodes"]
    ids = [p["id"] for p in dashboard["panels"] if p["type"] == "row"] + [p["id"] for _, p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = {row for row, _ in panels(dashboard)}
    assert {"Traffic", "Latency", "Nodes", "Registry and versions", "Failovers", "Cache",
            "Retries, hedges, ejections"} <= rows
    labelled = {name for name, labels in exposed[1].items() if "region" in labels}
    for row, panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # A metric with a region label is filtered by the variable; the traffic and node
            # rows always are (node metrics through geogate_node_model_info's region).
            must = row in ("Traffic", "Nodes") or set(METRIC_TOKEN.findall(expr)) & labelled
            assert not must or "$region" in expr, f"{row} / {panel['title']}: {expr}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = [(w, q) for w, q in dashboard_queries(json.loads(DASHBOARD.read_text(encoding="utf-8")))
               if not q.startswith("label_values(")]
    result = check_rules_file(_as_rules_file(tmp_path, queries))
    assert result.returncode == 0, result.stdout + result.stderr


def _as_rules_file(tmp_path: Path, queries: list[tuple[str, str]]) -> Path:
    """promtool checks PromQL only inside rule files: each query becomes a recording rule."""
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(q)} for i, (_, q) in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, allow_unicode=True))
    return path


# ------------------------------------------------------------------------------ (d) the checks can fail


def test_a_renamed_metric_is_caught(exposed: tuple[set[str], dict[str, set[str]]]) -> None:
    alerts = load_yaml(ALERTS)
    broken = copy.deepcopy(alerts)
    rule = next(r for r in alert_rules(broken) if r["alert"] == "HighErrorRate")
    rule["expr"] = rule["expr"].replace("geogate_gateway_requests_total", "geogate_gateway_requests")
    found = unknown_metrics([(f"alert {r['alert']}", r["expr"]) for r in alert_rules(broken)], exposed[0])
    assert found and all(f.endswith(": geogate_gateway_requests") for f in found)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text = json.dumps(dashboard).replace("geogate_node_queue_depth", "geogate_node_queue_len")
    assert any(f.endswith("geogate_node_queue_len") for f in unknown_metrics(dashboard_queries(json.loads(text)),
                                                                               exposed[0]))


def test_promtool_rejects_broken_files(tmp_path: Path) -> None:
    broken = ALERTS.read_text(encoding="utf-8").replace("sum without (color) (geogate_gateway_healthy_nodes)",
                                                        "sum without (color) (geogate_gateway_healthy_nodes")
    assert broken != ALERTS.read_text(encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    assert check_rules_file(tmp_path / "alerts.yml").returncode != 0
    assert check_rules_file(_as_rules_file(tmp_path, [("x", "rate(geogate_node_items_total[$__rate_interval)")])
                            ).returncode != 0
    # The linter that the real scrapes pass is really on.
    lint = promtool("check", "metrics", stdin="# HELP x_things things\n# TYPE x_things counter\nx_things 1\n")
    assert "_total" in lint.stdout + lint.stderr


def test_relabeling_simulation_drops_what_it_should() -> None:
    job = next(j for j in load_yaml(CONFIG)["scrape_configs"] if j["job_name"] == "geogate-node")
    _, _, meta = next(t for t in _pod_targets() if t[0] == "node-blue")
    assert _relabel(meta, job["relabel_configs"]) is not None
    assert _relabel({**meta, "__meta_kubernetes_pod_container_port_name": "metrics"}, job["relabel_configs"]) is None
    assert _relabel({**meta, "__meta_kubernetes_pod_label_app_kubernetes_io_name": "geogate-nodes"},
                    job["relabel_configs"]) is None
