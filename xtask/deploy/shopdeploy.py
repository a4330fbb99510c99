"""Offline deploy checks for Shop: render, lint, schema and policy tests, checkov.

Run through `cargo xtask render` and `cargo xtask deploy-check`, which create the virtualenv
(target/deploy-venv) with the pinned tools of requirements.txt. Everything here works without
a cluster, a helm binary or network access:

- rendering and linting use Helm's own Go engine (helm-python-sdk);
- core kinds are validated strictly against the Kubernetes 1.30 schemas (kubernetes-validate);
- CRDs (Argo CD, prometheus-operator, Strimzi) and skaffold.yaml against the JSON schemas in
  xtask/deploy/schemas/ (a copy of the project's shared schemas);
- our own policies (every workload restricted, probed, sized, pinned; prod has HPA, PDB,
  ServiceMonitor, PrometheusRule and NetworkPolicies for every service);
- checkov on the rendered prod manifests, with 0 failed checks allowed;
- `promtool test rules` on every rendered PrometheusRule (alerttests.py): each alert fires
  on a series that should page and stays silent on one that should not.

`selftest` breaks a copy of the charts on purpose, one way at a time, and proves each break
makes the check fail.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import alerttests
import helm_python
import jsonschema
import kubernetes_validate
import yaml

SERVICES = ["user", "product", "cart", "order", "payment", "notification"]
DATABASE_SERVICES = ["user", "product", "order", "payment", "notification"]
ENVIRONMENTS = ["dev", "staging", "prod"]
KUBERNETES_VERSION = "1.30.0"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
MIN_REPLICAS = {"dev": 1, "staging": 2, "prod": 3}


@dataclass
class Manifest:
    """One rendered object and where it came from."""

    release: str
    template: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "?")

    @property
    def name(self) -> str:
        return self.obj.get("metadata", {}).get("name", "?")

    def label(self) -> str:
        return f"{self.release}: {self.kind}/{self.name} ({self.template})"


@dataclass
class Report:
    """The findings of one check run; empty means it passed."""

    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)


# ---------------------------------------------------------------------------------------------
# Values and rendering


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        document = yaml.safe_load(handle)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a values file must be a mapping")
    return document


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of -f files: maps merge key by key, anything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def value_files(root: Path, env: str, service: str) -> list[Path]:
    """The values files, in order, exactly as the ApplicationSet and skaffold.yaml list them."""
    return [
        root / "helm" / "services" / f"{service}.yaml",
        root / "argocd" / "envs" / env / "values.yaml",
        root / "argocd" / "envs" / env / f"{service}.yaml",
    ]


def releases(root: Path, env: str) -> list[tuple[str, Path, dict[str, Any]]]:
    """(release, chart, user values) for every release of `env`."""
    found = []
    if env == "dev":
        found.append(("dev-infra", root / "helm" / "shop-dev-infra", {}))
    for service in SERVICES:
        values: dict[str, Any] = {}
        for path in value_files(root, env, service):
            values = merge(values, load_yaml(path))
        found.append((service, root / "helm" / "shop-service", values))
    if env == "staging":
        found.append(("loadtest", root / "helm" / "shop-loadtest", load_yaml(root / "argocd" / "envs" / env / "loadtest.yaml")))
    return found


def render_release(chart_dir: Path, release: str, namespace: str, values: dict[str, Any]) -> list[Manifest]:
    with helm_python.Chart.load(chart_dir) as chart:
        merged = chart.merge_values(values)
        chart.validate_schema(merged)
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    manifests = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise ValueError(f"{release}: {template} rendered something that is not an object")
            manifests.append(Manifest(release, template, document))
    return manifests


def render_env(root: Path, env: str, image: dict[str, Any] | None = None) -> list[Manifest]:
    """Every object of `env`; `image` (tag, digest) replaces each service's image reference."""
    manifests = []
    for release, chart_dir, values in releases(root, env):
        if image is not None and chart_dir.name == "shop-service":
            values = merge(values, {"image": image})
        manifests.extend(render_release(chart_dir, release, f"shop-{env}", values))
    return manifests


#: The image references Skaffold and CI produce, besides the committed `sha-<7>` tags: CI's
#: `sha-<40>`, Skaffold's local image id with `push: false` (64 hex characters), and a tag
#: pinned by digest.
TAG_FORMS = {
    "sha-<40>": {"tag": "sha-" + "0123456789abcdef0123456789abcdef01234567"},
    "a 64-hex local image id": {"tag": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
    "<tag>@sha256:<digest>": {
        "tag": "sha-0123456",
        "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    },
}

_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_problems(labels: dict[str, Any]) -> list[str]:
    """What the API server would refuse in a label map (apimachinery's validation rules)."""
    problems = []
    for key, value in (labels or {}).items():
        prefix, _, name = str(key).rpartition("/")
        if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
            problems.append(f"label key {key!r}: the prefix must be a DNS subdomain of at most 253 characters")
        if not name or len(name) > 63 or not _LABEL_NAME.match(name):
            problems.append(f"label key {key!r}: the name must be 1 to 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends")
        text = "" if value is None else str(value)
        if len(text) > 63 or not _LABEL_VALUE.match(text):
            problems.append(f"label {key}={text!r}: a value must be at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends")
    return problems


def _label_maps(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every label map of an object: its own, its pod template's, its selector's."""
    maps = [("metadata.labels", obj.get("metadata", {}).get("labels") or {})]
    spec = obj.get("spec") or {}
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}
    maps.append(("pod template labels", (template.get("metadata") or {}).get("labels") or {}))
    selector = spec.get("selector")
    if isinstance(selector, dict):
        maps.append(("selector", selector.get("matchLabels") or (selector if obj.get("kind") == "Service" else {})))
    return maps


def check_labels(where: str, manifests: list[Manifest], report: Report) -> None:
    for manifest in manifests:
        for place, labels in _label_maps(manifest.obj):
            for problem in label_problems(labels):
                report.fail(f"{where}/{manifest.label()} {place}: {problem}")


#: What each third-party image the charts run writes at run time, read from its upstream
#: Dockerfile and entrypoint (the findings are written next to each template too). With a
#: read-only root filesystem, each path needs a writable mount at it or above it.
IMAGE_WRITES: dict[str, list[str]] = {
    # apache/kafka (docker/jvm/Dockerfile, docker/resources/common-scripts/configure): the
    # configure step requires /opt/kafka/config/ writable and writes server.properties,
    # log4j.properties and tools-log4j.properties there; data in KAFKA_LOG_DIRS; logs in
    # /opt/kafka/logs.
    "docker.io/apache/kafka": ["/opt/kafka/config", "/var/lib/kafka/data", "/opt/kafka/logs", "/tmp"],
    # postgres (docker-library/postgres docker-entrypoint.sh): initdb into PGDATA, the socket
    # and lock in /var/run/postgresql.
    "docker.io/library/postgres": ["/var/lib/postgresql/data", "/var/run/postgresql"],
    # redis (docker-library/redis): `dir /data` is the working directory.
    "docker.io/library/redis": ["/data"],
}


def check_images(env: str, manifests: list[Manifest], report: Report) -> None:
    for manifest in manifests:
        if manifest.kind not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(manifest.obj)
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            image = str(container.get("image", ""))
            writes = next((paths for repository, paths in IMAGE_WRITES.items() if image.startswith(repository + ":")), None)
            read_only = (container.get("securityContext") or {}).get("readOnlyRootFilesystem")
            if writes is None or not read_only:
                continue
            mounts = [str(mount.get("mountPath", "")).rstrip("/") for mount in container.get("volumeMounts") or []]
            for path in writes:
                if not any(path == mount or path.startswith(mount + "/") for mount in mounts):
                    report.fail(
                        f"{env}/{manifest.label()} container {container.get('name')}: {image} writes {path}, "
                        "which no volumeMount makes writable (the root filesystem is read-only)"
                    )


def check_tag_forms(root: Path, env: str, report: Report) -> None:
    """Renders `env` with each image reference Skaffold and CI produce, and checks what the
    API server would check of the labels."""
    for form, image in TAG_FORMS.items():
        try:
            manifests = render_env(root, env, image)
        except (helm_python.HelmError, ValueError, yaml.YAMLError) as error:
            report.fail(f"{env} with {form}: render failed: {error}")
            continue
        check_labels(f"{env} with {form}", manifests, report)


def write_manifests(manifests: list[Manifest], out: Path) -> int:
    """One file per object: <out>/<release>/<kind>-<name>.yaml."""
    if out.exists():
        shutil.rmtree(out)
    for manifest in manifests:
        directory = out / manifest.release
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{manifest.kind.lower()}-{manifest.name}.yaml"
        if path.exists():
            raise ValueError(f"two objects would be written to {path}")
        path.write_text(yaml.safe_dump(manifest.obj, sort_keys=False))
    return len(manifests)


# ---------------------------------------------------------------------------------------------
# Checks


def check_lint(root: Path, env: str, report: Report) -> None:
    for release, chart_dir, values in releases(root, env):
        result = helm_python.lint(
            chart_dir, values, strict=True, namespace=f"shop-{env}", kube_version=f"v{KUBERNETES_VERSION}"
        )
        for message in result.get("messages", []):
            if message.get("severity", 0) >= 2:
                report.fail(f"{env}/{release}: helm lint: {message.get('path')}: {message.get('error')}")
        for error in result.get("errors", []):
            report.fail(f"{env}/{release}: helm lint: {error}")


def crd_schema(api_version: str, kind: str) -> Path | None:
    if "/" not in api_version:
        return None
    group, version = api_version.split("/", 1)
    if "." not in group:
        return None
    path = SCHEMAS / "crds" / f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    return path if path.exists() else None


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Strict validation of one object: a CRD against our schemas, the rest against k8s 1.30."""
    api_version = document.get("apiVersion", "")
    kind = document.get("kind", "")
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    if "." in group and group not in {"networking.k8s.io", "policy", "autoscaling", "apps", "batch"}:
        path = crd_schema(api_version, kind)
        if path is None:
            return [f"no schema for {api_version} {kind}: add it to xtask/deploy/schemas/crds"]
        validator = jsonschema.Draft7Validator(json.loads(path.read_text()))
        return [f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}" for error in validator.iter_errors(document)]
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.path))}: {error.message[:300]}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{api_version} {kind} does not exist in Kubernetes {KUBERNETES_VERSION}"]
    return []


def check_schemas(env: str, manifests: list[Manifest], report: Report) -> None:
    for manifest in manifests:
        for error in schema_errors(manifest.obj):
            report.fail(f"{env}/{manifest.label()}: {error}")


def check_repo_files(root: Path, report: Report) -> None:
    """skaffold.yaml and the Argo CD files against their schemas, and against each other."""
    skaffold = load_yaml(root / "skaffold.yaml")
    if skaffold.get("apiVersion") != "skaffold/v4beta14":
        report.fail(f"skaffold.yaml: apiVersion is {skaffold.get('apiVersion')!r}, expected skaffold/v4beta14")
    validator = jsonschema.Draft7Validator(json.loads((SCHEMAS / "skaffold" / "v4beta14.json").read_text()))
    for error in validator.iter_errors(skaffold):
        report.fail(f"skaffold.yaml: {error.message[:300]}")
    for path in sorted((root / "argocd").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                for error in schema_errors(document):
                    report.fail(f"{path.relative_to(root)}: {document.get('kind')}: {error}")
    check_skaffold_matches_argocd(root, skaffold, report)


def skaffold_releases(skaffold: dict[str, Any], env: str) -> list[dict[str, Any]]:
    profile = next((p for p in skaffold.get("profiles", []) if p.get("name") == env), None)
    if profile is None:
        return []
    for patch in profile.get("patches", []):
        if patch.get("path") == "/deploy/helm/releases":
            return patch.get("value", [])
    return skaffold.get("deploy", {}).get("helm", {}).get("releases", [])


def check_skaffold_matches_argocd(root: Path, skaffold: dict[str, Any], report: Report) -> None:
    """`skaffold render -p <env>` must give what Argo CD applies: same charts, values, order."""
    appset = load_yaml(root / "argocd" / "applicationset.yaml")
    source = appset["spec"]["template"]["spec"]["source"]
    for env in ENVIRONMENTS:
        by_name = {release.get("name"): release for release in skaffold_releases(skaffold, env)}
        extra = {"dev": {"dev-infra"}, "staging": {"loadtest"}}.get(env, set())
        expected = extra | set(SERVICES)
        if set(by_name) != expected:
            report.fail(f"skaffold.yaml profile {env}: releases {sorted(by_name)}, expected {sorted(expected)}")
            continue
        for service in SERVICES:
            release = by_name[service]
            argo_files = [
                str((Path(source["path"]) / f.replace("{{ .service }}", service).replace("{{ .env }}", env)))
                for f in source["helm"]["valueFiles"]
            ]
            argo_files = [str(Path(*_normalise(Path(f).parts))) for f in argo_files]
            if release.get("valuesFiles") != argo_files:
                report.fail(f"skaffold.yaml {env}/{service}: valuesFiles {release.get('valuesFiles')} != Argo CD's {argo_files}")
            if release.get("chartPath") != source["path"]:
                report.fail(f"skaffold.yaml {env}/{service}: chartPath {release.get('chartPath')} != Argo CD's {source['path']}")
            if release.get("namespace") != f"shop-{env}":
                report.fail(f"skaffold.yaml {env}/{service}: namespace {release.get('namespace')} != shop-{env}")
            for path in value_files(root, env, service):
                if not path.exists():
                    report.fail(f"{path.relative_to(root)} is missing")


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            out.pop()
        elif part != ".":
            out.append(part)
    return out


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


IMAGE_PINNED = re.compile(r"^[^\s:@]+(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?(@sha256:[a-f0-9]{64})?$")


def check_workload(env: str, manifest: Manifest, report: Report) -> None:
    """Restricted, probed, sized, pinned."""
    where = f"{env}/{manifest.label()}"
    spec = pod_spec(manifest.obj)
    pod_security = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        report.fail(f"{where}: automountServiceAccountToken must be false")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        report.fail(f"{where}: host namespaces are not allowed")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name = f"{where} container {container.get('name')}"
        security = container.get("securityContext", {})
        image = container.get("image", "")
        if not IMAGE_PINNED.match(image) or ("@" not in image and ":" not in image.rsplit("/", 1)[-1]):
            report.fail(f"{name}: image {image!r} is not pinned to a tag or digest")
        if image.rsplit("/", 1)[-1].split("@")[0].endswith(":latest"):
            report.fail(f"{name}: image {image!r} uses latest")
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            report.fail(f"{name}: runAsNonRoot is not set")
        if security.get("allowPrivilegeEscalation") is not False:
            report.fail(f"{name}: allowPrivilegeEscalation must be false")
        if security.get("privileged"):
            report.fail(f"{name}: privileged")
        if security.get("readOnlyRootFilesystem") is not True:
            report.fail(f"{name}: readOnlyRootFilesystem must be true")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            report.fail(f"{name}: capabilities must drop ALL")
        if security.get("capabilities", {}).get("add"):
            report.fail(f"{name}: adds capabilities")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {})).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            report.fail(f"{name}: seccompProfile must be RuntimeDefault")
        resources = container.get("resources", {})
        for key in ("cpu", "memory"):
            if key not in resources.get("requests", {}):
                report.fail(f"{name}: no {key} request")
        if "memory" not in resources.get("limits", {}):
            report.fail(f"{name}: no memory limit")
        if manifest.kind in {"Deployment", "StatefulSet", "DaemonSet"}:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in container:
                    report.fail(f"{name}: no {probe}")
            if manifest.release in SERVICES:
                if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                    report.fail(f"{name}: the liveness probe must GET /healthz")
                if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                    report.fail(f"{name}: the readiness probe must GET /readyz")
                check_shutdown_deadline(name, spec, container, report)


def _seconds(text: str) -> float | None:
    """A HumanDuration (`20s`, `500ms`, `1m`) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m)", text.strip())
    if not match:
        return None
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def check_shutdown_deadline(name: str, spec: dict[str, Any], container: dict[str, Any], report: Report) -> None:
    """The service's whole stop ends before the kubelet's SIGKILL: its SHUTDOWN_TIMEOUT must be
    shorter than terminationGracePeriodSeconds minus the preStop sleep (the grace period runs
    from the start of the sleep, and SIGTERM comes after it)."""
    env = {item.get("name"): item.get("value") for item in container.get("env", [])}
    timeout = _seconds(str(env.get("SHUTDOWN_TIMEOUT") or ""))
    if timeout is None:
        report.fail(f"{name}: the chart must set SHUTDOWN_TIMEOUT (shutdownTimeoutSeconds)")
        return
    grace = spec.get("terminationGracePeriodSeconds", 30)
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if not timeout < grace - sleep:
        report.fail(
            f"{name}: shutdown deadline < terminationGracePeriodSeconds - preStopSleepSeconds does not hold "
            f"({timeout:g}s >= {grace}s - {sleep}s)"
        )


def check_policies(env: str, manifests: list[Manifest], report: Report) -> None:
    by_release: dict[str, list[Manifest]] = {}
    for manifest in manifests:
        by_release.setdefault(manifest.release, []).append(manifest)
        if manifest.kind in WORKLOAD_KINDS:
            check_workload(env, manifest, report)
        if manifest.kind == "Service":
            for port in manifest.obj.get("spec", {}).get("ports", []):
                if not port.get("name"):
                    report.fail(f"{env}/{manifest.label()}: every port needs a name (protocol detection)")
    for service in SERVICES:
        objects = by_release.get(service, [])
        kinds: dict[str, list[Manifest]] = {}
        for manifest in objects:
            kinds.setdefault(manifest.kind, []).append(manifest)
        where = f"{env}/{service}"
        for kind in ("Deployment", "Service", "ServiceAccount", "ConfigMap", "NetworkPolicy"):
            if kind not in kinds:
                report.fail(f"{where}: no {kind}")
        deployment = kinds.get("Deployment", [None])[0]
        policies = kinds.get("NetworkPolicy", [])
        if not any(
            not p.obj["spec"].get("ingress") and not p.obj["spec"].get("egress")
            and set(p.obj["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            for p in policies
        ):
            report.fail(f"{where}: no default-deny NetworkPolicy")
        if not any(_allows_dns(p.obj) for p in policies):
            report.fail(f"{where}: no NetworkPolicy allows DNS")
        if service in DATABASE_SERVICES:
            jobs = kinds.get("Job", [])
            if not jobs:
                report.fail(f"{where}: no migration Job")
            for job in jobs:
                annotations = job.obj["metadata"].get("annotations", {})
                if annotations.get("argocd.argoproj.io/hook") != "PreSync" or "pre-upgrade" not in annotations.get("helm.sh/hook", ""):
                    report.fail(f"{where}: the migration Job must be a PreSync / pre-upgrade hook")
        if deployment is None:
            continue
        replicas = deployment.obj["spec"].get("replicas")
        hpa = kinds.get("HorizontalPodAutoscaler", [])
        floor = hpa[0].obj["spec"].get("minReplicas", 1) if hpa else replicas or 1
        if floor < MIN_REPLICAS[env]:
            report.fail(f"{where}: {floor} replicas, {env} needs at least {MIN_REPLICAS[env]}")
        if env == "dev" and (replicas or 0) != 1:
            report.fail(f"{where}: dev runs one replica")
        if env == "prod":
            for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"):
                if kind not in kinds:
                    report.fail(f"{where}: prod needs a {kind}")
            if hpa:
                metrics = {metric.get("type") for metric in hpa[0].obj["spec"].get("metrics", [])}
                if "Resource" not in metrics or not metrics & {"Pods", "External", "Object"}:
                    report.fail(f"{where}: the HPA must scale on CPU and a custom metric")
            pdbs = kinds.get("PodDisruptionBudget", [])
            if pdbs and "minAvailable" not in pdbs[0].obj["spec"]:
                report.fail(f"{where}: the prod PDB must set minAvailable")
            spread = pod_spec(deployment.obj).get("topologySpreadConstraints", [])
            if not any(c.get("topologyKey") == "topology.kubernetes.io/zone" and c.get("whenUnsatisfiable") == "DoNotSchedule" for c in spread):
                report.fail(f"{where}: prod pods must spread across zones (DoNotSchedule)")
    if env != "dev":
        topics = {m.obj["spec"].get("topicName", m.name) for m in manifests if m.kind == "KafkaTopic"}
        for topic in sorted(t for t in topics if not t.endswith(".dlq")):
            if f"{topic}.dlq" not in topics:
                report.fail(f"{env}: topic {topic} has no .dlq twin")
        for expected in ("user", "product", "order", "payment", "notification"):
            if f"shop.{expected}.v1" not in topics:
                report.fail(f"{env}: no KafkaTopic for shop.{expected}.v1")
        if not any(m.kind == "ConfigMap" and m.obj["metadata"].get("labels", {}).get("grafana_dashboard") for m in manifests):
            report.fail(f"{env}: no Grafana dashboard ConfigMap")


def _allows_dns(policy: dict[str, Any]) -> bool:
    for rule in policy.get("spec", {}).get("egress", []) or []:
        if any(port.get("port") == 53 for port in rule.get("ports", [])):
            return True
    return False


def check_checkov(manifests: list[Manifest], venv_bin: Path, report: Report) -> str:
    with tempfile.TemporaryDirectory(prefix="shop-checkov-") as directory:
        write_manifests(manifests, Path(directory) / "prod")
        checkov = venv_bin / "checkov"
        result = subprocess.run(
            [str(checkov), "--quiet", "--compact", "--framework", "kubernetes", "-o", "json", "-d", directory],
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        output = json.loads(result.stdout)
    except json.JSONDecodeError:
        report.fail(f"checkov did not run: {result.stderr.strip()[-2000:]}")
        return "checkov: did not run"
    runs = output if isinstance(output, list) else [output]
    passed = failed = skipped = 0
    for run in runs:
        summary = run.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0)
        skipped += summary.get("skipped", 0)
        for check in run.get("results", {}).get("failed_checks", []):
            report.fail(f"checkov {check.get('check_id')} ({check.get('check_name')}): {check.get('resource')} in {Path(check.get('file_path', '')).as_posix()}")
        for check in run.get("results", {}).get("skipped_checks", []):
            if not (check.get("check_result", {}).get("suppress_comment") or "").strip():
                report.fail(f"checkov {check.get('check_id')} is skipped without a reason on {check.get('resource')}")
    return f"checkov on prod: {passed} passed, {failed} failed, {skipped} skipped (each with its reason)"


def check_alerts(env: str, manifests: list[Manifest], promtool: Path, report: Report) -> str:
    rules = [manifest.obj for manifest in manifests if manifest.kind == "PrometheusRule"]
    cases = 0
    for rule in rules:
        passed, output, count = alerttests.run_promtool(promtool, rule)
        cases += count
        if not passed:
            report.fail(f"{env}: promtool test rules for {rule['metadata']['name']}: {output[-1500:]}")
    return f"{env}: promtool: {cases} test cases on {len(rules)} PrometheusRules"


def run_checks(
    root: Path,
    venv_bin: Path | None,
    quiet: bool = False,
    promtool: Path | None = None,
    alerts: bool = True,
    tag_forms: bool = True,
) -> Report:
    report = Report()
    say = (lambda *_: None) if quiet else (lambda message: print(message, flush=True))
    promtool = promtool or alerttests.ensure_promtool(root)
    check_repo_files(root, report)
    say(f"skaffold.yaml and argocd/: {'ok' if not report.failures else 'FAILED'}")
    for env in ENVIRONMENTS:
        before = len(report.failures)
        check_lint(root, env, report)
        try:
            manifests = render_env(root, env)
        except (helm_python.HelmError, ValueError, yaml.YAMLError) as error:
            report.fail(f"{env}: render failed: {error}")
            continue
        check_schemas(env, manifests, report)
        check_policies(env, manifests, report)
        check_labels(env, manifests, report)
        check_images(env, manifests, report)
        if tag_forms:
            check_tag_forms(root, env, report)
        say(f"{env}: {len(manifests)} objects rendered, lint + schemas + policies + labels + image paths{' + tag forms' if tag_forms else ''} {'ok' if len(report.failures) == before else 'FAILED'}")
        if alerts:
            say(check_alerts(env, manifests, promtool, report))
        if env == "prod" and venv_bin is not None:
            say(check_checkov(manifests, venv_bin, report))
    return report


# ---------------------------------------------------------------------------------------------
# Self-test: each deliberate break must make the check fail.


def _edit(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / relative
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"selftest: {old!r} is not in {relative}; update the selftest")
        path.write_text(text.replace(old, new, 1))

    return apply


BREAKS: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "the readiness probe removed",
        _edit("helm/shop-service/templates/deployment.yaml", "          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: http\n", "          readinessProbe:\n            tcpSocket:\n              port: http\n"),
        "readiness probe must GET /readyz",
    ),
    (
        "replicas given as a string",
        _edit("argocd/envs/prod/values.yaml", "replicas: 3\n", "replicas: three\n"),
        "render failed",
    ),
    (
        "an unknown values key",
        _edit("argocd/envs/staging/values.yaml", "replicas: 2\n", "replicas: 2\nreplica: 2\n"),
        "render failed",
    ),
    (
        "the image tag set to latest",
        _edit("argocd/envs/prod/order.yaml", 'tag: "', 'tag: "latest" # '),
        "render failed",
    ),
    (
        "a writable root filesystem",
        _edit("helm/shop-service/templates/_helpers.tpl", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
        "readOnlyRootFilesystem must be true",
    ),
    (
        "the prod PDB turned off",
        _edit("argocd/envs/prod/values.yaml", "pdb:\n  enabled: true", "pdb:\n  enabled: false"),
        "prod needs a PodDisruptionBudget",
    ),
    (
        "a field Kubernetes does not know",
        _edit("helm/shop-service/templates/service.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n  loadBalancerClassName: x\n"),
        "spec",
    ),
    (
        "a wrongly typed Strimzi field",
        _edit("helm/shop-service/templates/kafkatopics.yaml", "partitions: {{ $topic.partitions }}", "partitions: \"{{ $topic.partitions }}\""),
        "partitions",
    ),
    (
        "skaffold drifting from Argo CD",
        _edit("skaffold.yaml", "argocd/envs/prod/values.yaml", "argocd/envs/staging/values.yaml"),
        "valuesFiles",
    ),
    (
        "a shutdown deadline past the kubelet's SIGKILL",
        _edit("helm/shop-service/values.yaml", "shutdownTimeoutSeconds: 20\n", "shutdownTimeoutSeconds: 26\n"),
        "shutdown deadline < terminationGracePeriodSeconds - preStopSleepSeconds",
    ),
    (
        "a fast burn-rate alert that waits two hours",
        _edit("helm/shop-service/templates/prometheusrule.yaml", "          for: 2m\n", "          for: 2h\n"),
        "promtool test rules",
    ),
    (
        "probes counted as users' requests",
        _edit("helm/shop-service/templates/prometheusrule.yaml", '"/healthz|/readyz|/metrics|/grpc.health.v1.Health/.+"', '"/nothing"'),
        "promtool test rules",
    ),
    (
        "5xx no longer counted as errors",
        _edit("helm/shop-service/templates/prometheusrule.yaml", 'status=~"5.."', 'status=~"4.."'),
        "promtool test rules",
    ),
    (
        "a 64-hex image tag copied whole into a label",
        _edit("helm/shop-service/templates/_helpers.tpl", '.Values.image.tag | trunc 63 | trimSuffix "-" | trimSuffix "." | trimSuffix "_" | quote', ".Values.image.tag | quote"),
        "label app.kubernetes.io/version",
    ),
    (
        "the Kafka config directory read-only again",
        _edit("helm/shop-dev-infra/templates/kafka.yaml", "              mountPath: /opt/kafka/config\n", "              mountPath: /opt/kafka/config/kraft\n"),
        "writes /opt/kafka/config",
    ),
    (
        "the network policies turned off",
        _edit("helm/shop-service/values.yaml", "networkPolicy:\n  enabled: true", "networkPolicy:\n  enabled: false"),
        "no default-deny NetworkPolicy",
    ),
]


def selftest(root: Path) -> int:
    failures = 0
    promtool = alerttests.ensure_promtool(root)
    for description, apply, expected in BREAKS:
        with tempfile.TemporaryDirectory(prefix="shop-deploy-selftest-") as directory:
            copy_root = Path(directory)
            for part in ("helm", "argocd"):
                shutil.copytree(root / part, copy_root / part)
            shutil.copy(root / "skaffold.yaml", copy_root / "skaffold.yaml")
            apply(copy_root)
            # promtool only where the break is in the alerts: it is the slow part.
            report = run_checks(
                copy_root, venv_bin=None, quiet=True, promtool=promtool, alerts="promtool" in expected, tag_forms="label" in expected
            )
        caught = [failure for failure in report.failures if expected in failure]
        if caught:
            print(f"selftest: {description}: caught ({caught[0][:160]})")
        else:
            failures += 1
            print(f"selftest: {description}: NOT caught (expected {expected!r}; got {report.failures[:3]})")
    print(f"selftest: {len(BREAKS) - failures} of {len(BREAKS)} deliberate breaks caught")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(prog="shopdeploy")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write the manifests Argo CD applies for an environment")
    render.add_argument("--env", choices=ENVIRONMENTS, required=True)
    render.add_argument("--out", type=Path, required=True)
    check = commands.add_parser("check", help="lint, render, validate and police every environment")
    check.add_argument("--no-checkov", action="store_true")
    commands.add_parser("selftest", help="prove that deliberate breaks fail the check")
    arguments = parser.parse_args()
    root = arguments.root.resolve()
    helm_python.disable_logging()
    if arguments.command == "render":
        try:
            manifests = render_env(root, arguments.env)
        except (helm_python.HelmError, ValueError, yaml.YAMLError) as error:
            print(f"render of {arguments.env} failed: {error}", file=sys.stderr)
            return 1
        count = write_manifests(manifests, arguments.out)
        print(f"{arguments.env}: wrote {count} objects under {arguments.out}")
        return 0
    if arguments.command == "check":
        venv_bin = None if arguments.no_checkov else Path(sys.executable).parent
        report = run_checks(root, venv_bin)
        for failure in report.failures:
            print(f"  FAIL {failure}")
        print(f"deploy-check: {'passed' if not report.failures else f'{len(report.failures)} problems'}")
        return 1 if report.failures else 0
    return selftest(root)


if __name__ == "__main__":
    sys.exit(main())
