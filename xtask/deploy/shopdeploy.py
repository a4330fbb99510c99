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
- what the API server and the controllers check that the schemas do not carry (label and
  annotation syntax and size, object names per kind, port, container, volume and env var
  names), and the references that only meet in a cluster: Service selectors and targetPorts,
  probe ports, NetworkPolicy and PDB selectors, autoscaler targets, volumeMounts, the
  Secret and ConfigMap keys pods read (or docs/deploy.md's table of Secrets made outside
  the charts), the user, ports and writable paths of each third-party image, and the image
  tags committed under argocd/envs/ (CI's `sha-<40>`, a commit of this history);
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
import envchecks
import helm_python
import jsonschema
import kubernetes_validate
import yaml

SERVICES = ["user", "product", "cart", "order", "payment", "notification"]
DATABASE_SERVICES = ["user", "product", "order", "payment", "notification"]
ENVIRONMENTS = ["dev", "staging", "prod"]
KUBERNETES_VERSION = "1.30.0"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
WORKLOAD_KINDS = {"Deployment", "Rollout", "StatefulSet", "DaemonSet", "Job", "CronJob"}
#: A service runs as a Deployment, or as an Argo Rollouts Rollout where the canary is on (prod).
SERVICE_WORKLOADS = {"Deployment", "Rollout"}
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


def release_pins(root: Path, env: str) -> dict[str, Any]:
    """argocd/envs/<env>/release.yaml: the revision and the images the environment runs."""
    return load_yaml(root / "argocd" / "envs" / env / "release.yaml")


def releases(root: Path, env: str) -> list[tuple[str, Path, dict[str, Any]]]:
    """(release, chart, user values) for every Application of `env`, as the ApplicationSets
    make them: the values files, then the image of release.yaml (Helm parameters)."""
    images = release_pins(root, env).get("images") or {}
    found = [("platform", root / "helm" / "shop-env", load_yaml(root / "argocd" / "envs" / env / "platform.yaml"))]
    if env == "dev":
        found.append(("dev-infra", root / "helm" / "shop-dev-infra", {}))
    for service in SERVICES:
        values: dict[str, Any] = {}
        for path in value_files(root, env, service):
            values = merge(values, load_yaml(path))
        values = merge(values, {"image": dict(images.get(service) or {})})
        found.append((service, root / "helm" / "shop-service", values))
    if env == "staging":
        values = merge(load_yaml(root / "argocd" / "envs" / env / "loadtest.yaml"), {"image": dict(images.get("loadtest") or {})})
        found.append(("loadtest", root / "helm" / "shop-loadtest", values))
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


def render_env(root: Path, env: str, image: dict[str, Any] | None = None, services: dict[str, Any] | None = None) -> list[Manifest]:
    """Every object of `env`; `image` (tag, digest) replaces each service's image reference,
    `services` is merged over every service's values."""
    manifests = []
    for release, chart_dir, values in releases(root, env):
        if image is not None and chart_dir.name == "shop-service":
            values = merge(values, {"image": image})
        if services is not None and chart_dir.name == "shop-service":
            values = merge(values, services)
        manifests.extend(render_release(chart_dir, release, f"shop-{env}", values))
    return manifests


#: The image references Skaffold and CI produce, besides the committed `sha-<40>` tags (CI's
#: form): an abbreviated `sha-<7>`, Skaffold's local image id with `push: false` (64 hex
#: characters), and a tag pinned by digest.
TAG_FORMS = {
    "sha-<7>": {"tag": "sha-0123456"},
    "sha-<40>-dirty": {"tag": "sha-0123456789abcdef0123456789abcdef01234567-dirty"},
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
    # Our load-test image: grafana/k6 (alpine, ENTRYPOINT k6) with load-tests/ added; k6
    # writes only the summaries its scenarios export to RESULTS_DIR (/tmp in the chart).
    "ghcr.io/shop-platform/loadtest": ["/tmp"],
}

#: The user each image runs as (its Dockerfile's USER, or the user its entrypoint drops to)
#: and the ports it listens on; the pod must run as that user (the image's files belong to
#: it) and declare those ports.
IMAGE_USERS: dict[str, int] = {
    # apache/kafka: `adduser -h /home/appuser -D --shell /bin/bash appuser` (uid 1000), USER appuser.
    "docker.io/apache/kafka": 1000,
    # postgres:*-alpine: the entrypoint runs as `postgres`, uid 70 on alpine (999 on Debian).
    "docker.io/library/postgres": 70,
    # redis:*-alpine: `adduser -S -G redis -u 999 redis`; the entrypoint drops to it.
    "docker.io/library/redis": 999,
    # grafana/k6: `adduser -D -u 12345 -g 12345 k6`, USER 12345; load-tests/Dockerfile keeps it.
    "ghcr.io/shop-platform/loadtest": 12345,
}
IMAGE_PORTS: dict[str, list[int]] = {
    "docker.io/apache/kafka": [9092],
    "docker.io/library/postgres": [5432],
    "docker.io/library/redis": [6379],
    "ghcr.io/shop-platform/loadtest": [],
}


def check_images(env: str, manifests: list[Manifest], report: Report) -> None:
    for manifest in manifests:
        if manifest.kind not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(manifest.obj)
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            image = str(container.get("image", ""))
            repository = next((r for r in IMAGE_WRITES if image.startswith(r + ":")), None)
            if repository is None:
                continue
            where = f"{env}/{manifest.label()} container {container.get('name')}"
            user = (container.get("securityContext") or {}).get("runAsUser", (spec.get("securityContext") or {}).get("runAsUser"))
            if user != IMAGE_USERS[repository]:
                report.fail(f"{where}: {image} runs as uid {IMAGE_USERS[repository]}, the pod sets runAsUser {user}")
            declared = {port.get("containerPort") for port in container.get("ports") or []}
            for port in IMAGE_PORTS[repository]:
                if port not in declared:
                    report.fail(f"{where}: {image} listens on {port}, which the container does not declare")
            writes = IMAGE_WRITES[repository]
            if not (container.get("securityContext") or {}).get("readOnlyRootFilesystem"):
                continue
            mounts = [str(mount.get("mountPath", "")).rstrip("/") for mount in container.get("volumeMounts") or []]
            for path in writes:
                if not any(path == mount or path.startswith(mount + "/") for mount in mounts):
                    report.fail(f"{where}: {image} writes {path}, which no volumeMount makes writable (the root filesystem is read-only)")


# ---------------------------------------------------------------------------------------------
# What the API server and the controllers check that the JSON schemas do not carry
# (apimachinery's validation package and the core, apps, batch, policy and networking
# validators of Kubernetes 1.30), and references between objects that only meet in a cluster.

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
#: Kubernetes 1.30's IsEnvVarName (relaxed only in 1.34).
_ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
#: apimachinery's TotalAnnotationSizeLimitB: keys and values of one object together.
ANNOTATIONS_MAX_BYTES = 256 * 1024


def dns_label_problem(name: str) -> str | None:
    if len(name) > 63 or not _DNS_LABEL.match(name):
        return "must be a DNS-1123 label (at most 63 lower-case alphanumerics or '-', alphanumeric at both ends)"
    return None


def dns_subdomain_problem(name: str) -> str | None:
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return "must be a DNS-1123 subdomain (at most 253 lower-case alphanumerics, '-' or '.')"
    return None


def object_name_problem(kind: str, name: str) -> str | None:
    """The name rule of each kind: a Service's name becomes a DNS label (RFC 1035: it starts
    with a letter), a Namespace is a DNS-1123 label, a Job's name is copied into its pods'
    `job-name` label (63), a CronJob's gets 11 characters of suffix for its Jobs (52);
    everything else is a DNS-1123 subdomain."""
    if kind == "Service":
        if len(name) > 63 or not _DNS_1035_LABEL.match(name):
            return "a Service name must be a DNS-1035 label (at most 63, starting with a letter)"
        return None
    if kind == "Namespace":
        return dns_label_problem(name)
    problem = dns_subdomain_problem(name)
    if problem:
        return problem
    if kind == "Job" and len(name) > 63:
        return "a Job name longer than 63 does not fit its pods' job-name label"
    if kind == "CronJob" and len(name) > 52:
        return "a CronJob name must be at most 52 characters"
    return None


def port_name_problem(name: str) -> str | None:
    """A container port name is an IANA_SVC_NAME (validation.IsValidPortName)."""
    if not (
        1 <= len(name) <= 15
        and _IANA_SVC_NAME.match(name)
        and "--" not in name
        and any(character.isalpha() for character in name)
    ):
        return f"port name {name!r} must be an IANA service name (1 to 15 lower-case alphanumerics or '-', a letter among them, no '--')"
    return None


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label map; an empty
    selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pod_templates(manifests: list[Manifest]) -> list[tuple[Manifest, dict[str, Any], dict[str, Any]]]:
    """(workload, pod template labels, pod spec) of every workload in the render."""
    found = []
    for manifest in manifests:
        if manifest.kind not in WORKLOAD_KINDS:
            continue
        spec = manifest.obj.get("spec") or {}
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}
        found.append((manifest, (template.get("metadata") or {}).get("labels") or {}, pod_spec(manifest.obj)))
    return found


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def _port_exists(container: dict[str, Any], port: Any) -> bool:
    """A named port must be declared on the container (the kubelet and the endpoints
    controller resolve it there); a number needs no declaration."""
    if isinstance(port, str) and not port.isdigit():
        return any(p.get("name") == port for p in container.get("ports") or [])
    return isinstance(port, int) or (isinstance(port, str) and port.isdigit())


def _data_keys(manifest: Manifest) -> set[str]:
    return set((manifest.obj.get("data") or {})) | set((manifest.obj.get("stringData") or {})) | set(
        manifest.obj.get("binaryData") or {}
    )


def check_api_rules(env: str, manifests: list[Manifest], external: set[tuple[str, str]], report: Report) -> None:
    """Names, ports, env, annotations, and the references between objects of one render."""
    secrets = {m.name: _data_keys(m) for m in manifests if m.kind == "Secret"}
    config_maps = {m.name: _data_keys(m) for m in manifests if m.kind == "ConfigMap"}
    external_names = {name for name, _ in external} if env != "dev" else set()
    templates = pod_templates(manifests)
    seen: dict[tuple[str, str], Manifest] = {}
    for manifest in manifests:
        where = f"{env}/{manifest.label()}"
        if (manifest.kind, manifest.name) in seen:
            report.fail(f"{where}: a second {manifest.kind} named {manifest.name!r} (also from {seen[(manifest.kind, manifest.name)].release})")
        seen[(manifest.kind, manifest.name)] = manifest
        problem = object_name_problem(manifest.kind, manifest.name)
        if problem:
            report.fail(f"{where}: name {manifest.name!r}: {problem}")
        annotation_maps = [("metadata.annotations", manifest.obj.get("metadata", {}).get("annotations") or {})]
        for workload, _, _ in [t for t in templates if t[0] is manifest]:
            spec = workload.obj.get("spec") or {}
            template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}
            annotation_maps.append(("pod template annotations", (template.get("metadata") or {}).get("annotations") or {}))
        for place, annotations in annotation_maps:
            size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
            if size > ANNOTATIONS_MAX_BYTES:
                report.fail(f"{where} {place}: {size} bytes of annotations, the API server accepts {ANNOTATIONS_MAX_BYTES}")
            for key in annotations:
                for problem in label_problems({key: ""}):
                    if "label key" in problem:
                        report.fail(f"{where} {place}: annotation {problem.removeprefix('label ')}")
        if manifest.kind in {"Deployment", "Rollout", "StatefulSet", "DaemonSet"}:
            own = next(labels for workload, labels, _ in templates if workload is manifest)
            if not selector_matches(manifest.obj.get("spec", {}).get("selector"), own):
                report.fail(f"{where}: its selector does not match its own pod template's labels")
        if manifest.kind in WORKLOAD_KINDS:
            check_pod_spec(where, pod_spec(manifest.obj), secrets, config_maps, external, external_names, report)
        if manifest.kind == "Service":
            check_service(where, manifest, templates, report)
        if manifest.kind in {"NetworkPolicy", "PodDisruptionBudget"}:
            selector = manifest.obj.get("spec", {}).get("podSelector" if manifest.kind == "NetworkPolicy" else "selector")
            if not any(selector_matches(selector, labels) for _, labels, _ in templates):
                report.fail(f"{where}: its selector {selector} matches no pod of the render")
        if manifest.kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = manifest.obj.get("spec", {}).get("scaleTargetRef") or {}
            if (target.get("kind"), target.get("name")) not in {(m.kind, m.name) for m in manifests}:
                report.fail(f"{where}: its scale target {target.get('kind')}/{target.get('name')} is not in the render")


def check_service(where: str, service: Manifest, templates: list[tuple[Manifest, dict[str, Any], dict[str, Any]]], report: Report) -> None:
    spec = service.obj.get("spec") or {}
    selector = spec.get("selector")
    if not selector:
        return
    pods = [pod for _, labels, pod in templates if all(labels.get(k) == v for k, v in selector.items())]
    if not pods:
        report.fail(f"{where}: its selector {selector} matches no pod template")
        return
    for port in spec.get("ports") or []:
        name = port.get("name")
        if name and dns_label_problem(name):
            report.fail(f"{where}: Service port name {name!r} {dns_label_problem(name)}")
        target = port.get("targetPort", port.get("port"))
        for pod in pods:
            if not any(_port_exists(container, target) for container in pod.get("containers") or []):
                report.fail(f"{where}: targetPort {target!r} of port {name or port.get('port')} is no container port of the pods it selects")


def check_pod_spec(
    where: str,
    spec: dict[str, Any],
    secrets: dict[str, set[str]],
    config_maps: dict[str, set[str]],
    external: set[tuple[str, str]],
    external_names: set[str],
    report: Report,
) -> None:
    volumes = spec.get("volumes") or []
    volume_names = [volume.get("name", "") for volume in volumes]
    for name in volume_names:
        if dns_label_problem(name):
            report.fail(f"{where}: volume {name!r} {dns_label_problem(name)}")
    if len(set(volume_names)) != len(volume_names):
        report.fail(f"{where}: two volumes share a name ({volume_names})")

    def secret_key(name: str, key: str | None, optional: bool, place: str) -> None:
        if optional:
            return
        if name in secrets:
            if key is not None and key not in secrets[name]:
                report.fail(f"{where} {place}: Secret {name} has no key {key!r} (it has {sorted(secrets[name])})")
            return
        if name in external_names and (key is None or (name, key) in external):
            return
        documented = " (nor does an ExternalSecret or a KafkaUser of the environment make it)"
        report.fail(f"{where} {place}: Secret {name}{f' key {key!r}' if key else ''} is not in the render{documented}")

    def config_map_key(name: str, key: str | None, optional: bool, place: str) -> None:
        if optional:
            return
        if name not in config_maps:
            report.fail(f"{where} {place}: ConfigMap {name} is not in the render")
        elif key is not None and key not in config_maps[name]:
            report.fail(f"{where} {place}: ConfigMap {name} has no key {key!r} (it has {sorted(config_maps[name])})")

    for volume in volumes:
        place = f"volume {volume.get('name')}"
        if "secret" in volume:
            source = volume["secret"]
            items = source.get("items") or [None]
            for item in items:
                secret_key(source.get("secretName", ""), item and item.get("key"), bool(source.get("optional")), place)
        if "configMap" in volume:
            source = volume["configMap"]
            for item in source.get("items") or [None]:
                config_map_key(source.get("name", ""), item and item.get("key"), bool(source.get("optional")), place)
    names = [container.get("name", "") for container in _containers(spec)]
    if len(set(names)) != len(names):
        report.fail(f"{where}: two containers share a name ({names})")
    port_names: list[str] = []
    for container in _containers(spec):
        name = f"{where} container {container.get('name')}"
        if dns_label_problem(container.get("name", "")):
            report.fail(f"{name}: container name {dns_label_problem(container.get('name', ''))}")
        for port in container.get("ports") or []:
            if "name" in port:
                port_names.append(port["name"])
                problem = port_name_problem(port["name"])
                if problem:
                    report.fail(f"{name}: {problem}")
        for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_kind) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                if handler in probe and not _port_exists(container, probe[handler].get("port")):
                    report.fail(f"{name}: the {probe_kind}'s port {probe[handler].get('port')!r} is not a port of the container")
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volume_names:
                report.fail(f"{name}: volumeMount {mount.get('mountPath')} names volume {mount.get('name')!r}, which the pod does not have")
        for item in container.get("env") or []:
            if not _ENV_VAR_NAME.match(item.get("name", "")):
                report.fail(f"{name}: env var name {item.get('name')!r} is not valid (Kubernetes 1.30: [-._a-zA-Z][-._a-zA-Z0-9]*)")
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret_key(ref.get("name", ""), ref.get("key"), bool(ref.get("optional")), f"env {item.get('name')}")
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                config_map_key(ref.get("name", ""), ref.get("key"), bool(ref.get("optional")), f"env {item.get('name')}")
        for item in container.get("envFrom") or []:
            if "secretRef" in item:
                secret_key(item["secretRef"].get("name", ""), None, bool(item["secretRef"].get("optional")), "envFrom")
            if "configMapRef" in item:
                config_map_key(item["configMapRef"].get("name", ""), None, bool(item["configMapRef"].get("optional")), "envFrom")
                for key in config_maps.get(item["configMapRef"].get("name", ""), set()):
                    if not _ENV_VAR_NAME.match(key):
                        report.fail(f"{name}: envFrom ConfigMap key {key!r} is not a valid env var name")
    if len(set(port_names)) != len(port_names):
        report.fail(f"{where}: two container ports share a name ({port_names})")


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
    tagger = skaffold.get("build", {}).get("tagPolicy", {}).get("gitCommit") or {}
    if tagger.get("variant") != "CommitSha" or tagger.get("prefix") != "sha-":
        report.fail("skaffold.yaml: build.tagPolicy must be gitCommit, variant CommitSha, prefix sha- (the tag CI pushes)")
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
    check_argocd_tracking(root, report)
    check_consumes_matches_code(root, report)
    envchecks.check_release_pins(root, report.fail)
    envchecks.check_argocd(root, report.fail)
    check_store_examples(root, report)
    check_build(root, skaffold, report)
    check_cluster_job(root, skaffold, None, report)


def check_argocd_tracking(root: Path, report: Report) -> None:
    """Argo CD must track resources by annotation: label tracking overwrites
    app.kubernetes.io/instance, which every selector of the chart uses (issue #17). The setting
    lives in argocd/argocd-cm.yaml, and docs/deploy.md applies it."""
    settings = load_yaml(root / "argocd" / "argocd-cm.yaml")
    method = (settings.get("data") or {}).get("application.resourceTrackingMethod")
    if method not in ("annotation", "annotation+label"):
        report.fail(f"argocd/argocd-cm.yaml: application.resourceTrackingMethod is {method!r}: resource tracking must be by annotation, or Argo CD rewrites app.kubernetes.io/instance under the chart's selectors")
    if "argocd/argocd-cm.yaml" not in (root / "docs" / "deploy.md").read_text():
        report.fail("docs/deploy.md does not apply argocd/argocd-cm.yaml")


#: What CI pushes (.github/workflows/ci.yaml, `images`): `sha-` and the full commit id; the
#: bump records the pushed digest beside it.
CI_TAG = re.compile(r"^sha-[0-9a-f]{40}$")


def check_release_tags(root: Path, report: Report) -> None:
    """Every image reference committed under argocd/envs/ names an image CI pushed: the tag
    has CI's form and, in a git checkout, names a commit of this repository's history (CI
    only pushes images of commits on main)."""
    git = shutil.which("git") if (root / ".git").exists() else None
    if git:
        shallow = subprocess.run([git, "-C", str(root), "rev-parse", "--is-shallow-repository"], capture_output=True, text=True, check=False)
        if shallow.stdout.strip() == "true":
            print("argocd/envs/: a shallow clone; the tags' commits are not looked up in the history (fetch-depth: 0 does)")
            git = None
    for path in sorted((root / "argocd" / "envs").glob("*/*.yaml")):
        if path.name == "values.yaml":
            continue
        image = load_yaml(path).get("image") or {}
        tag, digest = str(image.get("tag", "")), image.get("digest")
        where = path.relative_to(root)
        if not CI_TAG.match(tag):
            report.fail(f"{where}: image tag {tag!r} is not a tag CI pushes (sha-<the full 40-hex commit id>)")
            continue
        if digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", str(digest)):
            report.fail(f"{where}: digest {digest!r} is not sha256:<64 hex>")
        if git:
            commit = tag.removeprefix("sha-")
            found = subprocess.run([git, "-C", str(root), "merge-base", "--is-ancestor", commit, "HEAD"], capture_output=True, check=False)
            if found.returncode != 0:
                report.fail(f"{where}: image tag {tag} names a commit that is not in this branch's history, so CI never pushed it")


def dockerfile_stages(text: str) -> dict[str, list[str]]:
    """The Dockerfile's stages by name, each as its instruction lines (continuations joined)."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1) or f"stage{len(stages)}", [])
        elif current is not None:
            current.append(line)
    return stages


def check_build(root: Path, skaffold: dict[str, Any], report: Report) -> None:
    """The inner loop stays fast and the images stay what they claim: one `build` stage that
    does not depend on the image asked for (BuildKit runs it once for all six) and keeps the
    cargo registry and target directory in cache mounts; a target per service that copies
    its own binary; Skaffold building each image from its target, with the fast `image-dev`
    profile in dev and the release profile everywhere else; CI pushing the same targets."""
    stages = dockerfile_stages((root / "Dockerfile").read_text())
    build = " ".join(stages.get("build", []))
    if not build:
        report.fail("Dockerfile: no `build` stage")
    if re.search(r"\bSERVICE\b", build):
        report.fail("Dockerfile: the build stage depends on SERVICE, so each image compiles the workspace again")
    marked = re.search(r"mark-changed-sources\.sh (\S+) .*cargo (?:auditable )?build .*mark-changed-sources\.sh --save \1", build)
    if "cargo auditable build" not in build:
        report.fail("Dockerfile: the build stage must build with `cargo auditable build`, or the images' SBOMs list no crate")
    if not marked:
        report.fail(
            "Dockerfile: the build stage must mark the sources by content before cargo build and save the list after "
            "(xtask/docker/mark-changed-sources.sh): with a cached target directory, cargo would trust COPY's mtimes"
        )
    for mount in ("/usr/local/cargo/registry", "/src/target"):
        if not re.search(rf"--mount=type=cache,[^ ]*\btarget={re.escape(mount)}(,|\s|$)", build):
            report.fail(f"Dockerfile: the build stage keeps no cache mount at {mount}")
    artifacts = {a.get("image"): a for a in skaffold.get("build", {}).get("artifacts", [])}
    dev_patches = {
        patch.get("path"): patch.get("value")
        for profile in skaffold.get("profiles", [])
        if profile.get("name") == "dev"
        for patch in profile.get("patches", [])
    }
    for index, service in enumerate(SERVICES):
        if f"-p {service}-service" not in build:
            report.fail(f"Dockerfile: the build stage does not build {service}-service")
        if not any(line.startswith(f"COPY --from=build /out/{service}-service /usr/local/bin/service") for line in stages.get(service, [])):
            report.fail(f"Dockerfile: no `{service}` target copying /out/{service}-service to /usr/local/bin/service")
        docker = (artifacts.get(f"{service}-service") or {}).get("docker") or {}
        if docker.get("target") != service:
            report.fail(f"skaffold.yaml: {service}-service is not built from the Dockerfile's `{service}` target")
        if (docker.get("buildArgs") or {}).get("PROFILE") != "release":
            report.fail(f"skaffold.yaml: {service}-service must build with PROFILE=release outside dev")
        position = list(artifacts).index(f"{service}-service") if f"{service}-service" in artifacts else index
        if dev_patches.get(f"/build/artifacts/{position}/docker/buildArgs/PROFILE") != "image-dev":
            report.fail(f"skaffold.yaml: the dev profile does not build {service}-service with PROFILE=image-dev")
    for env in ("staging", "prod"):
        for profile in skaffold.get("profiles", []):
            if profile.get("name") == env and any("PROFILE" in str(p.get("path")) for p in profile.get("patches", [])):
                report.fail(f"skaffold.yaml: the {env} profile must build the release profile")
    cargo = (root / "Cargo.toml").read_text() if (root / "Cargo.toml").exists() else ""
    section = re.search(r"\[profile\.image-dev\](.*?)(\n\[|\Z)", cargo, re.DOTALL)
    if cargo and (section is None or 'lto = false' not in section.group(1)):
        report.fail("Cargo.toml: [profile.image-dev] must exist without LTO (skaffold dev's fast profile)")
    workflow = root / ".github" / "workflows" / "ci.yaml"
    if workflow.exists() and "--target \"$service\"" not in workflow.read_text():
        report.fail("ci.yaml: the images job must push each service's Dockerfile target")
    if workflow.exists() and "cyclonedx-json" not in workflow.read_text():
        report.fail("ci.yaml: the images job must record a CycloneDX SBOM of each image")


def cluster_job(root: Path) -> dict[str, Any] | None:
    workflow = root / ".github" / "workflows" / "ci.yaml"
    if not workflow.exists():
        return None
    return (load_yaml(workflow).get("jobs") or {}).get("cluster")


def check_cluster_job(root: Path, skaffold: dict[str, Any], dev: list[Manifest] | None, report: Report) -> None:
    """The workflow's kind job stays in step with what it deploys: `skaffold run -p dev`, a
    rollout wait for each service and each dev-infra Deployment, and port-forwards to the
    local ports skaffold.yaml's dev profile forwards (those of `cargo xtask up`)."""
    job = cluster_job(root)
    if job is None:
        report.fail("ci.yaml: no `cluster` job (kind + skaffold run -p dev + k6 smoke)")
        return
    scripts = "\n".join(str(step.get("run", "")) for step in job.get("steps", []))
    env = job.get("env") or {}
    if "skaffold run -p dev" not in scripts:
        report.fail("ci.yaml cluster job: it must deploy with `skaffold run -p dev`")
    if str(env.get("SHOP_SERVICES", "")).split() != SERVICES:
        report.fail(f"ci.yaml cluster job: SHOP_SERVICES is {env.get('SHOP_SERVICES')!r}, the services are {' '.join(SERVICES)}")
    forwards = next((p.get("portForward", []) for p in skaffold.get("profiles", []) if p.get("name") == "dev"), [])
    ports = {f.get("resourceName"): f.get("localPort") for f in forwards}
    expected = [str(ports.get(service)) for service in SERVICES]
    if str(env.get("SHOP_PORTS", "")).split() != expected:
        report.fail(f"ci.yaml cluster job: SHOP_PORTS is {env.get('SHOP_PORTS')!r}, skaffold.yaml's dev profile forwards {' '.join(expected)}")
    if 'rollout status "deployment/$service"' not in scripts:
        report.fail("ci.yaml cluster job: it must wait for each service's rollout")
    for manifest in dev or []:
        if manifest.release == "dev-infra" and manifest.kind == "Deployment" and f"deployment/{manifest.name}" not in scripts:
            report.fail(f"ci.yaml cluster job: it does not wait for dev-infra's deployment/{manifest.name}")


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
    appsets = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((root / "argocd" / "applicationset.yaml").read_text()) if doc}
    source = appsets["shop"]["spec"]["template"]["spec"]["source"]
    platform = appsets["shop-platform"]["spec"]["template"]["spec"]["source"]
    for env in ENVIRONMENTS:
        by_name = {release.get("name"): release for release in skaffold_releases(skaffold, env)}
        extra = {"dev": {"dev-infra"}, "staging": {"loadtest"}}.get(env, set())
        expected = extra | set(SERVICES) | {"platform"}
        if set(by_name) != expected:
            report.fail(f"skaffold.yaml profile {env}: releases {sorted(by_name)}, expected {sorted(expected)}")
            continue
        argo_files = [str(Path(*_normalise((Path(platform["path"]) / f.replace("{{ .environment }}", env)).parts))) for f in platform["helm"]["valueFiles"]]
        if (by_name["platform"].get("chartPath"), by_name["platform"].get("valuesFiles"), by_name["platform"].get("namespace")) != (platform["path"], argo_files, f"shop-{env}"):
            report.fail(f"skaffold.yaml {env}/platform: {by_name['platform'].get('chartPath')} {by_name['platform'].get('valuesFiles')} != Argo CD's {platform['path']} {argo_files} in shop-{env}")
        for service in SERVICES:
            release = by_name[service]
            argo_files = [
                str((Path(source["path"]) / f.replace("{{ .service }}", service).replace("{{ .environment }}", env)))
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
        if manifest.kind in {"Deployment", "Rollout", "StatefulSet", "DaemonSet"}:
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


def _wave(manifest: Manifest) -> int:
    return int(str((manifest.obj.get("metadata", {}).get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0")))


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
        for kind in ("Service", "ServiceAccount", "ConfigMap", "NetworkPolicy"):
            if kind not in kinds:
                report.fail(f"{where}: no {kind}")
        workloads = [m for m in objects if m.kind in SERVICE_WORKLOADS]
        if len(workloads) != 1:
            report.fail(f"{where}: {len(workloads)} Deployments or Rollouts, expected one")
        deployment = workloads[0] if workloads else None
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
            secret_waves = [_wave(m) for m in objects if m.kind == "ExternalSecret"]
            gates = [m for m in policies if m.name.endswith("-migrate")]
            for job in jobs:
                annotations = job.obj["metadata"].get("annotations", {})
                if annotations.get("argocd.argoproj.io/hook") != "Sync" or not {"pre-install", "pre-upgrade"} <= set(annotations.get("helm.sh/hook", "").split(",")):
                    report.fail(f"{where}: the migration Job must be an Argo CD Sync hook and a Helm pre-install,pre-upgrade hook")
                if not max(secret_waves, default=-100) < _wave(job) < 0:
                    report.fail(f"{where}: the migration Job's sync-wave {_wave(job)} must come after its ExternalSecrets' ({secret_waves}: its database Secret) and before the topics and the workload (0)")
                for gate in gates:
                    gate_annotations = gate.obj["metadata"].get("annotations", {})
                    if gate_annotations.get("argocd.argoproj.io/hook") != "Sync" or _wave(gate) >= _wave(job) or int(gate_annotations.get("helm.sh/hook-weight", "0")) >= int(annotations.get("helm.sh/hook-weight", "0")) or "pre-install" not in gate_annotations.get("helm.sh/hook", ""):
                        report.fail(f"{where}: NetworkPolicy {gate.name} must be made before the migration Job (a hook of a lower wave and weight): under the namespace's default deny the Job could not reach Postgres")
        if deployment is None:
            continue
        replicas = deployment.obj["spec"].get("replicas")
        hpa = kinds.get("HorizontalPodAutoscaler", [])
        scaled = kinds.get("ScaledObject", [])
        floor = hpa[0].obj["spec"].get("minReplicas", 1) if hpa else scaled[0].obj["spec"].get("minReplicaCount", 0) if scaled else replicas or 1
        if floor < MIN_REPLICAS[env]:
            report.fail(f"{where}: {floor} replicas, {env} needs at least {MIN_REPLICAS[env]}")
        if env == "dev" and (replicas or 0) != 1:
            report.fail(f"{where}: dev runs one replica")
        if env == "prod":
            for kind in ("ScaledObject", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"):
                if kind not in kinds:
                    report.fail(f"{where}: prod needs a {kind}")
            if scaled:
                triggers = {trigger.get("type") for trigger in scaled[0].obj["spec"].get("triggers", [])}
                if "cpu" not in triggers or not triggers & {"prometheus", "kafka"}:
                    report.fail(f"{where}: the autoscaler must scale on CPU and on the request rate or the consumer lag (KEDA triggers {sorted(triggers)})")
            pdbs = kinds.get("PodDisruptionBudget", [])
            if pdbs and "minAvailable" not in pdbs[0].obj["spec"]:
                report.fail(f"{where}: the prod PDB must set minAvailable")
            spread = pod_spec(deployment.obj).get("topologySpreadConstraints", [])
            if not any(c.get("topologyKey") == "topology.kubernetes.io/zone" and c.get("whenUnsatisfiable") == "DoNotSchedule" for c in spread):
                report.fail(f"{where}: prod pods must spread across zones (DoNotSchedule)")
    if env != "dev":
        prefix = next((m.obj.get("data") or {} for m in manifests if m.kind == "ConfigMap" and m.name == "order"), {}).get("KAFKA_TOPIC_PREFIX", "")
        topics = {m.obj["spec"].get("topicName", m.name) for m in manifests if m.kind == "KafkaTopic"}
        for topic in sorted(t for t in topics if not t.endswith(".dlq")):
            if f"{topic}.dlq" not in topics:
                report.fail(f"{env}: topic {topic} has no .dlq twin")
        for expected in ("user", "product", "order", "payment", "notification"):
            if f"{prefix}shop.{expected}.v1" not in topics:
                report.fail(f"{env}: no KafkaTopic for {prefix}shop.{expected}.v1")
        if not any(m.kind == "ConfigMap" and m.obj["metadata"].get("labels", {}).get("grafana_dashboard") for m in manifests):
            report.fail(f"{env}: no Grafana dashboard ConfigMap")


def _addr_port(text: Any) -> int | None:
    try:
        return int(str(text).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _namespaces_admitted(policies: list[Manifest], port: int) -> set[str]:
    """The namespaces (by name) a service's NetworkPolicies admit to `port`; "*" when a rule
    admits more than named namespaces (no `from`, an empty or expression namespaceSelector,
    an ipBlock), and a named port counts as every port."""
    admitted: set[str] = set()
    for policy in policies:
        for rule in policy.obj["spec"].get("ingress") or []:
            ports = {p.get("port") for p in rule.get("ports") or []}
            if ports and port not in ports and not any(isinstance(p, str) and not p.isdigit() for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                admitted.add("*")
            for peer in peers or []:
                selector = peer.get("namespaceSelector")
                if selector is None:
                    if "ipBlock" in peer:
                        admitted.add("*")
                    continue  # a podSelector alone: pods of this namespace
                name = (selector.get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                if name and not selector.get("matchExpressions"):
                    admitted.add(name)
                else:
                    admitted.add("*")
    return admitted


def check_database_tls(env: str, manifests: list[Manifest], report: Report) -> None:
    """Staging and prod talk to Postgres and Redis over TLS that is verified (issue #15): every
    pod and migration Job that reads DATABASE_URL also gets DATABASE_SSL_MODE=verify-full and
    the CA to verify with (DATABASE_CA_FILE); every one that reads REDIS_URL gets REDIS_CA_FILE
    (a service refuses REDIS_CA_FILE unless REDIS_URL is rediss://); spans go to an https://
    collector checked against OTEL_EXPORTER_OTLP_CERTIFICATE. libpq's and sqlx's default, `prefer`, takes any
    certificate, and none at all when the server offers no TLS."""
    if env == "dev":
        return
    config_of = {m.release: m.obj.get("data") or {} for m in manifests if m.kind == "ConfigMap" and m.name == m.release}
    for manifest in manifests:
        if manifest.kind not in ("Deployment", "Rollout", "Job"):
            continue
        for container in _containers(pod_spec(manifest.obj)):
            env_vars = {item.get("name"): item.get("value") for item in container.get("env") or []}
            if "DATABASE_URL_FILE" not in env_vars and "DATABASE_URL" not in env_vars:
                continue
            where = f"{env}/{manifest.release}: {manifest.kind}/{manifest.name}"
            if env_vars.get("DATABASE_SSL_MODE") != "verify-full":
                report.fail(f"{where}: Postgres without verified TLS (DATABASE_SSL_MODE must be verify-full, is {env_vars.get('DATABASE_SSL_MODE')!r})")
            if "DATABASE_CA_FILE" not in env_vars:
                report.fail(f"{where}: DATABASE_SSL_MODE=verify-full needs the CA to verify with (DATABASE_CA_FILE, database.caSecret)")
        for container in _containers(pod_spec(manifest.obj)):
            values = {item.get("name"): item.get("value") for item in container.get("env") or []}
            from_config = any("configMapRef" in source for source in container.get("envFrom") or [])
            endpoint = values.get("OTEL_EXPORTER_OTLP_ENDPOINT") or (config_of.get(manifest.release, {}).get("OTEL_EXPORTER_OTLP_ENDPOINT") if from_config else None)
            if endpoint is not None and not (str(endpoint).startswith("https://") and "OTEL_EXPORTER_OTLP_CERTIFICATE" in values):
                report.fail(f"{env}/{manifest.release}: {manifest.kind}/{manifest.name}: spans to {endpoint} without verified TLS (an https:// endpoint and OTEL_EXPORTER_OTLP_CERTIFICATE, otlpCaSecret)")
        for container in _containers(pod_spec(manifest.obj)):
            env_vars = {item.get("name") for item in container.get("env") or []}
            if ("REDIS_URL_FILE" in env_vars or "REDIS_URL" in env_vars) and "REDIS_CA_FILE" not in env_vars:
                report.fail(f"{env}/{manifest.release}: {manifest.kind}/{manifest.name}: Redis without the CA of its TLS certificate (REDIS_CA_FILE, redisCaSecret)")


def check_service_identities(env: str, manifests: list[Manifest], report: Report) -> None:
    """Service identities (ADR 0012): a service that calls another over gRPC (a `*_GRPC_URL` in
    its config) gets its service tokens from the user service with its own client secret, so it
    must mount that secret (SERVICE_CLIENT_SECRET_FILE, from the Secret the user service reads)
    and the user service must issue to it (its key mounted in SERVICE_CLIENTS_DIR); without
    either every internal call is refused, and a checkout answers 503."""
    config_of = {m.release: m.obj.get("data") or {} for m in manifests if m.kind == "ConfigMap" and m.name == m.release}
    deployments = {m.release: m for m in manifests if m.kind in SERVICE_WORKLOADS and m.release in config_of}
    user = deployments.get("user")
    issued: dict[str, str] = {}
    if user is not None:
        spec = pod_spec(user.obj)
        container = _containers(spec)[0]
        values = {item.get("name"): item.get("value") for item in container.get("env") or []}
        directory = values.get("SERVICE_CLIENTS_DIR")
        mounts = {mount.get("mountPath"): mount.get("name") for mount in container.get("volumeMounts") or []}
        volume = next((v for v in spec.get("volumes") or [] if v.get("name") == mounts.get(directory)), None)
        if directory and volume and "secret" in volume:
            for item in volume["secret"].get("items") or []:
                issued[item.get("path")] = volume["secret"].get("secretName")
    for release, manifest in sorted(deployments.items()):
        calls = sorted(name for name, value in config_of[release].items() if name.endswith("_GRPC_URL") and value)
        if not calls or release == "user":
            continue
        where = f"{env}/{release}: {manifest.kind}/{manifest.name}"
        container = _containers(pod_spec(manifest.obj))[0]
        values = {item.get("name"): item.get("value") for item in container.get("env") or []}
        secret_file = values.get("SERVICE_CLIENT_SECRET_FILE")
        if not secret_file:
            report.fail(f"{where}: calls {', '.join(calls)} but mounts no client secret of its own (SERVICE_CLIENT_SECRET_FILE, serviceIdentity.client)")
            continue
        if release not in issued:
            report.fail(f"{where}: calls {', '.join(calls)} but the user service does not issue tokens to {release} (serviceIdentity.issuesTo)")
        else:
            spec = pod_spec(manifest.obj)
            mounts = {mount.get("mountPath"): mount.get("name") for mount in container.get("volumeMounts") or []}
            volume = next((v for v in spec.get("volumes") or [] if v.get("name") == mounts.get(str(secret_file).rsplit("/", 1)[0])), None)
            mounted = (volume or {}).get("secret", {}).get("secretName")
            if mounted != issued[release]:
                report.fail(f"{where}: its client secret {secret_file} is from {mounted}, not from {issued[release]}, the Secret the user service checks it against")


def topic_owners(root: Path) -> dict[str, str]:
    """Each topic's owner as crates/shop-proto/src/contracts.rs declares it (`/shop/order`)."""
    text = (root / "crates/shop-proto/src/contracts.rs").read_text()
    return {name: owner for name, owner in re.findall(r'Topic \{ name: "([^"]+)", source: "/shop/([a-z]+)" \}', text)}


def consumed_topics(root: Path) -> dict[str, set[str]]:
    """The topics each service's consumers read, from its `shop_kit::consumes!` enums (handled
    and ignored types) and the contracts' table of which type travels on which topic."""
    contracts = (root / "crates/shop-proto/src/contracts.rs").read_text()
    names = dict(re.findall(r'pub const ([A-Z]+): Topic = Topic \{ name: "([^"]+)"', contracts))
    table = contracts[contracts.index("contracts! {"):]
    topic_of = {
        message: names[constant]
        for constant, messages in re.findall(r"([A-Z]+) => \[([^\]]*)\]", table)
        if constant in names
        for message in re.findall(r"[A-Za-z]+", messages)
    }
    found: dict[str, set[str]] = {}
    for service in SERVICES:
        for source in sorted((root / "services" / service / "src").rglob("*.rs")):
            for block in re.findall(r"consumes! \{(.*?)\n\}", source.read_text(), re.S):
                types = re.findall(r"\(([A-Za-z]+)\)", block) + [
                    name for ignored in re.findall(r"ignoring \[([^\]]*)\]", block) for name in re.findall(r"[A-Za-z]+", ignored)
                ]
                found.setdefault(service, set()).update(topic_of[name] for name in types if name in topic_of)
    return found


def check_consumes_matches_code(root: Path, report: Report) -> None:
    """Each chart's kafka.consumes (what its KafkaUser may read) is what its code consumes: a
    topic missing there is refused by the broker's ACLs in staging and prod, and its consumer
    never starts; one too many is a right nobody uses."""
    code = consumed_topics(root)
    for service in SERVICES:
        values = load_yaml(root / "helm" / "services" / f"{service}.yaml")
        chart = set((values.get("kafka") or {}).get("consumes") or [])
        if chart != code.get(service, set()):
            report.fail(f"helm/services/{service}.yaml: kafka.consumes {sorted(chart)}, but its code consumes {sorted(code.get(service, set()))} (shop_kit::consumes!)")


def check_kafka_users(root: Path, env: str, manifests: list[Manifest], report: Report) -> None:
    """Events only from their owners, at the broker (ADR 0013): a KafkaUser may write only the
    topics its service owns (contracts.rs) and dead-letter topics, read only topics, and use
    only its own consumer group. Staging and prod connect every Kafka client as its own user
    over TLS: KAFKA_SECURITY_PROTOCOL=sasl_ssl, the cluster CA, the password, and a rendered
    KafkaUser of that name."""
    owners = topic_owners(root)
    users = {m.name: m for m in manifests if m.kind == "KafkaUser"}
    for name, user in users.items():
        service = user.release
        prefix = (next((m.obj.get("data") or {} for m in manifests if m.kind == "ConfigMap" and m.name == service), {})).get("KAFKA_TOPIC_PREFIX", "")
        for acl in ((user.obj.get("spec") or {}).get("authorization") or {}).get("acls") or []:
            resource = acl.get("resource") or {}
            operations = set(acl.get("operations") or [acl.get("operation")])
            where = f"{env}/{service}: KafkaUser/{name}"
            if resource.get("patternType", "literal") != "literal":
                report.fail(f"{where}: ACL on a {resource.get('patternType')} pattern {resource.get('name')!r}: name each topic")
            topic = str(resource.get("name", ""))
            bare = topic[len(prefix):] if topic.startswith(prefix) else topic
            if resource.get("type") == "topic":
                writes = operations & {"Write", "All", "Create", "Delete", "Alter", "AlterConfigs"}
                if writes and not bare.endswith(".dlq") and owners.get(bare) != service:
                    report.fail(f"{where}: may {sorted(writes)} {topic}, which {owners.get(bare, 'no service')} owns (contracts.rs)")
            elif resource.get("type") == "group":
                if topic != f"{prefix}{service}-service":
                    report.fail(f"{where}: ACL on consumer group {topic!r}; its own is {prefix}{service}-service")
            elif resource.get("type") == "cluster" and operations - {"IdempotentWrite"}:
                report.fail(f"{where}: cluster operations {sorted(operations - {'IdempotentWrite'})} beyond IdempotentWrite")
    if env == "dev":
        return
    for manifest in manifests:
        if manifest.kind not in SERVICE_WORKLOADS:
            continue
        config = next((m.obj.get("data") or {} for m in manifests if m.kind == "ConfigMap" and m.name == manifest.release), {})
        if "KAFKA_BROKERS" not in config:
            continue
        values = {**config, **{item.get("name"): item.get("value") for item in _containers(pod_spec(manifest.obj))[0].get("env") or []}}
        where = f"{env}/{manifest.release}: {manifest.kind}/{manifest.name}"
        if values.get("KAFKA_SECURITY_PROTOCOL") != "sasl_ssl":
            report.fail(f"{where}: Kafka without authentication and TLS (KAFKA_SECURITY_PROTOCOL must be sasl_ssl, is {values.get('KAFKA_SECURITY_PROTOCOL')!r}; kafka.security)")
            continue
        for needed in ("KAFKA_CA_FILE", "KAFKA_SASL_PASSWORD_FILE"):
            if needed not in values:
                report.fail(f"{where}: sasl_ssl without {needed} (kafka.security)")
        if values.get("KAFKA_SASL_USERNAME") not in users:
            report.fail(f"{where}: connects to Kafka as {values.get('KAFKA_SASL_USERNAME')!r}, a user this render does not declare (kafka.user)")


def check_project_admits(root: Path, env: str, manifests: list[Manifest], report: Report) -> None:
    """Argo CD syncs only the kinds the AppProject admits (namespaceResourceWhitelist and
    clusterResourceWhitelist): a rendered object of any other kind fails the whole sync."""
    projects = [doc for doc in yaml.safe_load_all((root / "argocd/project.yaml").read_text()) if doc]
    project = next((doc for doc in projects if (doc.get("metadata") or {}).get("name") == f"shop-{env}"), {})
    spec = project.get("spec") or {}
    admitted = {(item.get("group", ""), item.get("kind")) for item in (spec.get("namespaceResourceWhitelist") or []) + (spec.get("clusterResourceWhitelist") or [])}
    for manifest in manifests:
        api_version = str(manifest.obj.get("apiVersion", ""))
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        if (group, manifest.kind) not in admitted and (group, "*") not in admitted:
            report.fail(f"{env}/{manifest.release}: {manifest.kind}/{manifest.name}: argocd/project.yaml does not admit {group or 'core'}/{manifest.kind}, so Argo CD refuses the sync")


def check_public_surface(env: str, manifests: list[Manifest], report: Report) -> None:
    """What the edge can reach (issue #14): /metrics on a port of its own that only the
    namespaces Prometheus runs in may reach and that the ServiceMonitor scrapes; the client
    address from the ingress's X-Forwarded-For (TRUSTED_PROXY_HOPS) wherever an ingress
    namespace is admitted; prod serves no reflection and no readiness details."""
    for service in SERVICES:
        objects = [m for m in manifests if m.release == service]
        where = f"{env}/{service}"
        config = next((m.obj.get("data", {}) for m in objects if m.kind == "ConfigMap" and m.name == service), None)
        deployment = next((m for m in objects if m.kind in SERVICE_WORKLOADS), None)
        if config is None or deployment is None:
            continue
        api_port = _addr_port(config.get("LISTEN_ADDR"))
        metrics_port = _addr_port(config.get("METRICS_LISTEN_ADDR"))
        if metrics_port is None or metrics_port == api_port:
            report.fail(f"{where}: /metrics is served on the API port (set METRICS_LISTEN_ADDR to a port of its own)")
            continue
        policies = [m for m in objects if m.kind == "NetworkPolicy"]
        on_api = _namespaces_admitted(policies, api_port) if api_port else set()
        on_metrics = _namespaces_admitted(policies, metrics_port)
        exposed = (on_api & on_metrics) | (on_metrics & {"*"})
        if exposed:
            report.fail(f"{where}: namespaces {sorted(exposed)} reach both the API and the metrics port: the edge would expose /metrics")
        container_ports = {p.get("name"): p.get("containerPort") for c in _containers(pod_spec(deployment.obj)) for p in c.get("ports") or []}
        service_ports = {
            p.get("name"): container_ports.get(p.get("targetPort"), p.get("targetPort"))
            for m in objects if m.kind == "Service" for p in m.obj["spec"].get("ports", [])
        }
        for monitor in (m for m in objects if m.kind == "ServiceMonitor"):
            wanted = ((monitor.obj["spec"].get("selector") or {}).get("matchLabels") or {}).items()
            if not any(wanted <= ((m.obj.get("metadata") or {}).get("labels") or {}).items() for m in objects if m.kind == "Service"):
                report.fail(f"{where}: the ServiceMonitor selects no Service ({dict(wanted)}): nothing would be scraped")
            for endpoint in monitor.obj["spec"].get("endpoints", []):
                if service_ports.get(endpoint.get("port")) != metrics_port:
                    report.fail(f"{where}: the ServiceMonitor scrapes port {endpoint.get('port')!r}, not the metrics port {metrics_port}")
            if not on_metrics:
                report.fail(f"{where}: a ServiceMonitor, but no namespace may reach the metrics port {metrics_port}")
        if on_api and int(str(config.get("TRUSTED_PROXY_HOPS", "0")) or 0) < 1:
            report.fail(f"{where}: {sorted(on_api)} may call the API but TRUSTED_PROXY_HOPS is not set: behind the ingress every client would have its address")
        if env == "prod":
            for switch in ("GRPC_REFLECTION", "READYZ_DETAILS"):
                if str(config.get(switch, "true")).lower() != "false":
                    report.fail(f"{where}: prod must set {switch}=false")


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
    envs: list[str] | None = None,
) -> Report:
    report = Report()
    say = (lambda *_: None) if quiet else (lambda message: print(message, flush=True))
    promtool = promtool or alerttests.ensure_promtool(root)
    check_repo_files(root, report)
    say(f"skaffold.yaml and argocd/: {'ok' if not report.failures else 'FAILED'}")
    owners = topic_owners(root)
    resources: dict[str, dict[str, set[str]]] = {}
    for env in envs or ENVIRONMENTS:
        before = len(report.failures)
        check_lint(root, env, report)
        try:
            manifests = render_env(root, env)
        except (helm_python.HelmError, ValueError, yaml.YAMLError) as error:
            report.fail(f"{env}: render failed: {error}")
            continue
        check_schemas(env, manifests, report)
        check_policies(env, manifests, report)
        check_public_surface(env, manifests, report)
        check_database_tls(env, manifests, report)
        check_service_identities(env, manifests, report)
        check_kafka_users(root, env, manifests, report)
        if env != "dev":
            check_project_admits(root, env, manifests, report)
        check_labels(env, manifests, report)
        check_images(env, manifests, report)
        check_api_rules(env, manifests, envchecks.provided_secrets(manifests) if env != "dev" else set(), report)
        envchecks.check_secrets(root, env, manifests, report.fail)
        envchecks.check_default_deny(env, manifests, report.fail)
        envchecks.check_edge(root, env, manifests, report.fail)
        envchecks.check_canary(env, manifests, report.fail)
        envchecks.check_scaling(env, manifests, report.fail)
        resources[env] = envchecks.environment_resources(root, env, manifests, owners)
        if env == "dev":
            check_cluster_job(root, load_yaml(root / "skaffold.yaml"), manifests, report)
        if tag_forms:
            check_tag_forms(root, env, report)
        say(f"{env}: {len(manifests)} objects rendered, lint + schemas + policies + labels + names, ports, selectors and references + image paths{' + tag forms' if tag_forms else ''} {'ok' if len(report.failures) == before else 'FAILED'}")
        if alerts:
            say(check_alerts(env, manifests, promtool, report))
        if env == "prod" and venv_bin is not None:
            say(check_checkov(manifests, venv_bin, report))
        if env != "dev":
            check_ingress_alternative(root, env, report, say)
    if len(resources) == len(ENVIRONMENTS):
        before = len(report.failures)
        envchecks.check_isolation(resources, report.fail)
        say(f"isolation of {', '.join(ENVIRONMENTS)} (namespaces, topics, groups, Redis prefixes, databases, Secrets): {'ok' if len(report.failures) == before else 'FAILED'}")
    return report


#: The edge's alternative for a cluster without the Gateway API (docs/deploy.md).
INGRESS_EDGE = {"edge": {"mode": "ingress"}, "networkPolicy": {"allowFromNamespaces": ["ingress-nginx"]}}


def check_ingress_alternative(root: Path, env: str, report: Report, say: Callable[[str], None]) -> None:
    """`edge.mode: ingress` renders Ingresses that the schemas accept and that route exactly
    what the Gateway's routes do (the same edge rules)."""
    before = len(report.failures)
    try:
        manifests = render_env(root, env, services=INGRESS_EDGE)
    except (helm_python.HelmError, ValueError, yaml.YAMLError) as error:
        report.fail(f"{env} with edge.mode=ingress: render failed: {error}")
        return
    ingresses = [m for m in manifests if m.kind == "Ingress"]
    if not ingresses:
        report.fail(f"{env} with edge.mode=ingress: no Ingress rendered")
    for manifest in ingresses:
        for error in schema_errors(manifest.obj):
            report.fail(f"{env} with edge.mode=ingress: {manifest.label()}: {error}")
    envchecks.check_edge(root, env, manifests, lambda message: report.fail(f"with edge.mode=ingress: {message}"))
    check_public_surface(env, manifests, report)
    say(f"{env}: the Ingress alternative ({len(ingresses)} Ingresses): {'ok' if len(report.failures) == before else 'FAILED'}")


def check_store_examples(root: Path, report: Report) -> None:
    """helm/shop-env/examples/*.yaml (GCP Secret Manager, AWS Secrets Manager) render a SecretStore
    the External Secrets schema accepts, over prod's platform values."""
    examples = sorted((root / "helm" / "shop-env" / "examples").glob("*.yaml"))
    if len(examples) < 2:
        report.fail("helm/shop-env/examples: a GCP Secret Manager and an AWS Secrets Manager example are expected")
    base = load_yaml(root / "argocd" / "envs" / "prod" / "platform.yaml")
    for example in examples:
        values = merge({k: v for k, v in base.items() if k != "secretStore"}, load_yaml(example))
        try:
            manifests = render_release(root / "helm" / "shop-env", "platform", "shop-prod", values)
        except (helm_python.HelmError, ValueError, yaml.YAMLError) as error:
            report.fail(f"{example.relative_to(root)}: render failed: {error}")
            continue
        stores = [m for m in manifests if m.kind == "SecretStore"]
        if not stores:
            report.fail(f"{example.relative_to(root)}: renders no SecretStore")
        for manifest in manifests:
            for error in schema_errors(manifest.obj):
                report.fail(f"{example.relative_to(root)}: {manifest.kind}/{manifest.name}: {error}")


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


def _edit_all(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / relative
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"selftest: {old!r} is not in {relative}; update the selftest")
        path.write_text(text.replace(old, new))

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
        _edit("argocd/envs/prod/release.yaml", '  order:\n    tag: "', '  order:\n    tag: "latest" # '),
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
    # What the API server and the controllers see (check_api_rules, check_release_tags,
    # check_images); each break is caught in dev alone unless ONLY_IN says otherwise.
    (
        "a Service name starting with a digit",
        _edit("helm/shop-service/templates/service.yaml", "  name: {{ include \"shop.name\" . }}\n", "  name: 1{{ include \"shop.name\" . }}\n"),
        "a Service name must be a DNS-1035 label",
    ),
    (
        "a container port name longer than 15",
        _edit("helm/shop-service/templates/deployment.yaml", "            - name: http\n              containerPort: 8080\n", "            - name: http-and-grpc-api\n              containerPort: 8080\n"),
        "must be an IANA service name",
    ),
    (
        "a volume name with an underscore",
        _edit("helm/shop-service/templates/deployment.yaml", "        - name: tmp\n          emptyDir:", "        - name: tmp_files\n          emptyDir:"),
        "volume 'tmp_files' must be a DNS-1123 label",
    ),
    (
        "a volumeMount naming no volume",
        _edit("helm/shop-service/templates/deployment.yaml", "            - name: tmp\n              mountPath: /tmp\n", "            - name: scratch\n              mountPath: /tmp\n"),
        "names volume 'scratch', which the pod does not have",
    ),
    (
        "an env var name with a space",
        _edit("helm/shop-service/templates/deployment.yaml", "            - name: SHUTDOWN_GRACE\n", "            - name: SHUTDOWN GRACE\n"),
        "env var name 'SHUTDOWN GRACE' is not valid",
    ),
    (
        "annotations over 256 KiB",
        _edit("helm/shop-service/templates/deployment.yaml", "    argocd.argoproj.io/sync-wave: \"1\"\n", "    argocd.argoproj.io/sync-wave: \"1\"\n    shop.dev/blob: \"" + "x" * (256 * 1024) + "\"\n"),
        "bytes of annotations",
    ),
    (
        "a Service selector that matches no pod",
        _edit("helm/shop-service/templates/service.yaml", "  selector:\n    {{- include \"shop.selectorLabels\" . | nindent 4 }}\n", "  selector:\n    {{- include \"shop.selectorLabels\" . | nindent 4 }}\n    tier: web\n"),
        "matches no pod template",
    ),
    (
        "a Service targetPort the container does not have",
        _edit("helm/shop-service/templates/service.yaml", "      port: 80\n      targetPort: http\n", "      port: 80\n      targetPort: web\n"),
        "targetPort 'web' of port http is no container port",
    ),
    (
        "a probe on a port name the container does not have",
        _edit("helm/shop-service/templates/deployment.yaml", "              path: /readyz\n              port: http\n", "              path: /readyz\n              port: admin\n"),
        "the readinessProbe's port 'admin' is not a port of the container",
    ),
    (
        "a NetworkPolicy that selects no pod",
        _edit("helm/shop-service/templates/networkpolicy.yaml", "  podSelector:\n    matchLabels:\n      {{- include \"shop.selectorLabels\" . | nindent 6 }}\n", "  podSelector:\n    matchLabels:\n      {{- include \"shop.selectorLabels\" . | nindent 6 }}\n      tier: web\n"),
        "-default-deny (shop-service/templates/networkpolicy.yaml): its selector",
    ),
    (
        "a PodDisruptionBudget that selects no pod",
        _edit("helm/shop-service/templates/pdb.yaml", "  selector:\n    matchLabels:\n", "  selector:\n    matchLabels:\n      tier: web\n"),
        "matches no pod of the render",
    ),
    (
        "an autoscaler aimed at a missing workload",
        _edit("helm/shop-service/templates/hpa.yaml", "    kind: {{ $target.kind }}\n    name: {{ $name }}\n", "    kind: {{ $target.kind }}\n    name: {{ $name }}-api\n"),
        "its scale target Rollout/",
    ),
    (
        "a Secret key renamed in the chart that makes it",
        _edit("helm/shop-dev-infra/templates/redis.yaml", "stringData:\n  url: redis://redis:6379\n", "stringData:\n  uri: redis://redis:6379\n"),
        "Secret shop-redis has no key 'url'",
    ),
    (
        "a secret manager entry the docs do not list",
        _edit("docs/deploy.md", "| `<env>-shop-user-jwt` | `signing-key.pem` (Ed25519 PKCS#8) | user |\n", ""),
        "reads staging-shop-user-jwt/signing-key.pem, which docs/deploy.md's table",
    ),
    (
        "a ConfigMap reference to nothing",
        _edit("helm/shop-service/templates/deployment.yaml", "            - configMapRef:\n                name: {{ include \"shop.name\" . }}\n", "            - configMapRef:\n                name: {{ include \"shop.name\" . }}-env\n"),
        "-env is not in the render",
    ),
    (
        "an image tag CI never pushes",
        _edit("argocd/envs/prod/release.yaml", '  cart:\n    tag: "sha-', '  cart:\n    tag: "sha-abc1234" # '),
        "is not a tag CI pushes",
    ),
    (
        "Skaffold tagging with an abbreviated commit",
        _edit("skaffold.yaml", "variant: CommitSha", "variant: AbbrevCommitSha"),
        "build.tagPolicy must be gitCommit",
    ),
    (
        "the dev Kafka run as another user",
        _edit("helm/shop-dev-infra/templates/kafka.yaml", "        runAsUser: 1000\n", "        runAsUser: 1001\n"),
        "runs as uid 1000, the pod sets runAsUser 1001",
    ),
    (
        "the dev Postgres declaring another port",
        _edit("helm/shop-dev-infra/templates/postgres.yaml", "              containerPort: 5432\n", "              containerPort: 5433\n"),
        "listens on 5432, which the container does not declare",
    ),
    (
        "the build stage made per service",
        _edit("Dockerfile", "FROM toolchain AS build\nARG PROFILE=release\n", "FROM toolchain AS build\nARG PROFILE=release\nARG SERVICE\nRUN echo ${SERVICE}\n"),
        "the build stage depends on SERVICE",
    ),
    (
        "the target directory no longer cached",
        _edit("Dockerfile", "target=/src/target,", "target=/src/target-cache,"),
        "no cache mount at /src/target",
    ),
    (
        "cargo trusting COPY's mtimes again",
        _edit("Dockerfile", "    sh xtask/docker/mark-changed-sources.sh target/.shop-sources.sha256 \\\n    && cargo auditable build", "    cargo auditable build"),
        "must mark the sources by content",
    ),
    (
        "skaffold dev building with fat LTO",
        _edit("skaffold.yaml", "        path: /build/artifacts/3/docker/buildArgs/PROFILE\n        value: image-dev\n", "        path: /build/artifacts/3/docker/buildArgs/PROFILE\n        value: release\n"),
        "the dev profile does not build order-service with PROFILE=image-dev",
    ),
    (
        "an image built from another service's target",
        _edit("skaffold.yaml", "        target: cart\n", "        target: order\n"),
        "cart-service is not built from the Dockerfile's `cart` target",
    ),
    (
        "the cluster job forgetting a service",
        _edit(".github/workflows/ci.yaml", "SHOP_SERVICES: user product cart order payment notification", "SHOP_SERVICES: user product cart order payment"),
        "ci.yaml cluster job: SHOP_SERVICES",
    ),
    (
        "the cluster job forwarding other ports than skaffold dev",
        _edit(".github/workflows/ci.yaml", 'SHOP_PORTS: "8081 8082 8083 8084 8085 8086"', 'SHOP_PORTS: "8081 8082 8083 8084 8086 8085"'),
        "ci.yaml cluster job: SHOP_PORTS",
    ),
    (
        "a dev-infra Deployment the cluster job does not wait for",
        _edit(".github/workflows/ci.yaml", "deployment/redis deployment/kafka --timeout", "deployment/redis --timeout"),
        "it does not wait for dev-infra's deployment/kafka",
    ),
]

BREAKS += [
    (
        "the metrics port open to every namespace",
        _edit("helm/shop-service/templates/networkpolicy.yaml", "    # The {{ . }} namespace (Prometheus): the metrics port only.\n    - from:\n        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: {{ . }}\n", "    # The {{ . }} namespace (Prometheus): the metrics port only.\n    - from:\n        - namespaceSelector: {}\n"),
        "reach both the API and the metrics port",
    ),
    (
        "binaries built without their crate list",
        _edit("Dockerfile", "cargo auditable build", "cargo build"),
        "cargo auditable build",
    ),
    (
        "the ServiceMonitor scrapes the API port",
        _edit("helm/shop-service/templates/servicemonitor.yaml", "    - port: metrics\n", "    - port: http\n"),
        "the ServiceMonitor scrapes port",
    ),
    (
        "the ingress namespace admitted to the metrics port",
        _edit("argocd/envs/prod/values.yaml", "  allowMetricsFrom: [monitoring]\n", "  allowMetricsFrom: [monitoring, envoy-gateway-system]\n"),
        "reach both the API and the metrics port",
    ),
    (
        "/metrics back on the API port",
        _edit("helm/shop-service/templates/configmap.yaml", '  METRICS_LISTEN_ADDR: "0.0.0.0:9464"\n', ""),
        "/metrics is served on the API port",
    ),
    (
        "reflection left on in prod",
        _edit("argocd/envs/prod/values.yaml", '  GRPC_REFLECTION: "false"\n', ""),
        "prod must set GRPC_REFLECTION=false",
    ),
    (
        "Postgres without verified TLS in prod",
        _edit("argocd/envs/prod/values.yaml", "  sslMode: verify-full\n", ""),
        "Postgres without verified TLS",
    ),
    (
        "Redis without its CA in staging",
        _edit("argocd/envs/staging/values.yaml", "redisCaSecret:\n  name: shop-redis-ca\n  key: ca.crt\n", ""),
        "Redis without the CA",
    ),
    (
        "spans to the collector in plaintext in prod",
        _edit("argocd/envs/prod/values.yaml", "  OTEL_EXPORTER_OTLP_ENDPOINT: https://otel-collector", "  OTEL_EXPORTER_OTLP_ENDPOINT: http://otel-collector"),
        "without verified TLS",
    ),
    (
        "a caller without its client secret",
        _edit("helm/services/order.yaml", "  client: true", "  client: false"),
        "mounts no client secret of its own",
    ),
    (
        "the user service not issuing to a caller",
        _edit("helm/services/user.yaml", "issuesTo: [cart, order]", "issuesTo: [order]"),
        "does not issue tokens to cart",
    ),
    (
        "a service allowed to write a topic it reads",
        _edit("helm/shop-service/templates/kafkauser.yaml", "operations: [Read, Describe]", "operations: [Read, Write, Describe]"),
        "which order owns",
    ),
    (
        "a kind the AppProject does not admit",
        _edit_all("argocd/project.yaml", '    - group: "kafka.strimzi.io"\n      kind: KafkaUser\n', ""),
        "does not admit kafka.strimzi.io/KafkaUser",
    ),
    (
        "Argo CD tracking resources by label",
        _edit("argocd/argocd-cm.yaml", "application.resourceTrackingMethod: annotation", "application.resourceTrackingMethod: label"),
        "resource tracking must be by annotation",
    ),
    (
        "a ServiceMonitor that selects no Service",
        _edit("helm/shop-service/templates/servicemonitor.yaml", '{{- include "shop.selectorLabels" . | nindent 6 }}', 'app.kubernetes.io/name: {{ include "shop.name" . }}\n      app.kubernetes.io/component: api'),
        "the ServiceMonitor selects no Service",
    ),
    (
        "a consumed topic left out of the chart",
        _edit("helm/services/notification.yaml", "consumes: [shop.user.v1, shop.order.v1, shop.payment.v1]", "consumes: [shop.order.v1, shop.payment.v1]"),
        "but its code consumes",
    ),
    (
        "Kafka in plaintext in prod",
        _edit("argocd/envs/prod/values.yaml", "    protocol: sasl_ssl", "    protocol: plaintext"),
        "Kafka without authentication and TLS",
    ),
    (
        "no trusted proxy behind the ingress",
        _edit("argocd/envs/staging/values.yaml", '  TRUSTED_PROXY_HOPS: "1"\n', ""),
        "TRUSTED_PROXY_HOPS is not set",
    ),
]

# Issue #17: isolation, promotion, the canary, the edge, scaling, secrets, the default deny.
BREAKS += [
    (
        "staging reading prod's topics",
        _edit("argocd/envs/staging/values.yaml", "  KAFKA_TOPIC_PREFIX: staging.\n", "  KAFKA_TOPIC_PREFIX: prod.\n"),
        "share topics",
    ),
    (
        "dev's Redis prefix a prefix of the others'",
        _edit("argocd/envs/dev/values.yaml", '  REDIS_KEY_PREFIX: "shop:dev:"\n', '  REDIS_KEY_PREFIX: "shop:"\n'),
        "share Redis key prefixes",
    ),
    (
        "prod on staging's database",
        _edit("argocd/envs/prod/values.yaml", "database:\n  host:", "database:\n  name: shop_staging_order\n  host:"),
        "share databases",
    ),
    (
        "prod mounting staging's Secrets",
        _edit("argocd/envs/prod/values.yaml", "secretPrefix: prod-\n", "secretPrefix: staging-\n"),
        "share Secret names",
    ),
    (
        "a project that admits every shop namespace",
        _edit("argocd/project.yaml", "      namespace: shop-staging\n", '      namespace: "shop-*"\n'),
        "shop-staging admits prod's namespace shop-prod",
    ),
    (
        "every Application in prod's project",
        _edit("argocd/applicationset.yaml", 'project: "shop-{{ .environment }}"', "project: shop-prod"),
        "its Applications belong to shop-{{ .environment }}",
    ),
    (
        "every environment's Applications sent to prod's clusters",
        _edit("argocd/applicationset.yaml", '"shop.dev/env-{{ .environment }}": "true"', 'shop.dev/env-prod: "true"'),
        "pick the clusters labelled shop.dev/env-{{ .environment }}",
    ),
    (
        "Applications rendering main instead of the pinned revision",
        _edit("argocd/applicationset.yaml", 'targetRevision: "{{ .revision }}"', "targetRevision: main"),
        "targetRevision 'main'",
    ),
    (
        "an environment pinned to a branch",
        _edit("argocd/envs/prod/release.yaml", 'revision: "', 'revision: "main" # '),
        "is not a full commit id",
    ),
    (
        "no namespace-wide default deny",
        _edit("argocd/envs/staging/platform.yaml", "environment: staging\n", "environment: staging\ndefaultDeny:\n  enabled: false\n"),
        "0 namespace-wide default-deny",
    ),
    (
        "a hand-made Secret in staging",
        _edit("argocd/envs/staging/notification.yaml", "    secretName: shop-smtp-relay\n    key: ca.crt\n", "    secretName: shop-smtp-relay\n    key: ca.crt\n    shared: true\n"),
        "a hand-made Secret",
    ),
    (
        "ExternalSecrets reading a store that is not there",
        _edit("helm/shop-env/values.yaml", "  name: shop-secrets\n", "  name: shop-vault\n"),
        "reads SecretStore 'shop-secrets', which the environment does not have",
    ),
    (
        "an internal RPC routed at the edge",
        _edit("helm/services/product.yaml", "edge:\n  rest: [/v1/products, /v1/categories]\n", "edge:\n  rest: [/v1/products, /v1/categories]\n  grpc:\n    service: shop.product.v1.ProductService\n    methods: [ReserveStock]\n"),
        "an internal RPC",
    ),
    (
        "the token endpoint routed at the edge",
        _edit("helm/services/user.yaml", "  rest: [/v1/auth, /v1/users]", "  rest: [/v1/auth, /v1/users, /v1/oauth]"),
        "exposes /v1/oauth/token",
    ),
    (
        "a public path left off the edge",
        _edit("helm/services/product.yaml", "  rest: [/v1/products, /v1/categories]", "  rest: [/v1/products]"),
        "the public path /v1/categories is not routed",
    ),
    (
        "a public gRPC method left off the edge",
        _edit("helm/services/user.yaml", "    methods: [GetUser, GetMe]", "    methods: [GetUser]"),
        "UserService/GetMe is not routed",
    ),
    (
        "REST and gRPC routes on one hostname",
        _edit("argocd/envs/staging/values.yaml", "  grpcHostname: grpc.staging.shop.example", "  grpcHostname: api.staging.shop.example"),
        "share hostnames",
    ),
    (
        "the load test going around the edge",
        _edit("argocd/envs/staging/loadtest.yaml", "edge:\n  url: https://api.staging.shop.example\n", ""),
        "the load test targets",
    ),
    (
        "no canary in prod",
        _edit("argocd/envs/prod/values.yaml", "rollout:\n  enabled: true\n", "rollout:\n  enabled: false\n"),
        "not a Rollout",
    ),
    (
        "the canary's AnalysisTemplates missing",
        _edit("argocd/envs/prod/platform.yaml", "analysis:\n  enabled: true\n", "analysis:\n  enabled: false\n"),
        "is not in prod (helm/shop-env analysis.enabled)",
    ),
    (
        "an analysis on a series nobody records",
        _edit("helm/shop-env/templates/analysistemplates.yaml", "shop:http_request_errors:ratio_rate5m", "shop:http_request_errors:ratio_rate2m"),
        "not one of the SLO recording rules",
    ),
    (
        "an analysis that errors without traffic",
        _edit("helm/shop-env/templates/analysistemplates.yaml", 'successCondition: "len(result) == 0 || result[0]', 'successCondition: "result[0]'),
        "start the condition with",
    ),
    (
        "a Rollout spread by a label its pods lack",
        _edit("helm/shop-service/templates/deployment.yaml", '[{{ if $rollout.enabled }}"rollouts-pod-template-hash"', '[{{ if $rollout.enabled }}"pod-template-hash"'),
        "carry rollouts-pod-template-hash",
    ),
    (
        "prod without a sync window",
        _edit("argocd/project.yaml", "    - kind: allow\n", "    - kind: deny\n"),
        "has no allow sync window",
    ),
    (
        "degraded applications told to nobody",
        _edit("argocd/argocd-notifications-cm.yaml", "triggers: [on-sync-failed, on-health-degraded]", "triggers: [on-sync-failed]"),
        "nobody is told of on-health-degraded",
    ),
    (
        "more consumers than partitions",
        _edit("argocd/envs/prod/notification.yaml", "  maxReplicas: 6\n", "  maxReplicas: 12\n"),
        "has 6 partitions",
    ),
    (
        "a prod autoscaler that cannot scale",
        _edit("argocd/envs/prod/notification.yaml", "  maxReplicas: 6\n", "  maxReplicas: 3\n"),
        "is not above its minimum",
    ),
    (
        "the lag read for another consumer group",
        _edit("helm/shop-service/templates/hpa.yaml", 'consumerGroup: {{ printf "%s%s-service" $prefix $name | quote }}', 'consumerGroup: {{ printf "%s%s" $prefix $name | quote }}'),
        "the lag trigger reads group",
    ),
    (
        "an HPA beside the ScaledObject",
        _edit("helm/shop-service/templates/hpa.yaml", "{{- else }}\napiVersion: autoscaling/v2", "{{- end }}\n---\n{{- if true }}\napiVersion: autoscaling/v2"),
        "an HPA of its own",
    ),
    (
        "a secret store example the schema refuses",
        _edit("helm/shop-env/examples/aws-secrets-manager.yaml", "      service: SecretsManager\n", ""),
        "examples/aws-secrets-manager.yaml: SecretStore",
    ),
    (
        "the Ingress alternative routing a whole gRPC service",
        _edit("helm/shop-service/templates/edge.yaml", "            pathType: Exact\n", "            pathType: Prefix\n"),
        "is not one exact /<service>/<method>",
    ),
    (
        "the migration before its database Secret",
        _edit("helm/shop-service/templates/migration-job.yaml", 'argocd.argoproj.io/sync-wave: "-2"', 'argocd.argoproj.io/sync-wave: "-5"'),
        "must come after its ExternalSecrets",
    ),
    (
        "the migration's NetworkPolicy made after its Job",
        _edit("helm/shop-service/templates/networkpolicy.yaml", 'argocd.argoproj.io/sync-wave: "-3"', 'argocd.argoproj.io/sync-wave: "-1"'),
        "must be made before the migration Job",
    ),
    (
        "routes attached to a Gateway that is not there",
        _edit("argocd/envs/prod/values.yaml", "edge:\n  mode: gateway\n", "edge:\n  mode: gateway\n  gateway:\n    name: shop-edge\n"),
        "which the environment does not have (helm/shop-env edge.gateway",
    ),
    (
        "an analysis that selects no service",
        _edit("helm/shop-env/templates/analysistemplates.yaml", 'job=\\"{{args.service}}\\",', ""),
        "must select the canary's service",
    ),
    (
        "Skaffold without the platform release",
        _edit("skaffold.yaml", "      - name: platform\n", "      - name: platforms\n"),
        "skaffold.yaml profile dev: releases",
    ),
]

#: Breaks that only show in some environments (the rest are checked in dev alone).
ONLY_IN: dict[str, list[str]] = {
    "the ServiceMonitor scrapes the API port": ["prod"],
    "the metrics port open to every namespace": ["prod"],
    "the ingress namespace admitted to the metrics port": ["prod"],
    "reflection left on in prod": ["prod"],
    "Postgres without verified TLS in prod": ["prod"],
    "Redis without its CA in staging": ["staging"],
    "spans to the collector in plaintext in prod": ["prod"],
    "no trusted proxy behind the ingress": ["staging"],
    "a service allowed to write a topic it reads": ["staging"],
    "Kafka in plaintext in prod": ["prod"],
    "a ServiceMonitor that selects no Service": ["prod"],
    "a kind the AppProject does not admit": ["staging"],
    "the prod PDB turned off": ["prod"],
    "replicas given as a string": ["prod"],
    "an unknown values key": ["staging"],
    "the image tag set to latest": ["prod"],
    "a wrongly typed Strimzi field": ["staging"],
    "a fast burn-rate alert that waits two hours": ["prod"],
    "probes counted as users' requests": ["prod"],
    "5xx no longer counted as errors": ["prod"],
    "a PodDisruptionBudget that selects no pod": ["prod"],
    "an autoscaler aimed at a missing workload": ["prod"],
    "a secret manager entry the docs do not list": ["staging"],
    "staging reading prod's topics": ["dev", "staging", "prod"],
    "dev's Redis prefix a prefix of the others'": ["dev", "staging", "prod"],
    "prod on staging's database": ["dev", "staging", "prod"],
    "prod mounting staging's Secrets": ["dev", "staging", "prod"],
    "no namespace-wide default deny": ["staging"],
    "a hand-made Secret in staging": ["staging"],
    "ExternalSecrets reading a store that is not there": ["staging"],
    "an internal RPC routed at the edge": ["prod"],
    "the token endpoint routed at the edge": ["prod"],
    "a public path left off the edge": ["prod"],
    "a public gRPC method left off the edge": ["staging"],
    "REST and gRPC routes on one hostname": ["staging"],
    "the load test going around the edge": ["staging"],
    "no canary in prod": ["prod"],
    "the canary's AnalysisTemplates missing": ["prod"],
    "an analysis on a series nobody records": ["prod"],
    "an analysis that errors without traffic": ["prod"],
    "a Rollout spread by a label its pods lack": ["prod"],
    "more consumers than partitions": ["prod"],
    "the migration before its database Secret": ["staging"],
    "routes attached to a Gateway that is not there": ["prod"],
    "an analysis that selects no service": ["prod"],
    "the Ingress alternative routing a whole gRPC service": ["prod"],
    "a prod autoscaler that cannot scale": ["prod"],
    "the lag read for another consumer group": ["staging"],
    "an HPA beside the ScaledObject": ["staging"],
}


#: The release pins' rules that need a git history, each broken in a scratch repository.
GIT_BREAKS = [
    ("prod pinned to a commit without the charts its Applications read", "has no helm/shop-env/Chart.yaml"),
    ("prod pinned to a commit off the branch", "is not a commit of this branch's history"),
    ("an image built after the revision it runs with", "is not built from the revision or one of its ancestors"),
]


def selftest_release_pins(root: Path) -> list[bool]:
    """A scratch repository: c1 without helm/shop-env, c2 with everything; then each break
    pins prod where the rule must refuse it."""
    git = shutil.which("git")
    if git is None:
        print("selftest: no git: the release pins' history rules are not self-tested")
        return []
    caught = []
    with tempfile.TemporaryDirectory(prefix="shop-deploy-selftest-git-") as directory:
        copy_root = Path(directory)
        for part in ("helm", "argocd"):
            shutil.copytree(root / part, copy_root / part)

        def run(*args: str) -> str:
            return subprocess.run([git, "-C", str(copy_root), "-c", "user.name=selftest", "-c", "user.email=selftest@shop.local", *args], capture_output=True, text=True, check=True).stdout.strip()

        run("init", "--quiet", "--initial-branch", "main")
        shutil.move(str(copy_root / "helm" / "shop-env"), str(copy_root / "shop-env"))
        run("add", "-A")
        run("commit", "--quiet", "-m", "c1: before helm/shop-env")
        c1 = run("rev-parse", "HEAD")
        shutil.move(str(copy_root / "shop-env"), str(copy_root / "helm" / "shop-env"))
        run("add", "-A")
        run("commit", "--quiet", "-m", "c2")
        c2 = run("rev-parse", "HEAD")
        run("switch", "--quiet", "--create", "side")
        (copy_root / "side.txt").write_text("never merged\n")
        run("add", "-A")
        run("commit", "--quiet", "-m", "side")
        side = run("rev-parse", "HEAD")
        run("switch", "--quiet", "main")
        release = copy_root / "argocd" / "envs" / "prod" / "release.yaml"
        original = release.read_text()
        pins = [
            (c1, f"sha-{c1}"),
            (side, f"sha-{c1}"),
            (c1, f"sha-{c2}"),
        ]
        for (description, expected), (revision, tag) in zip(GIT_BREAKS, pins):
            text = re.sub(r'revision: "[0-9a-f]{40}"', f'revision: "{revision}"', original)
            text = re.sub(r'tag: "sha-[0-9a-f]{40}"', f'tag: "{tag}"', text)
            release.write_text(text)
            failures: list[str] = []
            envchecks.check_release_pins(copy_root, failures.append, warn=lambda _: None)
            hit = [failure for failure in failures if expected in failure and failure.startswith("argocd/envs/prod/")]
            print(f"selftest: {description}: {'caught (' + hit[0][:160] + ')' if hit else f'NOT caught (expected {expected!r}; got {failures[:3]})'}")
            caught.append(bool(hit))
        release.write_text(original)
    return caught


def selftest(root: Path) -> int:
    failures = 0
    promtool = alerttests.ensure_promtool(root)
    for description, apply, expected in BREAKS:
        with tempfile.TemporaryDirectory(prefix="shop-deploy-selftest-") as directory:
            copy_root = Path(directory)
            for part in ("helm", "argocd", "proto"):
                shutil.copytree(root / part, copy_root / part)
            for part in ("skaffold.yaml", "Dockerfile", "Cargo.toml", ".github/workflows/ci.yaml", "crates/shop-proto/src/contracts.rs"):
                (copy_root / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(root / part, copy_root / part)
            for service in SERVICES:
                shutil.copytree(root / "services" / service / "src", copy_root / "services" / service / "src")
            (copy_root / "docs").mkdir()
            shutil.copy(root / "docs" / "deploy.md", copy_root / "docs" / "deploy.md")
            apply(copy_root)
            # promtool only where the break is in the alerts: it is the slow part.
            report = run_checks(
                copy_root,
                venv_bin=None,
                quiet=True,
                promtool=promtool,
                alerts="promtool" in expected,
                tag_forms="label" in expected,
                envs=ONLY_IN.get(description, ["dev"]),
            )
        caught = [failure for failure in report.failures if expected in failure]
        if caught:
            print(f"selftest: {description}: caught ({caught[0][:160]})")
        else:
            failures += 1
            print(f"selftest: {description}: NOT caught (expected {expected!r}; got {report.failures[:3]})")
    git_breaks = selftest_release_pins(root)
    failures += sum(1 for caught in git_breaks if not caught)
    total = len(BREAKS) + len(git_breaks)
    print(f"selftest: {total - failures} of {total} deliberate breaks caught")
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
