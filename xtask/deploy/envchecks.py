"""deploy-check's rules for issue #17: three environments that share nothing, promoted as one
revision, a canary in prod, a public edge that routes only what is public, autoscalers that
can scale, Secrets only from the secret manager, and one namespace-wide default deny.

Each function takes rendered objects (anything with .release, .kind, .name and .obj, as
shopdeploy.Manifest) and a `fail(message)` callable; shopdeploy.run_checks calls them and its
self-test breaks each rule on purpose. What the rules rely on, read upstream:

- Argo CD AppProject destinations: an entry matches when its server (or name) glob and its
  namespace glob match, `!` negates; at least one entry must match and no negated one reject
  (argo-cd pkg/apis/application/v1alpha1/app_project_types.go, isDestinationMatched).
- ApplicationSet git files generator with goTemplate: the file's keys are the parameters,
  nested maps kept (`.images.user.tag`); a matrix takes two generators, one of them may be a
  matrix, and the second may use the first's parameters (applicationset/generators/matrix.go).
- Gateway API: PathPrefix matches whole path segments; an HTTPRoute and a GRPCRoute on one
  listener sharing a hostname leave only one of them accepted (GRPCRoute spec.hostnames).
- KEDA's Kafka scaler counts at most one replica per partition of the topic unless
  allowIdleConsumers (kedacore/keda pkg/scalers/kafka_scaler.go, getTotalLag).
- Argo Rollouts labels each revision's pods rollouts-pod-template-hash (rollout/sync.go), and an
  analysis whose query returns no sample is an error unless the condition handles it
  (utils/evaluate/evaluate.go): four errors abort the rollout.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import yaml

SERVICES = ["user", "product", "cart", "order", "payment", "notification"]
ENVIRONMENTS = ["dev", "staging", "prod"]
Fail = Callable[[str], None]

#: Served by every service but never public: its own metrics port aside, the probes, the
#: OpenAPI document (the same path on all six) and the service-to-service endpoints.
NEVER_ROUTED = ["/metrics", "/healthz", "/readyz", "/openapi.json", "/v1/oauth/token", "/.well-known/jwks.json"]
#: REST paths in the code that are service to service (ADR 0012), not for clients.
INTERNAL_REST = {"/v1/oauth/token", "/.well-known/jwks.json"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _spec(manifest: Any) -> dict[str, Any]:
    return manifest.obj.get("spec") or {}


def _config(manifests: list[Any], service: str) -> dict[str, str]:
    return next((m.obj.get("data") or {} for m in manifests if m.kind == "ConfigMap" and m.name == service and m.release == service), {})


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template") or {}
    return template.get("spec") or {}


# ---------------------------------------------------------------------------------------------
# Secrets


def provided_secrets(manifests: list[Any]) -> set[tuple[str, str]]:
    """(Secret, key) pairs the environment's operators make: External Secrets from each
    ExternalSecret (its data keys, or its template's), Strimzi's User Operator a Secret named
    like each KafkaUser with `password`."""
    found: set[tuple[str, str]] = set()
    for manifest in manifests:
        spec = _spec(manifest)
        if manifest.kind == "ExternalSecret":
            target = (spec.get("target") or {}).get("name") or manifest.name
            template = (spec.get("target") or {}).get("template") or {}
            keys = set((template.get("data") or {})) or {item.get("secretKey") for item in spec.get("data") or []}
            found |= {(target, key) for key in keys}
        if manifest.kind == "KafkaUser":
            found |= {(manifest.name, "password"), (manifest.name, "sasl.jaas.config")}
    return found


def documented_entries(root: Path, env: str) -> set[tuple[str, str]]:
    """The secret manager entries docs/deploy.md tells operators to create: its table
    "| Secret manager entry | properties | ..." with `<env>` and `<service>` expanded."""
    found: set[tuple[str, str]] = set()
    in_table = False
    for line in (root / "docs" / "deploy.md").read_text().splitlines():
        if line.startswith("| Secret manager entry |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if not in_table or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            for service in SERVICES if "<service>" in name else [""]:
                entry = name.replace("<env>", env).replace("<service>", service)
                found |= {(entry, prop) for prop in re.findall(r"`([^`]+)`", cells[1])}
    return found


def check_secrets(root: Path, env: str, manifests: list[Any], fail: Fail) -> None:
    """Staging and prod: no Secret made by a chart or by hand. Every Secret a pod, a Gateway or
    a TriggerAuthentication uses is made by an ExternalSecret or a KafkaUser of the
    environment; every ExternalSecret reads a SecretStore of the environment, and only entries
    docs/deploy.md lists (so operators know what to create)."""
    if env == "dev":
        return
    provided = {name for name, _ in provided_secrets(manifests)}
    stores = {m.name for m in manifests if m.kind == "SecretStore"}
    documented = documented_entries(root, env)
    for manifest in manifests:
        where = f"{env}/{manifest.release}: {manifest.kind}/{manifest.name}"
        if manifest.kind == "Secret":
            fail(f"{where}: a Secret rendered by a chart; in {env} every Secret comes from the secret manager (an ExternalSecret)")
        if manifest.kind == "ExternalSecret":
            store = (_spec(manifest).get("secretStoreRef") or {}).get("name")
            if store not in stores:
                fail(f"{where}: reads SecretStore {store!r}, which the environment does not have (helm/shop-env secretStore)")
            for item in _spec(manifest).get("data") or []:
                ref = item.get("remoteRef") or {}
                if (ref.get("key"), ref.get("property")) not in documented:
                    fail(f"{where}: reads {ref.get('key')}/{ref.get('property')}, which docs/deploy.md's table of secret manager entries does not list")
        for name in _secrets_used(manifest):
            if name not in provided:
                fail(f"{where}: uses Secret {name}, which no ExternalSecret or KafkaUser of {env} makes (a hand-made Secret)")


def _secrets_used(manifest: Any) -> set[str]:
    used: set[str] = set()
    spec = _pod_spec(manifest.obj)
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            used.add(volume["secret"].get("secretName", ""))
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                used.add(ref.get("name", ""))
    if manifest.kind == "Gateway":
        for listener in _spec(manifest).get("listeners") or []:
            used |= {ref.get("name", "") for ref in (listener.get("tls") or {}).get("certificateRefs") or []}
    if manifest.kind == "Ingress":
        used |= {tls.get("secretName", "") for tls in _spec(manifest).get("tls") or []}
    if manifest.kind == "TriggerAuthentication":
        used |= {ref.get("name", "") for ref in _spec(manifest).get("secretTargetRef") or []}
    return used


# ---------------------------------------------------------------------------------------------
# Isolation


def _url_database(url: str) -> str | None:
    parsed = urlparse(url)
    return parsed.path.lstrip("/") or None if parsed.scheme.startswith("postgres") else None


def environment_resources(root: Path, env: str, manifests: list[Any], contract_topics: Iterable[str]) -> dict[str, set[str]]:
    """What an environment uses that another must never share: namespaces, topics, consumer
    groups, Redis key prefixes, databases and Secret names."""
    found: dict[str, set[str]] = {kind: set() for kind in ("namespace", "topic", "consumer group", "Redis prefix", "database", "Secret")}
    found["namespace"].add(f"shop-{env}")
    for manifest in manifests:
        namespace = (manifest.obj.get("metadata") or {}).get("namespace")
        if namespace:
            found["namespace"].add(namespace)
        if manifest.kind == "KafkaTopic":
            found["topic"].add(_spec(manifest).get("topicName", manifest.name))
        if manifest.kind in ("Secret", "ExternalSecret", "KafkaUser"):
            found["Secret"].add(manifest.name)
        found["Secret"] |= _secrets_used(manifest)
        if manifest.kind == "Secret":
            for key, value in {**(manifest.obj.get("stringData") or {})}.items():
                database = _url_database(str(value)) if key == "url" else None
                if database:
                    found["database"].add(database)
        if manifest.kind == "ExternalSecret":
            template = ((_spec(manifest).get("target") or {}).get("template") or {}).get("data") or {}
            for value in template.values():
                database = _url_database(str(value).replace("{{", "").replace("}}", ""))
                if database:
                    found["database"].add(database)
    for service in SERVICES:
        config = _config(manifests, service)
        prefix = config.get("KAFKA_TOPIC_PREFIX", "")
        if "KAFKA_BROKERS" in config:
            found["topic"] |= {f"{prefix}{topic}{suffix}" for topic in contract_topics for suffix in ("", ".dlq")}
            found["consumer group"].add(f"{prefix}{service}-service")
        if any(m.release == service and "REDIS_URL" in str(m.obj) for m in manifests if m.kind in ("Deployment", "Rollout")):
            found["Redis prefix"].add(config.get("REDIS_KEY_PREFIX", "shop:"))
    found["Secret"].discard("")
    return found


PLURAL = {"namespace": "namespaces", "topic": "topics", "consumer group": "consumer groups", "Redis prefix": "Redis key prefixes", "database": "databases", "Secret": "Secret names"}


def check_isolation(renders: dict[str, dict[str, set[str]]], fail: Fail) -> None:
    """No two environments share a namespace, topic, consumer group, database or Secret name,
    and no Redis key prefix of one is a prefix of another's (they would read each other's keys)."""
    envs = sorted(renders)
    for env in envs:
        for kind in ("namespace", "topic", "consumer group", "Redis prefix", "database", "Secret"):
            if not renders[env].get(kind):
                fail(f"{env}: no {kind} found in the render; the isolation check cannot see them")
    for index, first in enumerate(envs):
        for second in envs[index + 1:]:
            for kind in renders[first]:
                a, b = renders[first][kind], renders[second][kind]
                if kind == "Redis prefix":
                    shared = {x for x in a for y in b if x.startswith(y) or y.startswith(x)}
                else:
                    shared = a & b
                if shared:
                    fail(f"{first} and {second} share {PLURAL[kind]} {sorted(shared)}: each environment needs its own (issue #17)")



# ---------------------------------------------------------------------------------------------
# Argo CD: projects, ApplicationSets, release pins, windows, notifications


def _glob(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def project_admits(project: dict[str, Any], server: str, namespace: str) -> bool:
    """Argo CD's destination check: some entry matches and no negated entry rejects."""
    allowed = denied = False
    for entry in (project.get("spec") or {}).get("destinations") or []:
        server_glob, namespace_glob = str(entry.get("server", "")), str(entry.get("namespace", ""))
        server_ok = _glob(server_glob.lstrip("!"), server) != server_glob.startswith("!") if server_glob else False
        if namespace_glob.startswith("!"):
            if server_ok and _glob(namespace_glob[1:], namespace):
                denied = True
            continue
        if server_ok and _glob(namespace_glob, namespace):
            allowed = True
    return allowed and not denied


def check_argocd(root: Path, fail: Fail) -> None:
    """One AppProject per environment that admits its own namespace and refuses the others'
    (on any cluster); every Application the ApplicationSets make lives in its environment's
    project and namespace and renders the revision release.yaml pins; prod syncs only in its
    windows; failed syncs and degraded applications of staging and prod are notified."""
    projects = {doc["metadata"]["name"]: doc for doc in _docs(root / "argocd" / "project.yaml") if doc.get("kind") == "AppProject"}
    for env in ENVIRONMENTS:
        project = projects.get(f"shop-{env}")
        if project is None:
            fail(f"argocd/project.yaml: no AppProject shop-{env}")
            continue
        for server in ("https://kubernetes.default.svc", "https://shop-prod.example:6443"):
            if not project_admits(project, server, f"shop-{env}"):
                fail(f"argocd/project.yaml: shop-{env} does not admit its own namespace shop-{env} on {server}")
            for other in ENVIRONMENTS:
                if other != env and project_admits(project, server, f"shop-{other}"):
                    fail(f"argocd/project.yaml: shop-{env} admits {other}'s namespace shop-{other} on {server}: a {env} Application could write into {other}")
            for namespace in ("kube-system", "argocd", "default"):
                if project_admits(project, server, namespace):
                    fail(f"argocd/project.yaml: shop-{env} admits namespace {namespace}")
        if ((project.get("spec") or {}).get("clusterResourceWhitelist") or []):
            fail(f"argocd/project.yaml: shop-{env} admits cluster-scoped kinds")
    windows = (projects.get("shop-prod", {}).get("spec") or {}).get("syncWindows") or []
    if not any(w.get("kind") == "allow" and not w.get("manualSync") and "*-prod" in (w.get("applications") or []) for w in windows):
        fail("argocd/project.yaml: shop-prod has no allow sync window over its applications (*-prod) that manual syncs respect")
    for env in ("dev", "staging"):
        if ((projects.get(f"shop-{env}", {}).get("spec") or {}).get("syncWindows")):
            fail(f"argocd/project.yaml: shop-{env} has sync windows; only prod waits for working hours")
    for appset in _docs(root / "argocd" / "applicationset.yaml"):
        name = appset["metadata"]["name"]
        spec = appset.get("spec") or {}
        template = spec.get("template") or {}
        tspec = template.get("spec") or {}
        generators = yaml.safe_dump(spec.get("generators"))
        literal_env = re.search(r"argocd/envs/([a-z]+)/release\.yaml", generators)
        env = literal_env.group(1) if literal_env else "{{ .environment }}"
        if "release.yaml" not in generators or f"shop.dev/env-{env}" not in generators:
            fail(f"argocd/applicationset.yaml {name}: its generators must read argocd/envs/*/release.yaml and pick the clusters labelled shop.dev/env-{env}")
        if tspec.get("project") != f"shop-{env}":
            fail(f"argocd/applicationset.yaml {name}: project {tspec.get('project')!r}; its Applications belong to shop-{env}")
        if (tspec.get("destination") or {}).get("namespace") != f"shop-{env}":
            fail(f"argocd/applicationset.yaml {name}: destination namespace {(tspec.get('destination') or {}).get('namespace')!r}, not shop-{env}")
        if (tspec.get("source") or {}).get("targetRevision") != "{{ .revision }}":
            fail(f"argocd/applicationset.yaml {name}: targetRevision {(tspec.get('source') or {}).get('targetRevision')!r}: it must be the revision release.yaml pins ({{{{ .revision }}}}), or the chart and values are not promoted with the images")
        if name == "shop":
            ignored = {(d.get("group"), d.get("kind")) for d in tspec.get("ignoreDifferences") or [] if "/spec/replicas" in (d.get("jsonPointers") or [])}
            if not {("apps", "Deployment"), ("argoproj.io", "Rollout")} <= ignored:
                fail("argocd/applicationset.yaml shop: the autoscaler owns the replicas of Deployments and Rollouts (ignoreDifferences /spec/replicas)")
    notifications = (yaml.safe_load((root / "argocd" / "argocd-notifications-cm.yaml").read_text()) or {}).get("data") or {}
    subscriptions = yaml.safe_load(notifications.get("subscriptions", "")) or []
    for trigger in ("on-sync-failed", "on-health-degraded"):
        if f"trigger.{trigger}" not in notifications:
            fail(f"argocd/argocd-notifications-cm.yaml: no trigger {trigger}")
        for env in ("staging", "prod"):
            if not any(trigger in (s.get("triggers") or []) and env in str(s.get("selector", "")) for s in subscriptions):
                fail(f"argocd/argocd-notifications-cm.yaml: nobody is told of {trigger} in {env} (subscriptions)")
    if "argocd/argocd-notifications-cm.yaml" not in (root / "docs" / "deploy.md").read_text():
        fail("docs/deploy.md does not apply argocd/argocd-notifications-cm.yaml")


CI_TAG = re.compile(r"^sha-[0-9a-f]{40}$")
#: What a service image is built from (xtask/src/promote.rs, image_sources).
IMAGE_SOURCES = ["services", "crates", "proto", "Cargo.toml", "Cargo.lock", "Dockerfile"]


def _git(root: Path) -> str | None:
    git = shutil.which("git") if (root / ".git").exists() else None
    if git:
        shallow = subprocess.run([git, "-C", str(root), "rev-parse", "--is-shallow-repository"], capture_output=True, text=True, check=False)
        if shallow.stdout.strip() == "true":
            print("argocd/envs/*/release.yaml: a shallow clone; the pinned commits are not looked up (fetch-depth: 0 does)")
            return None
    return git


def release_paths(env: str) -> list[str]:
    """The files the environment's Applications read at its pinned revision."""
    paths = ["helm/shop-service/Chart.yaml", "helm/shop-env/Chart.yaml", f"argocd/envs/{env}/values.yaml", f"argocd/envs/{env}/platform.yaml"]
    paths += [f"helm/services/{s}.yaml" for s in SERVICES] + [f"argocd/envs/{env}/{s}.yaml" for s in SERVICES]
    if env == "dev":
        paths.append("helm/shop-dev-infra/Chart.yaml")
    if env == "staging":
        paths += ["helm/shop-loadtest/Chart.yaml", "argocd/envs/staging/loadtest.yaml"]
    return paths


def check_release_pins(root: Path, fail: Fail, warn: Callable[[str], None] = print) -> None:
    """Each environment pins one revision and its images (release.yaml, read from main). The
    revision is a commit of this history holding every file its Applications read; each image
    is a tag CI pushed (sha-<commit>) of a commit at or before the revision, with its digest
    when CI recorded one. (The order of the environments along main is what `cargo xtask
    promote` enforces when it moves one.)"""
    git = _git(root)
    for env in ENVIRONMENTS:
        where = f"argocd/envs/{env}/release.yaml"
        pins = yaml.safe_load((root / where).read_text()) or {}
        revision = str(pins.get("revision", ""))
        if pins.get("environment") != env:
            fail(f"{where}: environment is {pins.get('environment')!r}")
        if not re.fullmatch(r"[0-9a-f]{40}", revision):
            fail(f"{where}: revision {revision!r} is not a full commit id: an environment pins a commit, never a branch")
            continue
        if pins.get("autoSync") is not (env != "prod"):
            fail(f"{where}: autoSync is {pins.get('autoSync')!r}; dev and staging sync by themselves, prod by hand")
        images = pins.get("images") or {}
        for name in SERVICES + ["loadtest"]:
            image = images.get(name) or {}
            tag, digest = str(image.get("tag", "")), str(image.get("digest", ""))
            if not CI_TAG.match(tag):
                fail(f"{where}: image {name} tag {tag!r} is not a tag CI pushes (sha-<the full 40-hex commit id>)")
                continue
            if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                fail(f"{where}: image {name} digest {digest!r} is not sha256:<64 hex>")
            if git and subprocess.run([git, "-C", str(root), "merge-base", "--is-ancestor", tag.removeprefix("sha-"), revision], capture_output=True, check=False).returncode != 0:
                fail(f"{where}: image {name} ({tag}) is not built from the revision or one of its ancestors")
        if not git:
            continue
        stale = sorted({
            name for name in SERVICES + ["loadtest"]
            if CI_TAG.match(str((images.get(name) or {}).get("tag", "")))
            and subprocess.run([git, "-C", str(root), "diff", "--quiet", str(images[name]["tag"]).removeprefix("sha-"), revision, "--", *(["load-tests"] if name == "loadtest" else IMAGE_SOURCES)], capture_output=True, check=False).returncode == 1
        })
        undigested = sorted(name for name in SERVICES if not str((images.get(name) or {}).get("digest", "")))
        if undigested and env != "dev":
            warn(f"{where}: warning: {', '.join(undigested)} pinned by tag only (no digest recorded); `cargo xtask promote` moves only images with digests")
        if stale:
            # Not a failure: a commit that changes code and pins an environment cannot carry
            # images of itself (CI builds them after it lands). `cargo xtask promote` refuses
            # to move such a release on.
            warn(f"{where}: warning: the images of {', '.join(stale)} predate code changes in revision {revision[:12]}; do not sync {env} before CI has built that revision's images")
        if subprocess.run([git, "-C", str(root), "merge-base", "--is-ancestor", revision, "HEAD"], capture_output=True, check=False).returncode != 0:
            fail(f"{where}: revision {revision} is not a commit of this branch's history")
            continue
        for path in release_paths(env):
            if subprocess.run([git, "-C", str(root), "cat-file", "-e", f"{revision}:{path}"], capture_output=True, check=False).returncode != 0:
                fail(f"{where}: revision {revision[:12]} has no {path}, which {env}'s Applications read at that revision")


# ---------------------------------------------------------------------------------------------
# The namespace's default deny


def check_default_deny(env: str, manifests: list[Any], fail: Fail) -> None:
    """Exactly one NetworkPolicy selects every pod of the namespace and allows nothing, and it
    belongs to the environment's platform application."""
    floors = [
        m for m in manifests
        if m.kind == "NetworkPolicy" and _spec(m).get("podSelector") in ({}, None)
        and set(_spec(m).get("policyTypes") or []) == {"Ingress", "Egress"}
        and not _spec(m).get("ingress") and not _spec(m).get("egress")
    ]
    if len(floors) != 1:
        fail(f"{env}: {len(floors)} namespace-wide default-deny NetworkPolicies ({[m.release for m in floors]}); exactly one, the platform application's")
    elif floors[0].release != "platform":
        fail(f"{env}: the namespace's default deny belongs to {floors[0].release}, not to the platform application")


# ---------------------------------------------------------------------------------------------
# The edge


def rest_paths(root: Path, service: str) -> set[str]:
    """The service's REST paths, from its utoipa annotations (`path = "/v1/..."`)."""
    found: set[str] = set()
    for source in (root / "services" / service / "src").rglob("*.rs"):
        found |= set(re.findall(r'path = "(/[^"]*)"', source.read_text()))
    return found


def grpc_methods(root: Path, service: str) -> tuple[str, dict[str, bool]]:
    """(full gRPC service name, {method: internal}) from the proto and the code: a method is
    internal when its handler admits only services (shop_kit::auth::grpc_service)."""
    proto = root / "proto" / "shop" / service / "v1" / f"{service}.proto"
    if not proto.exists():
        return "", {}
    text = proto.read_text()
    package = re.search(r"^package ([a-z0-9.]+);", text, re.M)
    name = re.search(r"^service (\w+) \{", text, re.M)
    methods = re.findall(r"^\s*rpc (\w+)\(", text, re.M)
    code = "".join(p.read_text() for p in (root / "services" / service / "src").rglob("grpc*.rs"))
    code = code.split("#[cfg(test)]")[0]
    # Each function's text up to the next function: a handler is internal when it, or a guard
    # function it calls (cart's `owner`), calls grpc_service.
    bodies = dict(re.findall(r"\bfn (\w+)\b(.*?)(?=\bfn \w+|\Z)", code, re.S))
    guards = {name for name, body in bodies.items() if "grpc_service(" in body}
    snake = lambda camel: re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()  # noqa: E731
    internal = {method: any(f"{guard}(" in bodies.get(snake(method), "") for guard in guards | {"grpc_service"}) or snake(method) in guards for method in methods}
    return (f"{package.group(1)}.{name.group(1)}" if package and name else ""), internal


def _covers(prefix: str, path: str) -> bool:
    """Gateway API PathPrefix / Ingress Prefix: whole path segments."""
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def check_edge(root: Path, env: str, manifests: list[Any], fail: Fail) -> None:
    """Staging and prod are reachable through an edge that routes exactly the public surface:
    every public REST path and public gRPC method of the code, and nothing internal - no
    internal RPC, no /metrics, probe, OpenAPI document, token endpoint or JWKS, no reflection.
    Routes attach to a listener of a rendered Gateway that admits their kind, on hostnames of
    their own; the load test goes through the edge."""
    if env == "dev":
        return
    gateways = {m.name: m for m in manifests if m.kind == "Gateway"}
    hostnames: dict[str, set[str]] = {}
    for service in SERVICES:
        objects = [m for m in manifests if m.release == service]
        where = f"{env}/{service}"
        routes = [m for m in objects if m.kind in ("HTTPRoute", "GRPCRoute", "Ingress")]
        if not routes:
            fail(f"{where}: no route at the edge (edge.mode gateway or ingress)")
            continue
        public_rest = {p for p in rest_paths(root, service) if p not in INTERNAL_REST}
        prefixes: list[str] = []
        grpc_routed: set[tuple[str, str]] = set()
        for route in routes:
            spec = _spec(route)
            if route.kind == "HTTPRoute":
                for rule in spec.get("rules") or []:
                    for match in rule.get("matches") or [{}]:
                        path = (match.get("path") or {"type": "PathPrefix", "value": "/"})
                        if path.get("type") != "PathPrefix":
                            fail(f"{where}: HTTPRoute match {path} is not a PathPrefix")
                        prefixes.append(str(path.get("value", "/")))
            elif route.kind == "GRPCRoute":
                for rule in spec.get("rules") or []:
                    for match in rule.get("matches") or [{}]:
                        method = match.get("method") or {}
                        if method.get("type", "Exact") != "Exact" or not method.get("method"):
                            fail(f"{where}: GRPCRoute match {method} is not one exact method (a whole service, or every service, would be routed)")
                        grpc_routed.add((str(method.get("service", "*")), str(method.get("method", "*"))))
            else:
                grpc_ingress = (route.obj.get("metadata", {}).get("annotations") or {}).get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"
                for rule in spec.get("rules") or []:
                    hostnames.setdefault("GRPCRoute" if grpc_ingress else "HTTPRoute", set()).add(str(rule.get("host")))
                    for path in (rule.get("http") or {}).get("paths") or []:
                        if grpc_ingress:
                            parts = str(path.get("path", "")).strip("/").split("/")
                            if path.get("pathType") != "Exact" or len(parts) != 2:
                                fail(f"{where}: gRPC Ingress path {path.get('path')} is not one exact /<service>/<method>")
                            grpc_routed.add((parts[0], parts[-1]))
                        else:
                            prefixes.append(str(path.get("path", "/")))
            for parent in spec.get("parentRefs") or []:
                if parent.get("namespace"):
                    continue  # the cluster's shared Gateway: not in this render
                gateway = gateways.get(parent.get("name"))
                if gateway is None:
                    fail(f"{where}: {route.kind} attaches to Gateway {parent.get('name')!r}, which the environment does not have (helm/shop-env edge.gateway, or edge.gateway.namespace for a shared one)")
                    continue
                listener = next((l for l in _spec(gateway).get("listeners") or [] if l.get("name") == parent.get("sectionName")), None)
                if listener is None:
                    fail(f"{where}: {route.kind} attaches to listener {parent.get('sectionName')!r}, which Gateway {gateway.name} does not have")
                    continue
                kinds = [k.get("kind") for k in (listener.get("allowedRoutes") or {}).get("kinds") or []]
                if kinds and route.kind not in kinds:
                    fail(f"{where}: {route.kind} on listener {listener.get('name')}, which admits only {kinds}")
                if listener.get("hostname") and listener.get("hostname") not in (spec.get("hostnames") or []):
                    fail(f"{where}: {route.kind} hostnames {spec.get('hostnames')} are not its listener's {listener.get('hostname')}")
            if route.kind in ("HTTPRoute", "GRPCRoute"):
                hostnames.setdefault(route.kind, set()).update(spec.get("hostnames") or [])
        for prefix in prefixes:
            for never in NEVER_ROUTED:
                if _covers(prefix, never):
                    fail(f"{where}: the edge routes {prefix}, which exposes {never}")
            if not any(_covers(prefix, path) for path in public_rest):
                fail(f"{where}: the edge routes {prefix}, which serves no public path of the service")
        for path in sorted(public_rest):
            if not any(_covers(prefix, path) for prefix in prefixes):
                fail(f"{where}: the public path {path} is not routed at the edge (edge.rest)")
        full_name, methods = grpc_methods(root, service)
        public = {(full_name, m) for m, internal in methods.items() if not internal}
        for routed in sorted(grpc_routed - public):
            reason = "an internal RPC (services only)" if routed[0] == full_name and methods.get(routed[1]) else "not a public method of the service"
            fail(f"{where}: the edge routes gRPC {routed[0]}/{routed[1]}: {reason}")
        for missing in sorted(public - grpc_routed):
            fail(f"{where}: the public gRPC method {missing[0]}/{missing[1]} is not routed at the edge (edge.grpc)")
    if hostnames.get("HTTPRoute", set()) & hostnames.get("GRPCRoute", set()):
        fail(f"{env}: HTTPRoutes and GRPCRoutes share hostnames {sorted(hostnames['HTTPRoute'] & hostnames['GRPCRoute'])}: only one kind would be accepted")
    for job in (m for m in manifests if m.release == "loadtest" and m.kind == "CronJob"):
        env_vars = {e.get("name"): e.get("value") for c in _pod_spec(job.obj).get("containers") or [] for e in c.get("env") or []}
        base = urlparse(str(env_vars.get("BASE_URL") or ""))
        if base.scheme != "https" or base.hostname not in hostnames.get("HTTPRoute", set()):
            fail(f"{env}/loadtest: the load test targets {env_vars.get('BASE_URL')!r}, not the edge's REST hostname {sorted(hostnames.get('HTTPRoute', set()))}")


# ---------------------------------------------------------------------------------------------
# The canary


def check_canary(env: str, manifests: list[Any], fail: Fail) -> None:
    """prod rolls every service out as a canary judged by AnalysisTemplates on the SLO
    recording rules; each template the Rollout names exists, gets its arguments, queries a
    recorded series, and treats no sample as no verdict rather than an error."""
    rollouts = {m.release: m for m in manifests if m.kind == "Rollout"}
    templates = {m.name: m for m in manifests if m.kind == "AnalysisTemplate"}
    records = {rule.get("record") for m in manifests if m.kind == "PrometheusRule" for group in _spec(m).get("groups") or [] for rule in group.get("rules") or [] if rule.get("record")}
    if env != "prod":
        return
    for service in SERVICES:
        rollout = rollouts.get(service)
        if rollout is None:
            fail(f"prod/{service}: not a Rollout: prod releases every service as a canary (rollout.enabled)")
            continue
        canary = (_spec(rollout).get("strategy") or {}).get("canary") or {}
        steps = canary.get("steps") or []
        weights = [step["setWeight"] for step in steps if "setWeight" in step]
        if not weights or weights != sorted(weights) or weights[-1] >= 100 or not any("pause" in s for s in steps):
            fail(f"prod/{service}: the canary's steps {steps} must raise the weight below 100 with pauses between")
        analysis = canary.get("analysis") or {}
        names = [t.get("templateName") for t in analysis.get("templates") or []]
        if not names:
            fail(f"prod/{service}: the canary has no background analysis: nothing would abort a bad release")
        passed = {a.get("name") for a in analysis.get("args") or []}
        for name in names:
            template = templates.get(name)
            if template is None:
                fail(f"prod/{service}: the canary's AnalysisTemplate {name} is not in prod (helm/shop-env analysis.enabled)")
                continue
            needed = {a.get("name") for a in _spec(template).get("args") or [] if "value" not in a and "valueFrom" not in a}
            if needed - passed:
                fail(f"prod/{service}: AnalysisTemplate {name} needs args {sorted(needed - passed)} the Rollout does not pass")
        spread = _pod_spec(rollout.obj).get("topologySpreadConstraints") or []
        if any("pod-template-hash" in (c.get("matchLabelKeys") or []) for c in spread):
            fail(f"prod/{service}: a Rollout's pods carry rollouts-pod-template-hash, not pod-template-hash (topologySpreadConstraints.matchLabelKeys)")
    for name, template in templates.items():
        for metric in _spec(template).get("metrics") or []:
            query = str(((metric.get("provider") or {}).get("prometheus") or {}).get("query", ""))
            series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", query)
            if not series or series.group(1) not in records:
                fail(f"prod: AnalysisTemplate {name} queries {query!r}, not one of the SLO recording rules {sorted(r for r in records if r)}")
            if 'job="{{args.service}}"' not in query or 'namespace="{{args.namespace}}"' not in query:
                fail(f"prod: AnalysisTemplate {name} queries {query!r}: it must select the canary's service and namespace (job, namespace), or an empty answer passes every measurement")
            if "len(result) == 0 ||" not in str(metric.get("successCondition", "")):
                fail(f"prod: AnalysisTemplate {name}: with no sample (no traffic yet) result[0] is an error, and four errors abort the rollout: start the condition with `len(result) == 0 ||`")


# ---------------------------------------------------------------------------------------------
# Scaling


def check_scaling(env: str, manifests: list[Any], fail: Fail) -> None:
    """Staging and prod scale with KEDA, which is itself the metrics provider: CPU, the
    request rate from a recorded series, the consumer lag from the brokers. A consumer group
    never has more replicas than its topics have partitions, and every prod autoscaler can
    scale above its minimum."""
    if env == "dev":
        return
    partitions = {_spec(m).get("topicName", m.name): int(_spec(m).get("partitions", 0)) for m in manifests if m.kind == "KafkaTopic"}
    records = {rule.get("record") for m in manifests if m.kind == "PrometheusRule" for group in _spec(m).get("groups") or [] for rule in group.get("rules") or [] if rule.get("record")}
    auths = {m.name: m for m in manifests if m.kind == "TriggerAuthentication"}
    provided = {name for name, _ in provided_secrets(manifests)}
    for service in SERVICES:
        objects = [m for m in manifests if m.release == service]
        where = f"{env}/{service}"
        config = _config(manifests, service)
        prefix = config.get("KAFKA_TOPIC_PREFIX", "")
        scaled = [m for m in objects if m.kind == "ScaledObject"]
        if any(m.kind == "HorizontalPodAutoscaler" for m in objects):
            fail(f"{where}: an HPA of its own: KEDA makes the HPA from the ScaledObject, and refuses a workload another HPA scales")
        if len(scaled) != 1:
            fail(f"{where}: {len(scaled)} ScaledObjects, expected one")
            continue
        spec = _spec(scaled[0])
        low, high = int(spec.get("minReplicaCount", 0)), int(spec.get("maxReplicaCount", 100))
        if env == "prod" and high <= low:
            fail(f"{where}: the autoscaler's maximum {high} is not above its minimum {low}: it cannot scale")
        behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}
        if "stabilizationWindowSeconds" not in (behavior.get("scaleDown") or {}):
            fail(f"{where}: no scale-down behaviour stated (advanced.horizontalPodAutoscalerConfig.behavior.scaleDown)")
        consumes = {str(acl.get("resource", {}).get("name")) for m in objects if m.kind == "KafkaUser" for acl in _spec(m).get("authorization", {}).get("acls") or [] if "Read" in (acl.get("operations") or []) and acl.get("resource", {}).get("type") == "topic"}
        for topic in sorted(consumes):
            if topic in partitions and partitions[topic] < high:
                fail(f"{where}: may scale to {high} replicas but {topic} has {partitions[topic]} partitions: the replicas above {partitions[topic]} would idle and KEDA's lag scaler stops at {partitions[topic]}")
        for trigger in spec.get("triggers") or []:
            metadata = trigger.get("metadata") or {}
            if trigger.get("type") == "prometheus":
                series = re.search(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", str(metadata.get("query", "")))
                if not series or series.group(1) not in records or not metadata.get("serverAddress"):
                    fail(f"{where}: the request-rate trigger's query {metadata.get('query')!r} reads no recording rule of the render, or has no serverAddress")
            if trigger.get("type") == "kafka":
                if metadata.get("consumerGroup") != f"{prefix}{service}-service":
                    fail(f"{where}: the lag trigger reads group {metadata.get('consumerGroup')!r}, the service's is {prefix}{service}-service")
                if metadata.get("topic") not in consumes:
                    fail(f"{where}: the lag trigger reads topic {metadata.get('topic')!r}, which the service does not consume ({sorted(consumes)})")
                if metadata.get("bootstrapServers") != config.get("KAFKA_BROKERS"):
                    fail(f"{where}: the lag trigger asks {metadata.get('bootstrapServers')!r}, the service connects to {config.get('KAFKA_BROKERS')!r}")
                auth = auths.get((trigger.get("authenticationRef") or {}).get("name", ""))
                if metadata.get("sasl") and auth is None:
                    fail(f"{where}: the lag trigger uses SASL without a TriggerAuthentication of the render")
                for ref in (_spec(auth).get("secretTargetRef") or []) if auth else []:
                    if ref.get("name") not in provided:
                        fail(f"{where}: TriggerAuthentication {auth.name} reads Secret {ref.get('name')}, which nothing of {env} makes")
