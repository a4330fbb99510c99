"""Local observability: Prometheus scraping the six services with the chart's own rules and
alerts, and a check that every Grafana dashboard panel's query works against it.

- `observe.py start --dir D --port P --targets user=127.0.0.1:8081,...` writes a Prometheus
  configuration under D (a scrape job per service, labelled as the chart's ServiceMonitor
  labels it in Kubernetes: `job=<service>`, `namespace=shop-local`; the PrometheusRule the
  chart renders for each service with that namespace) and then becomes Prometheus (exec),
  listening on 127.0.0.1:P, so the caller stops it like any child process. Prometheus is
  Debian's `prometheus` package, unpacked into target/tools as for promtool.
  `cargo xtask up --observe` runs it beside the services.
- `observe.py check-dashboard --url U` evaluates every panel query of every dashboard the
  chart ships (helm/shop-service/dashboards/), for each service, with the dashboard's
  variables filled in (`$namespace`, `$service`, `$__rate_interval`), and fails when a query
  is refused or names a metric Prometheus has never scraped. `cargo xtask test` runs it
  against the k6 smoke's instance once the smoke has put traffic through it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

import alerttests
import shopdeploy

NAMESPACE = "shop-local"
#: What Grafana's `$__rate_interval` becomes: four scrape intervals, at least a minute.
RATE_INTERVAL = "1m"
SCRAPE_INTERVAL = "2s"


def write_config(root: Path, directory: Path, targets: dict[str, str]) -> Path:
    """prometheus.yml and one rules file per service, under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    rule_files = []
    for service, _ in targets.items():
        # prod's values and image, as its Application renders them (release.yaml).
        values = next(values for release, _, values in shopdeploy.releases(root, "prod") if release == service)
        manifests = shopdeploy.render_release(root / "helm" / "shop-service", service, NAMESPACE, values)
        for manifest in manifests:
            if manifest.kind == "PrometheusRule":
                path = directory / f"rules-{service}.yaml"
                path.write_text(yaml.safe_dump({"groups": manifest.obj["spec"]["groups"]}, sort_keys=False))
                rule_files.append(str(path))
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": service,
                "static_configs": [{"targets": [address], "labels": {"namespace": NAMESPACE}}],
            }
            for service, address in targets.items()
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(root: Path, directory: Path, port: int, targets: dict[str, str]) -> None:
    """Writes the configuration and becomes Prometheus."""
    prometheus = alerttests.ensure_prometheus_binary(root, "prometheus")
    config = write_config(root, directory, targets)
    arguments = [
        str(prometheus),
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
    print(f"observe: Prometheus on http://127.0.0.1:{port} scraping {', '.join(targets)} with the chart's rules", flush=True)
    os.execv(arguments[0], arguments)


def query(url: str, path: str, parameters: dict[str, str] | None = None) -> Any:
    address = f"{url}{path}" + (f"?{urllib.parse.urlencode(parameters)}" if parameters else "")
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        body = json.load(error)
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel, rows included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return found


#: PromQL words that look like metric names but are not.
_NOT_METRICS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "by", "without", "on",
    "ignoring", "group_left", "group_right", "histogram_quantile", "and", "or", "unless", "bool",
    "offset", "le", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "label_replace",
    "time", "vector", "scalar", "delta", "deriv", "absent", "sum_over_time", "max_over_time",
    "min_over_time", "avg_over_time", "quantile", "stddev", "changes", "resets",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers before `{`, `[` or spaces, that
    are not functions, keywords or label names)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_strings = re.sub(r"\$\w+", "1m", without_strings)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", without_groupings))
    return {name for name in names if name not in _NOT_METRICS and not re.fullmatch(r"\d+[smhdwy]", name)}


def check_dashboard(root: Path, url: str, services: list[str]) -> int:
    """Runs every panel query; 0 when all run and name only metrics that exist."""
    known = set(query(url, "/api/v1/label/__name__/values"))
    namespaces = query(url, "/api/v1/label/namespace/values")
    problems = []
    if NAMESPACE not in namespaces:
        problems.append(f"the dashboard's $namespace query finds {namespaces}, not {NAMESPACE}")
    checked = 0
    for path in sorted((root / "helm" / "shop-service" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for title, expr in panel_queries(dashboard):
            for name in sorted(metric_names(expr) - known):
                problems.append(f"{path.name}: panel {title!r} uses {name}, which no service exports")
            # One service at a time, and "All" (Grafana fills a multi-value variable in as
            # a regex alternation, which only `=~` matches).
            every = f"({'|'.join(services)})"
            choices = [*services, every] if "$service" in expr else [None]
            answered = False
            for service in choices:
                filled = (
                    expr.replace("$namespace", NAMESPACE)
                    .replace("$__rate_interval", RATE_INTERVAL)
                    .replace("$service", service or "")
                )
                try:
                    result = query(url, "/api/v1/query", {"query": filled})["result"]
                    checked += 1
                except ValueError as error:
                    problems.append(f"{path.name}: panel {title!r} ({service or 'all'}): {error}: {filled}")
                    continue
                if service == every and answered and not result:
                    problems.append(f"{path.name}: panel {title!r} shows data for one service but none for All: {filled}")
                answered = answered or bool(result)
    for problem in problems:
        print(f"  FAIL {problem}")
    print(f"observe: {checked} dashboard queries evaluated against Prometheus, {len(problems)} problems")
    return 1 if problems else 0


def wait_for_scrapes(url: str, services: list[str], deadline: float = 60.0) -> None:
    """Until every service's target is up and scraped twice (rates need two samples)."""
    started = time.monotonic()
    while True:
        try:
            targets = query(url, "/api/v1/targets")["activeTargets"]
            up = {t["labels"]["job"] for t in targets if t.get("health") == "up"}
            samples = query(url, "/api/v1/query", {"query": "count_over_time(up[1m])"})
            scraped = {s["metric"]["job"] for s in samples["result"] if float(s["value"][1]) >= 2}
            if set(services) <= up and set(services) <= scraped:
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() - started > deadline:
            raise SystemExit(f"observe: Prometheus did not scrape every service twice within {deadline:.0f} s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(prog="observe")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    commands = parser.add_subparsers(dest="command", required=True)
    start_command = commands.add_parser("start", help="write the configuration and become Prometheus")
    start_command.add_argument("--dir", type=Path, required=True)
    start_command.add_argument("--port", type=int, required=True)
    start_command.add_argument("--targets", required=True, help="service=host:port,...")
    check = commands.add_parser("check-dashboard", help="evaluate every dashboard query")
    check.add_argument("--url", required=True)
    check.add_argument("--services", required=True, help="service,service,...")
    arguments = parser.parse_args()
    root = arguments.root.resolve()
    shopdeploy.helm_python.disable_logging()
    if arguments.command == "start":
        targets = dict(pair.split("=", 1) for pair in arguments.targets.split(","))
        start(root, arguments.dir.resolve(), arguments.port, targets)
        return 1
    services = arguments.services.split(",")
    wait_for_scrapes(arguments.url, services)
    return check_dashboard(root, arguments.url, services)


if __name__ == "__main__":
    sys.exit(main())
