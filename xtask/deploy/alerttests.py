"""Unit tests of the rendered PrometheusRules with `promtool test rules`.

For every PrometheusRule a render produces, this writes its groups as a rules file and a
promtool test file made for that service (its `job` and `namespace`), then runs promtool:

- the SLO recording rules compute the error ratio of a known series, count gRPC answers
  whose code is the server's fault (HTTP 200, `grpc_status` INTERNAL) as errors, and leave
  probes and scrapes out;
- each burn-rate alert fires on a series that burns the budget (half the requests failing,
  or slower than the threshold) and stays silent on a service that spends its budgets
  exactly (burn rate 1); the two alerts of a pair must be built on one budget with the
  workbook's burn rates (14.4 and 6);
- the event alerts (dead letters, consumer lag, a stuck outbox) fire on a series past their
  limit for longer than their `for`, and stay silent below it.

The budgets and the latency bucket are read from the rendered expressions, so a test
follows the values; what it proves is that the expressions select the right series, compare
the right way, burn at the right rates and wait the right time. promtool is Debian's (package `prometheus`): found on
PATH, or unpacked once from the package into target/tools (no service is installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml


def ensure_promtool(root: Path) -> Path:
    """The promtool binary: on PATH, in target/tools, or unpacked there from Debian's package."""
    return ensure_prometheus_binary(root, "promtool")


def ensure_prometheus_binary(root: Path, name: str) -> Path:
    """`promtool` or `prometheus`: on PATH, in target/tools, or unpacked there (both at once)
    from Debian's `prometheus` package."""
    found = shutil.which(name)
    if found:
        return Path(found)
    tools = root / "target" / "tools"
    local = tools / name
    if local.exists():
        return local
    tools.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shop-promtool-") as directory:
        download = ["apt-get", "download", "prometheus"]
        if subprocess.run(download, cwd=directory, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            subprocess.run(download, cwd=directory, capture_output=True, check=True)
        package = next(Path(directory).glob("prometheus_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(Path(directory) / "x")], check=True)
        for binary in ("promtool", "prometheus"):
            shutil.copy(Path(directory) / "x" / "usr" / "bin" / binary, tools / binary)
            (tools / binary).chmod(0o755)
    return local


def _threshold(expr: str) -> float:
    match = re.search(r"[<>]=?\s*([0-9.eE+-]+)", expr)
    if not match:
        raise ValueError(f"no threshold in {expr!r}")
    return float(match.group(1))


def _thresholds(expr: str) -> list[float]:
    return [float(value) for value in re.findall(r"[<>]=?\s*([0-9.eE+-]+)", expr)]


#: The burn rates of the multiwindow alerts (Google SRE workbook, ch. 5): 2 % of a 30-day
#: budget in 1 h, 5 % in 6 h.
BURN_RATES = {"Fast": 14.4, "Slow": 6.0}


def _budget(alerts: dict[str, Any], prefix: str) -> float:
    """The error budget (1 - objective) both alerts of a pair are built on; they must agree,
    and each alert's two windows must share one threshold."""
    budgets = []
    for speed, rate in BURN_RATES.items():
        name = f"{prefix}{speed}"
        thresholds = _thresholds(alerts[name]["expr"])
        if len(set(thresholds)) != 1:
            raise ValueError(f"{name}: its windows have different thresholds {thresholds}")
        budgets.append(thresholds[0] / rate)
    if abs(budgets[0] - budgets[1]) > 1e-9 * max(budgets):
        raise ValueError(f"{prefix}Fast and {prefix}Slow are built on different budgets {budgets} (burn rates 14.4 and 6)")
    return budgets[0]


def _alert(rule: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    """The alert promtool should see: the rule's labels, the series' grouping labels, and its
    annotations as rendered."""
    labels = {**{key: str(value) for key, value in (rule.get("labels") or {}).items()}, **extra}
    return {"exp_labels": labels, "exp_annotations": dict(rule.get("annotations") or {})}


def _counter(per_minute: float, minutes: int) -> str:
    return f"0+{per_minute:g}x{minutes}"


def build_tests(rules: dict[str, Any], job: str, namespace: str) -> list[dict[str, Any]]:
    """promtool test cases for one service's rendered rule groups."""
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    records = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    base = {"job": job, "namespace": namespace}
    selector = f'job="{job}",namespace="{namespace}"'
    tests: list[dict[str, Any]] = []
    minutes = 60

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        rendered = ",".join(f'{key}="{value}"' for key, value in {**base, **labels}.items())
        return {"series": f"{name}{{{rendered}}}", "values": values}

    availability = [alerts[name] for name in ("ShopAvailabilityBudgetBurnFast", "ShopAvailabilityBudgetBurnSlow")]
    latency = [alerts[name] for name in ("ShopLatencyBudgetBurnFast", "ShopLatencyBudgetBurnSlow")]
    error_budget = _budget(alerts, "ShopAvailabilityBudgetBurn")
    latency_budget = _budget(alerts, "ShopLatencyBudgetBurn")
    bucket = re.search(r'le="([^"]+)"', latency[0]["expr"] + "".join(
        rule["expr"] for group in rules["groups"] for rule in group["rules"] if "record" in rule))
    le = bucket.group(1) if bucket else "0.25"

    def requests(error_share: float, slow_share: float) -> list[dict[str, str]]:
        total = 1000.0
        return [
            series("http_requests_total", {"status": "500"}, _counter(total * error_share, minutes)),
            series("http_requests_total", {"status": "200"}, _counter(total * (1 - error_share), minutes)),
            series("http_request_duration_seconds_bucket", {"le": le}, _counter(total * (1 - slow_share), minutes)),
            series("http_request_duration_seconds_bucket", {"le": "+Inf"}, _counter(total, minutes)),
            series("http_request_duration_seconds_count", {}, _counter(total, minutes)),
        ]

    def expect(firing: list[dict[str, Any]], silent: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"eval_time": f"{minutes - 5}m", "alertname": rule["alert"], "exp_alerts": [_alert(rule, base)]} for rule in firing] + [
            {"eval_time": f"{minutes - 5}m", "alertname": rule["alert"], "exp_alerts": []} for rule in silent
        ]

    tests.append({
        "name": f"{job}: half the requests failing burns the availability budget (both alerts), not the latency one",
        "interval": "1m",
        "input_series": requests(0.5, 0.0),
        "alert_rule_test": expect(availability, latency),
        "promql_expr_test": [
            {
                "expr": f"shop:http_request_errors:ratio_rate5m{{{selector}}}",
                "eval_time": "30m",
                "exp_samples": [{"labels": f"shop:http_request_errors:ratio_rate5m{{{selector}}}", "value": 0.5}],
            },
            {
                "expr": f"shop:http_request_slow:ratio_rate1h{{{selector}}}",
                "eval_time": "30m",
                "exp_samples": [{"labels": f"shop:http_request_slow:ratio_rate1h{{{selector}}}", "value": 0}],
            },
        ] if {"shop:http_request_errors:ratio_rate5m", "shop:http_request_slow:ratio_rate1h"} <= records else [],
    })
    # What the autoscaler and the canary read: 600 users' requests a minute are 10 per second
    # (probes left out), and with every request in the first bucket the 99th percentile is
    # 99 % of that bucket's bound.
    tests.append({
        "name": f"{job}: the request rate and the p99 latency that KEDA and the canary's analysis read",
        "interval": "1m",
        "input_series": [
            series("http_requests_total", {"status": "200", "route": "/v1/orders"}, _counter(600, minutes)),
            series("http_requests_total", {"status": "200", "route": "/readyz"}, _counter(600, minutes)),
            series("http_request_duration_seconds_bucket", {"le": le}, _counter(600, minutes)),
            series("http_request_duration_seconds_bucket", {"le": "+Inf"}, _counter(600, minutes)),
        ],
        "promql_expr_test": [
            {
                "expr": f"shop:http_requests:rate2m{{{selector}}}",
                "eval_time": "30m",
                "exp_samples": [{"labels": f"shop:http_requests:rate2m{{{selector}}}", "value": 10}],
            },
            {
                "expr": f"shop:http_request_duration_seconds:p99_rate5m{{{selector}}}",
                "eval_time": "30m",
                "exp_samples": [{"labels": f"shop:http_request_duration_seconds:p99_rate5m{{{selector}}}", "value": 0.99 * float(le)}],
            },
        ],
    }) if {"shop:http_requests:rate2m", "shop:http_request_duration_seconds:p99_rate5m"} <= records else None
    grpc_failures = [
        series("http_requests_total", {"status": "200", "protocol": "grpc", "grpc_status": "INTERNAL"}, _counter(500, minutes)),
        series("http_requests_total", {"status": "200", "protocol": "grpc", "grpc_status": "OK"}, _counter(400, minutes)),
        # A client's mistake is not the server's failure.
        series("http_requests_total", {"status": "200", "protocol": "grpc", "grpc_status": "INVALID_ARGUMENT"}, _counter(100, minutes)),
    ]
    tests.append({
        "name": f"{job}: half the gRPC answers INTERNAL (HTTP 200) burns the availability budget",
        "interval": "1m",
        "input_series": grpc_failures,
        "alert_rule_test": expect(availability, []),
    })
    probes = [
        series("http_requests_total", {"status": "200", "route": "/v1/orders"}, _counter(1000, minutes)),
        # A failing readiness probe (a dependency is away) and scrapes are not users' requests.
        series("http_requests_total", {"status": "503", "route": "/readyz"}, _counter(1000, minutes)),
        series("http_requests_total", {"status": "500", "route": "/metrics"}, _counter(1000, minutes)),
        series("http_request_duration_seconds_bucket", {"le": le, "route": "/v1/orders"}, _counter(1000, minutes)),
        series("http_request_duration_seconds_count", {"route": "/v1/orders"}, _counter(1000, minutes)),
        series("http_request_duration_seconds_bucket", {"le": le, "route": "/readyz"}, _counter(0, minutes)),
        series("http_request_duration_seconds_count", {"route": "/readyz"}, _counter(1000, minutes)),
    ]
    tests.append({
        "name": f"{job}: failing and slow probes and scrapes page no one",
        "interval": "1m",
        "input_series": probes,
        "alert_rule_test": expect([], availability + latency),
    })
    tests.append({
        "name": f"{job}: half the requests slower than {le}s burns the latency budget (both alerts)",
        "interval": "1m",
        "input_series": requests(0.0, 0.5),
        "alert_rule_test": expect(latency, availability),
    })
    tests.append({
        "name": f"{job}: a service spending its budgets exactly (burn rate 1) pages no one",
        "interval": "1m",
        "input_series": requests(error_budget, latency_budget),
        "alert_rule_test": expect([], availability + latency),
    })

    if "ShopEventsDeadLettered" in alerts:
        rule = alerts["ShopEventsDeadLettered"]
        labels = {"consumer": "payment", "outcome": "dead_lettered"}
        tests.append({
            "name": f"{job}: a dead-lettered event alerts at once; none does not",
            "interval": "1m",
            "input_series": [series("events_consumed_total", labels, "0 0 0 0 1 1 1 1 1 1 1")],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": rule["alert"], "exp_alerts": []},
                {"eval_time": "8m", "alertname": rule["alert"], "exp_alerts": [_alert(rule, {**base, "consumer": "payment"})]},
            ],
        })
    if "ShopConsumerLagHigh" in alerts:
        rule = alerts["ShopConsumerLagHigh"]
        limit = _threshold(rule["expr"])
        lagging = {"consumer": "order", "topic": "shop.payment.v1", "partition": "0"}
        tests.append({
            "name": f"{job}: a consumer more than {limit:g} behind for longer than its `for` alerts; one just below does not",
            "interval": "1m",
            "input_series": [
                series("kafka_consumer_lag", lagging, f"{limit * 2:g}+0x30"),
                series("kafka_consumer_lag", {**lagging, "consumer": "cart"}, f"{limit:g}+0x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": rule["alert"], "exp_alerts": [
                    _alert(rule, {**base, "consumer": "order", "topic": "shop.payment.v1"})
                ]},
            ],
        })
    if "ShopOutboxStuck" in alerts:
        rule = alerts["ShopOutboxStuck"]
        limit = _threshold(rule["expr"])
        tests.append({
            "name": f"{job}: an outbox event older than {limit:g}s for longer than its `for` alerts; a young one does not",
            "interval": "1m",
            "input_series": [series("outbox_oldest_event_age_seconds", {}, f"{limit / 2:g}+0x10 {limit * 10:g}+0x20")],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": rule["alert"], "exp_alerts": []},
                {"eval_time": "25m", "alertname": rule["alert"], "exp_alerts": [_alert(rule, base)]},
            ],
        })
    return tests


def run_promtool(promtool: Path, rule: dict[str, Any]) -> tuple[bool, str, int]:
    """Tests one rendered PrometheusRule; (passed, promtool's output, number of test cases)."""
    metadata, spec = rule["metadata"], rule["spec"]
    job, namespace = metadata["name"], metadata.get("namespace", "default")
    try:
        tests = build_tests(spec, job, namespace)
    except (KeyError, ValueError) as error:
        return False, f"cannot build its tests: {error}", 0
    with tempfile.TemporaryDirectory(prefix="shop-promtool-") as directory:
        rules_file = Path(directory) / "rules.yaml"
        rules_file.write_text(yaml.safe_dump({"groups": spec["groups"]}, sort_keys=False))
        test_file = Path(directory) / "test.yaml"
        test_file.write_text(yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "30s", "tests": tests}, sort_keys=False))
        result = subprocess.run([str(promtool), "test", "rules", test_file.name], cwd=directory, capture_output=True, text=True, check=False)
    return result.returncode == 0, (result.stdout + result.stderr).strip(), len(tests)
