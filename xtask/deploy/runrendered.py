"""Runs the dev render of the Shop charts as local processes: the rendered manifests run.

deploy-check proves the manifests are well formed; this proves they run (issue #16, item 3).
The Deployments of `render_env(root, "dev")` start exactly as their containers say, with the
rendered Secrets and ConfigMaps, after their migration Jobs; each must pass its probes at its
pod's address, and then the six serve the k6 smoke through their Services. Renaming an env
var, a secret file or key, a port or a probe path in the chart without the code (or the other
way round) fails here; `selftest` proves it with deliberate breaks.

    target/deploy-venv/bin/python xtask/deploy/runrendered.py [--root R] [--bin-dir D]
        [--log-dir L] [--k6 PATH] [--deadline SECONDS]     (after `cargo build --bins`)
    target/deploy-venv/bin/python xtask/deploy/runrendered.py selftest

Each process logs to `<log-dir>/<workload>.log` (and postgres.log, redis.log, tansu.log,
k6.log); the default log dir is target/runrendered.

Taken from the manifests as they are:

- argv: the container's command and args over the image's ENTRYPOINT and CMD (read from the
  Dockerfile's target of the image, `order` for `order-service`, through the stages it is
  built FROM), with `$(VAR)` expanded. The ENTRYPOINT /usr/local/bin/service is the service's
  binary `<bin-dir>/<image name>` (the target copies `<service>-service` into it);
- the environment: PATH, HOSTNAME and the image's ENV, then envFrom, then env (value,
  fieldRef, secretKeyRef, configMapKeyRef) in the kubelet's order, and nothing of the
  runner's own. A Secret,
  ConfigMap or key the render does not have is an error that names it, unless `optional`;
- volumes: secret and configMap (items, modes) and emptyDir, each mount (subPath too) at its
  path under the pod's temporary root;
- Sync-hook / pre-install hook Jobs (the migrations) run to completion before any Deployment,
  all at once, each within its activeDeadlineSeconds (a failure is not retried);
- startupProbe, then readinessProbe and livenessProbe (httpGet, tcpSocket; named ports
  resolved through the container's ports), retried every periodSeconds but at least every
  half second (looser than the kubelet), until each passes or one overall deadline passes;
- the stop: the preStop sleep, SIGTERM, SIGKILL once terminationGracePeriodSeconds have
  passed; a service must exit 0 before that.

What is translated, and why:

- paths: an env value or argument at or under a mountPath points at that path under the pod's
  temporary root. This is the one translation besides networking;
- networking: the run happens in a network namespace of its own (as root the runner
  re-executes itself under `unshare --net`) holding only loopback, so nothing reaches the
  machine's servers or another run's, and a code default such as 127.0.0.1:6379 finds
  nothing, as in a pod. Each pod gets its own loopback address (127.77.1.N): in its env
  values, arguments and mounted Secret/ConfigMap values the wildcard (`0.0.0.0`, `[::]`) and
  loopback (`127.0.0.1`, `localhost`, `[::1]`) hosts become it, as in a pod's own network
  namespace. Each Service gets its own address (127.77.2.N) with a TCP forwarder per port to
  its pod's targetPort (kube-proxy's part), and the same values naming a Service host
  (`cart`, `cart:8080`, `http://user/x`, `cart.shop-dev.svc[.cluster.local]`) are rewritten to
  it; a port the Service does not serve is an error. Service ports are bound as they are;
  where that is refused (below 1024 without root) the forwarder takes port + 10000, says so,
  and the rewritten values name that port;
- the dev-infra chart's Postgres, Redis and Kafka Deployments are replaced by private servers
  on free ports under the temporary root, behind their Services (whose targetPorts are still
  resolved through those Deployments' ports), started only when a running pod names them:
  a Postgres cluster made the way the postgres image's entrypoint makes one, from the
  Deployment's resolved env and mounted init files (initdb with POSTGRES_USER as the
  superuser and POSTGRES_PASSWORD, password authentication over TCP, CREATE DATABASE
  POSTGRES_DB, then each *.sql of /docker-entrypoint-initdb.d as POSTGRES_USER in
  POSTGRES_DB); a redis-server with the Deployment's args; a tansu broker advertising what
  the Deployment's KAFKA_ADVERTISED_LISTENERS says (the kafka Service);
- the processes run as the runner's user (Postgres as `postgres` when that is root), not as
  runAsUser; resources, securityContext and NetworkPolicies are not enforced.

Not in the manifests: the smoke needs a catalog, which dev does not load, so the full run
loads services/product/seed/demo.sql into the product database (`cargo xtask seed`'s step)
and says so. The smoke's admin is the one the rendered user container seeds
(SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD, or their _FILE); a render that seeds none fails.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import helm_python

import shopdeploy
from shopdeploy import Manifest

ENV = "dev"
POD_NETWORK = "127.77.1."
SERVICE_NETWORK = "127.77.2."
#: Added to a Service port that cannot be bound as it is (below 1024 without root).
UNPRIVILEGED_OFFSET = 10_000
#: The port a URL of each scheme means when it names none.
SCHEME_PORTS = {"http": 80, "https": 443, "postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379}
#: The PATH a container runtime gives an image that sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The dev-infra images that private servers stand in for.
POSTGRES_IMAGE = "docker.io/library/postgres"
REDIS_IMAGE = "docker.io/library/redis"
KAFKA_IMAGE = "docker.io/apache/kafka"
REPLACED_IMAGES = (POSTGRES_IMAGE, REDIS_IMAGE, KAFKA_IMAGE)
#: The redis image's WORKDIR, where redis-server writes (docker-library/redis).
REDIS_WORKDIR = "/data"
#: The hook annotations that make a Job run before the Deployments (Helm, Argo CD).
PRE_SYNC_HOOKS = {"helm.sh/hook": "pre-install", "argocd.argoproj.io/hook": "Sync"}
SMOKE_TIMEOUT_SECONDS = 240


class RunFailed(Exception):
    """What makes the check fail: a problem in the manifests, or in the run."""


Say = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# The render and the image


@dataclass
class Image:
    """What an image target of the Dockerfile gives a service container (from its stage chain)."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str


def read_images(dockerfile: Path) -> dict[str, Image]:
    """ENTRYPOINT, CMD, ENV and WORKDIR of every named stage (exec forms; ENV as key=value),
    each stage starting from what its `FROM <stage>` gives it; `${ARG}` in ENV is the ARG's
    default (the build passes no other to a local image)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    images: dict[str, Image] = {}
    arguments: dict[str, str] = {}
    image = Image(entrypoint=[], cmd=[], env={}, workdir="/")
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = rest.split()
            base = images.get(parts[0])
            image = (
                Image(entrypoint=list(base.entrypoint), cmd=list(base.cmd), env=dict(base.env), workdir=base.workdir)
                if base
                else Image(entrypoint=[], cmd=[], env={}, workdir="/")
            )
            if len(parts) == 3 and parts[1].upper() == "AS":
                images[parts[2]] = image
        elif instruction == "ARG":
            name, _, default = rest.strip().partition("=")
            arguments[name] = default
        elif instruction == "ENV":
            for token in shlex.split(rest):
                name, equals, value = token.partition("=")
                if not equals:
                    raise RunFailed(f"{dockerfile}: only `ENV key=value` is understood: {line}")
                image.env[name] = re.sub(r"\$\{(\w+)\}", lambda match: arguments.get(match.group(1), ""), value)
        elif instruction in {"ENTRYPOINT", "CMD"}:
            if not rest.strip().startswith("["):
                raise RunFailed(f"{dockerfile}: {instruction} must be in exec form (the image has no shell)")
            setattr(image, instruction.lower(), json.loads(rest))
        elif instruction == "WORKDIR":
            image.workdir = rest.strip()
    return images


def image_target(repository: str) -> str:
    """The Dockerfile target an image is built from: `…/order-service` → `order`."""
    return repository.rsplit("/", 1)[-1].removesuffix("-service")


def image_repository(image: str) -> str:
    """`ghcr.io/shop-platform/order-service:sha-1@sha256:...` → `ghcr.io/shop-platform/order-service`."""
    name = image.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


@dataclass
class Rendered:
    """The dev render, indexed the way the kubelet looks things up."""

    namespace: str
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, bytes]] = field(default_factory=dict)
    services: list[Manifest] = field(default_factory=list)
    deployments: list[Manifest] = field(default_factory=list)
    hooks: list[Manifest] = field(default_factory=list)

    def values(self, kind: str, name: str, optional: bool) -> dict[str, bytes]:
        """All keys of a Secret or ConfigMap; one the render lacks is an error unless optional."""
        store = self.secrets if kind == "Secret" else self.config_maps
        if name not in store and not optional:
            raise RunFailed(f"{kind} {name} is not in the dev render")
        return store.get(name, {})

    def value(self, kind: str, name: str, key: str, optional: bool) -> bytes | None:
        """One key; a missing Secret, ConfigMap or key is an error unless optional."""
        values = self.values(kind, name, optional)
        if key not in values and not optional:
            raise RunFailed(f"{kind} {name} has no key {key} (its keys: {', '.join(sorted(values)) or 'none'})")
        return values.get(key)


def _data(obj: dict[str, Any]) -> dict[str, bytes]:
    """A Secret's data (base64) and stringData, or a ConfigMap's data and binaryData (base64)."""
    encoded, plain = ("data", "stringData") if obj.get("kind") == "Secret" else ("binaryData", "data")
    data = {key: base64.b64decode(value) for key, value in (obj.get(encoded) or {}).items()}
    data.update({key: str(value).encode() for key, value in (obj.get(plain) or {}).items()})
    return data


def index(manifests: list[Manifest], namespace: str) -> Rendered:
    rendered = Rendered(namespace)
    for manifest in manifests:
        where = manifest.obj.get("metadata", {}).get("namespace", namespace)
        if where != namespace:
            raise RunFailed(f"{manifest.label()} is in namespace {where}, not {namespace}")
        annotations = manifest.obj.get("metadata", {}).get("annotations") or {}
        if manifest.kind == "Secret":
            rendered.secrets[manifest.name] = _data(manifest.obj)
        elif manifest.kind == "ConfigMap":
            rendered.config_maps[manifest.name] = _data(manifest.obj)
        elif manifest.kind == "Service":
            rendered.services.append(manifest)
        elif manifest.kind == "Deployment":
            rendered.deployments.append(manifest)
        elif manifest.kind == "Job" and any(
            phase in str(annotations.get(key, "")).split(",") for key, phase in PRE_SYNC_HOOKS.items()
        ):
            rendered.hooks.append(manifest)
        elif manifest.kind in shopdeploy.WORKLOAD_KINDS:
            raise RunFailed(f"{manifest.label()}: the runner runs only Deployments and hook Jobs")
    return rendered


# ---------------------------------------------------------------------------------------------
# Pods


@dataclass
class Container:
    """One container, resolved before anything starts: what runs, with what, where it logs."""

    name: str
    spec: dict[str, Any]
    ports: dict[str, int]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = Path("/")
    log: Path = Path("/dev/null")
    probes: list[Probe] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Pod:
    """The one pod of a workload in dev (a Deployment's single replica, or a hook Job's)."""

    workload: Manifest
    name: str
    ip: str
    root: Path
    containers: list[Container]
    #: Set by `prepare`.
    translate: Translator | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return shopdeploy.pod_spec(self.workload.obj)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.workload.obj.get("spec", {}).get("template", {}).get("metadata") or {}

    @property
    def repository(self) -> str:
        return image_repository(str(self.containers[0].spec.get("image", "")))

    def port(self, port: Any, what: str) -> int:
        """A port number, or a name resolved through the containers' ports."""
        if str(port).isdigit():
            return int(port)
        for container in self.containers:
            if port in container.ports:
                return container.ports[port]
        known = ", ".join(f"{name}={number}" for c in self.containers for name, number in c.ports.items()) or "none"
        raise RunFailed(
            f"{what}: {port} is not a port of {self.workload.kind}/{self.workload.name}'s containers (their ports: {known})"
        )


def make_pod(workload: Manifest, ip: str, root: Path) -> Pod:
    spec = shopdeploy.pod_spec(workload.obj)
    if spec.get("initContainers"):
        raise RunFailed(f"{workload.label()}: initContainers are not run by the runner")
    containers = [
        Container(
            str(container.get("name")),
            container,
            {str(port["name"]): int(port["containerPort"]) for port in container.get("ports") or [] if port.get("name")},
        )
        for container in spec.get("containers") or []
    ]
    name = f"{workload.name}-0"
    return Pod(workload, name, ip, root / name, containers)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)`: a variable defined before is replaced, `$$` is `$`, the rest stays."""
    return _REFERENCE.sub(lambda match: "$" if match.group(0) == "$$" else env.get(match.group(1), match.group(0)), value)


def field_value(pod: Pod, path: str) -> str:
    keyed = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if keyed:
        return str((pod.metadata.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    values = {
        "metadata.name": pod.name,
        "metadata.namespace": str(pod.workload.obj.get("metadata", {}).get("namespace", "")),
        "status.podIP": pod.ip,
        "spec.serviceAccountName": str(pod.spec.get("serviceAccountName", "default")),
    }
    if path not in values:
        raise RunFailed(f"fieldRef {path} is not supported by the runner")
    return values[path]


def container_env(pod: Pod, container: Container, rendered: Rendered) -> dict[str, str]:
    """envFrom, then env, as the kubelet builds them (untranslated)."""
    env: dict[str, str] = {}
    for source in container.spec.get("envFrom") or []:
        kind, reference = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        for key, data in rendered.values(kind, reference["name"], bool(reference.get("optional"))).items():
            if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", key):
                env[f"{source.get('prefix', '')}{key}"] = data.decode()
    for item in container.spec.get("env") or []:
        name = item["name"]
        source = item.get("valueFrom")
        if source is None:
            env[name] = expand(str(item.get("value", "")), env)
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            if "secretKeyRef" in source:
                kind, reference = "Secret", source["secretKeyRef"]
            else:
                kind, reference = "ConfigMap", source["configMapKeyRef"]
            try:
                value = rendered.value(kind, reference["name"], reference["key"], bool(reference.get("optional")))
            except RunFailed as error:
                raise RunFailed(f"env {name}: {error}") from None
            if value is not None:
                env[name] = value.decode()
        else:
            raise RunFailed(f"env {name}: valueFrom {', '.join(source)} is not supported by the runner")
    return env


def write_volumes(pod: Pod, rendered: Rendered) -> None:
    """Each volume under `<pod root>/.volumes/<name>`, each mount a symlink at its mountPath
    under the pod root. Secret and ConfigMap values are translated like env values."""
    assert pod.translate is not None
    volumes = pod.root / ".volumes"
    for volume in pod.spec.get("volumes") or []:
        directory = volumes / volume["name"]
        directory.mkdir(parents=True)
        if "emptyDir" in volume:
            continue
        if "secret" not in volume and "configMap" not in volume:
            kinds = ", ".join(key for key in volume if key != "name")
            raise RunFailed(f"volume {volume['name']}: {kinds} volumes are not supported by the runner")
        kind, source = ("Secret", volume["secret"]) if "secret" in volume else ("ConfigMap", volume["configMap"])
        name = str(source.get("secretName") if kind == "Secret" else source.get("name"))
        optional = bool(source.get("optional"))
        try:
            values = rendered.values(kind, name, optional)
            for item in source.get("items") or [{"key": key, "path": key} for key in sorted(values)]:
                data = rendered.value(kind, name, item["key"], optional)
                if data is None:
                    continue
                path = directory / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_translate_file(data, pod.translate))
                path.chmod(int(item.get("mode", source.get("defaultMode", 0o644))))
        except RunFailed as error:
            raise RunFailed(f"volume {volume['name']}: {error}") from None
    names = {volume["name"] for volume in pod.spec.get("volumes") or []}
    for container in pod.containers:
        for mount in container.spec.get("volumeMounts") or []:
            if mount["name"] not in names:
                raise RunFailed(f"container {container.name}: the volumeMount at {mount['mountPath']} names no volume {mount['name']}")
            link = pod.root / str(mount["mountPath"]).lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(volumes / mount["name"] / mount.get("subPath", ""))


def _translate_file(data: bytes, translate: Translator) -> bytes:
    """A one-line text value is translated (a URL in a Secret); anything else is kept."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return data
    body, newline = (text[:-1], "\n") if text.endswith("\n") else (text, "")
    return (translate(body) + newline).encode()


def prepare(
    pod: Pod, rendered: Rendered, image: Image | None, services: dict[str, ServiceAddress], bin_dir: Path, log_dir: Path
) -> None:
    """Everything about a pod that can be known before anything starts: its volumes on disk,
    each container's env, argv and probes, translated. `image` is the Dockerfile's, for a
    Shop service (None for a dev-infra pod a private server stands in for)."""
    pod.root.mkdir(parents=True)
    mounts = [str(mount["mountPath"]) for container in pod.containers for mount in container.spec.get("volumeMounts") or []]
    pod.translate = Translator(rendered.namespace, services, pod.ip, pod.root, mounts)
    write_volumes(pod, rendered)
    for container in pod.containers:
        raw = container_env(pod, container, rendered)
        base = {"PATH": DEFAULT_PATH, "HOSTNAME": pod.name, **(image.env if image else {})}
        for name, value in {**base, **raw}.items():
            try:
                container.env[name] = pod.translate(value)
            except RunFailed as error:
                raise RunFailed(f"container {container.name} env {name}={value!r}: {error}") from None
        command = container.spec.get("command") or (image.entrypoint if image else [])
        args = container.spec.get("args") or ([] if container.spec.get("command") or not image else image.cmd)
        container.argv = [pod.translate(expand(str(part), raw)) for part in [*command, *args]]
        if image is None:
            continue
        single = len(pod.containers) == 1
        container.log = log_dir / (f"{pod.workload.name}.log" if single else f"{pod.workload.name}.{container.name}.log")
        if container.argv[:1] != image.entrypoint[:1]:
            raise RunFailed(
                f"container {container.name}: {container.argv[:1]} is not in the image (its ENTRYPOINT is {image.entrypoint})"
            )
        binary = bin_dir / pod.repository.rsplit("/", 1)[-1]
        if not binary.exists():
            raise RunFailed(f"container {container.name}: {binary} is not built (cargo build --bins)")
        container.argv[0] = str(binary)
        container.cwd = pod.root / str(container.spec.get("workingDir") or image.workdir).lstrip("/")
        container.cwd.mkdir(parents=True, exist_ok=True)
        if pod.workload.kind == "Deployment":
            container.probes = probes(pod, container)
        hooks = [f"{hook} {kind}" for hook, handler in (container.spec.get("lifecycle") or {}).items() for kind in handler]
        if any(hook != "preStop sleep" for hook in hooks):
            raise RunFailed(f"container {container.name}: lifecycle {', '.join(hooks)}: the runner runs only a preStop sleep")


def start(pod: Pod) -> None:
    for container in pod.containers:
        with container.log.open("wb") as log:
            container.process = subprocess.Popen(
                container.argv,
                env=container.env,
                cwd=container.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text[-lines:]) or "    (empty)"


def stop(pods: list[Pod], say: Say) -> list[str]:
    """As the kubelet stops pods: the preStop sleep, SIGTERM, SIGKILL once
    terminationGracePeriodSeconds (counted from the preStop) have passed. Returns the
    problems: a service killed, or exiting other than 0."""
    problems = []
    began = time.monotonic()
    running = []
    for pod in pods:
        grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
        for container in pod.containers:
            if container.process is not None and container.process.poll() is None:
                sleep = ((container.spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
                running.append((pod, container, container.process, float(sleep), grace))
    terminated: set[int] = set()
    while running:
        elapsed = time.monotonic() - began
        for entry in list(running):
            pod, container, process, sleep, grace = entry
            code = process.poll()
            if code is not None:
                running.remove(entry)
                if code != 0:
                    problems.append(f"{pod.name}: exited with {code} after SIGTERM (a service exits 0); see {container.log}")
            elif elapsed >= grace:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                running.remove(entry)
                problems.append(
                    f"{pod.name}: still running {grace:g}s after its preStop began (terminationGracePeriodSeconds): killed"
                )
            elif elapsed >= sleep and process.pid not in terminated:
                os.killpg(process.pid, signal.SIGTERM)
                terminated.add(process.pid)
        time.sleep(0.05)
    if terminated:
        say(f"runrendered: {len(terminated)} pods stopped in {time.monotonic() - began:.1f}s (preStop sleep, SIGTERM)")
    return problems


# ---------------------------------------------------------------------------------------------
# Networking: addresses, the rewriting of values, the forwarders


@dataclass
class ServiceAddress:
    """One Service: its own address, and per Service port the pod's target and the bound port."""

    name: str
    ip: str
    backend: Pod
    #: Service port → (host, port) the forwarder connects to.
    targets: dict[int, tuple[str, int]] = field(default_factory=dict)
    #: Service port → port name.
    names: dict[int, str] = field(default_factory=dict)
    #: Service port → the port its forwarder listens on.
    bound: dict[int, int] = field(default_factory=dict)

    def url(self, port_name: str) -> str:
        port = next((number for number, name in self.names.items() if name == port_name), None)
        if port is None:
            raise RunFailed(f"Service {self.name} has no port named {port_name}")
        return f"http://{self.ip}:{self.bound[port]}"


_ADDRESS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<userinfo>[^@/\s]*@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?(?P<rest>[/?#]\S*)?"
)
_POD_ITSELF = {"0.0.0.0", "[::]", "127.0.0.1", "localhost", "[::1]"}


@dataclass
class Translator:
    """Rewrites one pod's values: mount paths, its own addresses, Service hosts."""

    namespace: str
    services: dict[str, ServiceAddress]
    pod_ip: str
    root: Path
    mounts: list[str]
    #: The Services its values name (a partial run starts the servers these need).
    named: set[str] = field(default_factory=set)

    def __call__(self, value: str) -> str:
        if any(value == mount or value.startswith(mount.rstrip("/") + "/") for mount in self.mounts):
            return str(self.root) + value
        if "\n" in value:
            return value
        return ",".join(self._address(element) for element in value.split(","))

    def _service(self, host: str) -> ServiceAddress | None:
        for suffix in (f".{self.namespace}.svc.cluster.local", f".{self.namespace}.svc", f".{self.namespace}", ""):
            if host.endswith(suffix) and host[: len(host) - len(suffix)] in self.services:
                return self.services[host[: len(host) - len(suffix)]]
        return None

    def _address(self, element: str) -> str:
        match = _ADDRESS.fullmatch(element)
        if not match:
            return element
        port = match["port"]
        if match["host"] in _POD_ITSELF:
            host = self.pod_ip
        else:
            service = self._service(match["host"])
            if service is None:
                return element
            self.named.add(service.name)
            host = service.ip
            number = int(port) if port else SCHEME_PORTS.get((match["scheme"] or "")[:-3].lower())
            if number is not None and number not in service.targets:
                served = ", ".join(f"{p} ({service.names.get(p) or 'unnamed'})" for p in sorted(service.targets))
                raise RunFailed(f"{element!r} names port {number} of Service {service.name}, which serves {served}")
            if number is not None and (port or service.bound[number] != number):
                port = str(service.bound[number])
        return "".join([match["scheme"] or "", match["userinfo"] or "", host, f":{port}" if port else "", match["rest"] or ""])


def plan_services(rendered: Rendered, pods: list[Pod], private_ports: dict[str, int]) -> dict[str, ServiceAddress]:
    """Each Service's address and targets: the one pod its selector selects, at the
    targetPort resolved through that pod's container ports (for a dev-infra pod, its private
    server's port). Raises RunFailed listing every Service that does not resolve."""
    services: dict[str, ServiceAddress] = {}
    problems = []
    for number, manifest in enumerate(rendered.services, start=1):
        selector = manifest.obj.get("spec", {}).get("selector") or {}
        selected = [
            pod
            for pod in pods
            if pod.workload.kind == "Deployment" and selector.items() <= (pod.metadata.get("labels") or {}).items()
        ]
        if len(selected) != 1:
            problems.append(f"{manifest.label()}: its selector {selector} selects {len(selected)} Deployments' pods, not one")
            continue
        service = ServiceAddress(manifest.name, f"{SERVICE_NETWORK}{number}", selected[0])
        for port in manifest.obj["spec"].get("ports") or []:
            name = port.get("name", "")
            try:
                what = f"Service {manifest.name} port {name or port['port']} targetPort"
                target = selected[0].port(port.get("targetPort", port["port"]), what)
            except RunFailed as error:
                problems.append(f"{manifest.release}: {error}")
                continue
            private = private_ports.get(selected[0].name)
            service.targets[int(port["port"])] = ("127.0.0.1", private) if private else (selected[0].ip, target)
            service.names[int(port["port"])] = name
        services[manifest.name] = service
    if problems:
        raise RunFailed("\n".join(problems))
    return services


def bind(ip: str, port: int, say: Say) -> socket.socket:
    """A listening socket at ip:port, or at ip:port+10000 where the port is refused (EACCES)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((ip, port))
    except PermissionError:
        say(f"runrendered: binding {ip}:{port} is refused (not root): the Service port is {port + UNPRIVILEGED_OFFSET} instead")
        listener.bind((ip, port + UNPRIVILEGED_OFFSET))
    listener.listen(128)
    return listener


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Forwarder:
    """One Service port: each connection accepted is piped to the pod's targetPort; one the
    pod does not accept is closed."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.listener = listener
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        _pipe(upstream, client)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        sink.close()
    finally:
        source.close()


def listening(ip: str) -> list[int]:
    """The TCP ports listened on at `ip` (or at every address), from /proc/net/tcp."""
    wanted = {socket.inet_aton(ip)[::-1].hex().upper(), "00000000"}
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = line.split()
        address, port = columns[1].split(":")
        if columns[3] == "0A" and address in wanted:
            ports.add(int(port, 16))
    return sorted(ports)


def isolate(say: Say) -> None:
    """Runs this process in a network namespace of its own holding only loopback: as root it
    re-executes itself under `unshare --net`. Without root it runs as it is, where a code
    default such as 127.0.0.1:6379 may reach this machine's servers, and says so."""
    interfaces = [line.split(":")[0].strip() for line in Path("/proc/self/net/dev").read_text().splitlines()[2:]]
    if interfaces == ["lo"]:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        say("runrendered: in a network namespace of its own (only loopback)")
        return
    if os.geteuid() != 0:
        say("runrendered: not root, so not isolated: a code default such as 127.0.0.1:6379 may reach this machine's servers")
        return
    sys.stdout.flush()
    os.execvp("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv])


# ---------------------------------------------------------------------------------------------
# Probes


@dataclass
class Probe:
    """One declared probe of a container, its port resolved."""

    pod: Pod
    container: Container
    kind: str
    spec: dict[str, Any]
    port: int
    port_label: str
    passed: bool = False
    answer: str = "not probed yet"
    due: float = 0.0

    def describe(self) -> str:
        if "httpGet" in self.spec:
            return f"GET {self.spec['httpGet'].get('path', '/')} on port {self.port_label}"
        return f"TCP connect on port {self.port_label}"

    def check(self) -> bool:
        timeout = float(self.spec.get("timeoutSeconds", 1))
        if "tcpSocket" in self.spec:
            try:
                socket.create_connection((self.pod.ip, self.port), timeout=timeout).close()
            except OSError as error:
                self.answer = str(error)
                return False
            return True
        get = self.spec["httpGet"]
        connection = http.client.HTTPConnection(get.get("host") or self.pod.ip, self.port, timeout=timeout)
        try:
            connection.request("GET", get.get("path", "/"), headers={h["name"]: h["value"] for h in get.get("httpHeaders") or []})
            response = connection.getresponse()
            body = response.read(300).decode(errors="replace").strip()
        except (OSError, http.client.HTTPException) as error:
            self.answer = str(error) or type(error).__name__
            return False
        finally:
            connection.close()
        self.answer = f"HTTP {response.status} {body}".strip()
        return 200 <= response.status < 400


def probes(pod: Pod, container: Container) -> list[Probe]:
    found = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container.spec.get(kind)
        if not spec:
            continue
        handler = next((key for key in ("httpGet", "tcpSocket", "grpc", "exec") if key in spec), "no")
        if handler not in {"httpGet", "tcpSocket"}:
            raise RunFailed(f"container {container.name} {kind}: {handler} probes are not supported by the runner")
        if spec[handler].get("scheme", "HTTP") != "HTTP":
            raise RunFailed(f"container {container.name} {kind}: only HTTP probes are supported by the runner")
        port = spec[handler].get("port")
        number = pod.port(port, f"container {container.name} {kind} port")
        found.append(Probe(pod, container, kind, spec, number, str(number) if str(port) == str(number) else f"{port} ({number})"))
    return found


def await_probes(pods: list[Pod], deadline: float, say: Say) -> None:
    """Polls every probe of every pod until each has passed, the readiness and liveness
    probes once the startup probe has. Fails on a process that exits, on a startup probe past
    its failureThreshold, or when `deadline` seconds have passed."""
    began = time.monotonic()
    pending = [probe for pod in pods for container in pod.containers for probe in container.probes]
    while not all(probe.passed for probe in pending):
        now = time.monotonic()
        for pod in pods:
            for container in pod.containers:
                assert container.process is not None
                if container.process.poll() is not None:
                    raise RunFailed(
                        f"{pod.workload.release}: {pod.name} exited with {container.process.returncode} while starting; "
                        f"last lines of {container.log}:\n{tail(container.log)}"
                    )
        for probe in pending:
            starting = any(p.container is probe.container and p.kind == "startupProbe" and not p.passed for p in pending)
            if probe.passed or now < probe.due or (starting and probe.kind != "startupProbe"):
                continue
            probe.passed = probe.check()
            probe.due = now + min(float(probe.spec.get("periodSeconds", 10)), 0.5)
            mine = [p for p in pending if p.pod is probe.pod]
            if probe.passed and all(p.passed for p in mine):
                passed = ", ".join(f"{p.kind} {p.describe()}" for p in mine)
                say(f"runrendered: {probe.pod.name}: {passed} passed after {now - began:.1f}s")
            elif not probe.passed and probe.kind == "startupProbe":
                spec = probe.spec
                budget = float(spec.get("initialDelaySeconds", 0)) + float(spec.get("periodSeconds", 10)) * float(spec.get("failureThreshold", 3))
                if now - began > budget:
                    raise _probe_failure(probe, f"within its failureThreshold ({budget:g}s; the kubelet would restart it)")
        if now - began > deadline:
            raise _probe_failure(next(probe for probe in pending if not probe.passed), f"within the deadline of {deadline:g}s")
        time.sleep(0.1)


def _probe_failure(probe: Probe, when: str) -> RunFailed:
    ports = ", ".join(map(str, listening(probe.pod.ip))) or "no port"
    return RunFailed(
        f"{probe.pod.workload.release}: {probe.pod.name} {probe.kind} {probe.describe()} did not succeed {when}; "
        f"last answer: {probe.answer}; the pod listens on {ports} at {probe.pod.ip}; "
        f"last lines of {probe.container.log}:\n{tail(probe.container.log)}"
    )


def run_jobs(jobs: list[Pod], say: Say) -> None:
    """Every hook Job's pod at once (one per service), each to exit 0 within its
    activeDeadlineSeconds; the kubelet's retries (backoffLimit) are not made."""
    began = time.monotonic()
    for job in jobs:
        start(job)
    for job in jobs:
        limit = float(job.workload.obj.get("spec", {}).get("activeDeadlineSeconds", 600))
        for container in job.containers:
            assert container.process is not None
            try:
                code = container.process.wait(timeout=max(limit - (time.monotonic() - began), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(container.process.pid, signal.SIGKILL)
                container.process.wait()
                raise RunFailed(
                    f"{job.workload.release}: Job {job.workload.name} ran past its activeDeadlineSeconds ({limit:g}s)"
                ) from None
            if code != 0:
                raise RunFailed(
                    f"{job.workload.release}: Job {job.workload.name} failed (exit {code}); "
                    f"last lines of {container.log}:\n{tail(container.log)}"
                )
    if jobs:
        say(f"runrendered: hook Jobs {', '.join(job.workload.name for job in jobs)} completed in {time.monotonic() - began:.1f}s")


# ---------------------------------------------------------------------------------------------
# The private servers that stand in for dev-infra's Deployments


def postgres_bin() -> Path:
    """The newest installed server's binaries (/usr/lib/postgresql/<version>/bin)."""
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb") if path.parts[-3].isdigit()]
    if not found:
        raise RunFailed("no Postgres server under /usr/lib/postgresql/*/bin (install the postgresql package)")
    return max(found, key=lambda path: int(path.parts[-2]))


class Servers:
    """The private Postgres, Redis and tansu, each on its own port, their files under their
    pods' temporary roots; `stop` takes down what has started."""

    def __init__(self, log_dir: Path, say: Say) -> None:
        self.log_dir = log_dir
        self.say = say
        self.as_postgres = os.geteuid() == 0
        self.stops: list[Callable[[], None]] = []

    def stop(self) -> None:
        while self.stops:
            self.stops.pop()()

    def postgres(self, pod: Pod, port: int) -> None:
        """The cluster the postgres image's entrypoint makes from the Deployment's env and
        /docker-entrypoint-initdb.d, served on 127.0.0.1:port (initdb and pg_ctl refuse root:
        as root they run as `postgres`)."""
        env = pod.containers[0].env
        user, password = env.get("POSTGRES_USER", "postgres"), env.get("POSTGRES_PASSWORD", "")
        database = env.get("POSTGRES_DB", user)
        data = env.get("PGDATA", str(pod.root / "var/lib/postgresql/data"))
        sockets = pod.root / "var/run/postgresql"
        sockets.mkdir(parents=True, exist_ok=True)
        if not password:
            raise RunFailed("dev-infra postgres: POSTGRES_PASSWORD is empty (the image refuses to initialise)")
        if self.as_postgres:
            for volume in (pod.root / ".volumes").iterdir():
                shutil.chown(volume, "postgres", "postgres")
        password_file = sockets / ".pwfile"
        password_file.write_text(password + "\n")
        if self.as_postgres:
            shutil.chown(password_file, "postgres", "postgres")
        initdb = ["-D", data, f"--username={user}", f"--pwfile={password_file}", "--auth-local=trust", "--auth-host=scram-sha-256"]
        self._check(self._as_postgres("initdb") + initdb + ["-E", "UTF8", "--locale=C", "--no-sync"], "initdb")
        password_file.unlink()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off -c max_connections=200"
        # The server's log is written as `postgres`, next to its data; copied out at the stop.
        log = Path(data).parent / "postgres.log"
        pg_ctl = self._as_postgres("pg_ctl") + ["-D", data, "-l", str(log), "-w", "-t", "60"]

        def stop() -> None:
            subprocess.run(pg_ctl + ["-m", "immediate", "stop"], capture_output=True, check=False)
            if log.exists():
                shutil.copy(log, self.log_dir / "postgres.log")

        self.stops.append(stop)
        self._check(pg_ctl + ["-o", options, "start"], "pg_ctl start")
        psql = [str(postgres_bin() / "psql"), "-h", str(sockets), "-p", str(port), "-U", user, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        if database != "postgres":
            self._check(psql + ["-d", "postgres", "-c", f'CREATE DATABASE "{database}"'], f"CREATE DATABASE {database}")
        init = pod.root / "docker-entrypoint-initdb.d"
        scripts = sorted(init.iterdir()) if init.exists() else []
        for script in scripts:
            if not script.name.endswith(".sql"):
                raise RunFailed(
                    f"dev-infra postgres: /docker-entrypoint-initdb.d/{script.name}: the runner runs only *.sql init files"
                )
            self._check(psql + ["-d", database, "-f", str(script)], f"/docker-entrypoint-initdb.d/{script.name}")
        names = [script.name for script in scripts]
        self.say(f"runrendered: postgres on 127.0.0.1:{port}: superuser {user}, database {database}, init files {names}")

    def redis(self, pod: Pod, port: int) -> None:
        """redis-server with the Deployment's arguments, writing in the image's WORKDIR."""
        directory = pod.root / REDIS_WORKDIR.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        args = pod.containers[0].argv
        own = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--protected-mode", "no"]
        self._spawn(["redis-server", *args, *own], directory, "redis")
        wait_reachable("redis", ("127.0.0.1", port), 15, self.log_dir / "redis.log")
        self.say(f"runrendered: redis on 127.0.0.1:{port} with the Deployment's args {args}")

    def kafka(self, pod: Pod, port: int) -> None:
        """tansu, advertising what the Deployment's KAFKA_ADVERTISED_LISTENERS says."""
        binary = shutil.which("tansu") or str(Path.home() / ".cargo" / "bin" / "tansu")
        if not Path(binary).exists():
            raise RunFailed("tansu is not installed (cargo install tansu --version 0.6.0 --locked --features libsql,dynostore)")
        advertised = pod.containers[0].env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",")[0].split("://")[-1]
        if not advertised:
            raise RunFailed("dev-infra kafka: KAFKA_ADVERTISED_LISTENERS is not set")
        directory = pod.root / "var/lib/kafka/data"
        directory.mkdir(parents=True, exist_ok=True)
        listener = f"127.0.0.1:{port}"
        urls = ["--listener-url", f"tcp://{listener}", "--advertised-listener-url", f"tcp://{advertised}"]
        self._spawn([binary, "broker", *urls, "--storage-engine", "sqlite://tansu.db"], directory, "tansu")
        wait_reachable("tansu", ("127.0.0.1", port), 30, self.log_dir / "tansu.log")
        self.say(f"runrendered: tansu on {listener}, advertising {advertised} (the kafka Service)")

    def _as_postgres(self, tool: str) -> list[str]:
        path = str(postgres_bin() / tool)
        return ["runuser", "-u", "postgres", "--", path] if self.as_postgres else [path]

    def _spawn(self, argv: list[str], cwd: Path, name: str) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env={"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": str(cwd)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def stop() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

        self.stops.append(stop)

    @staticmethod
    def _check(argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RunFailed(f"dev-infra postgres: {what} failed: {(result.stderr or result.stdout).strip()[-1500:]}")


def wait_reachable(what: str, address: tuple[str, int], seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"{what} did not come up on {address[0]}:{address[1]} within {seconds:g}s; last lines of {log}:\n{tail(log)}"
                ) from None
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# The smoke


def secret_env(container: Container, name: str) -> str | None:
    """`name` as shop-kit reads a secret: the file `<name>_FILE` names, else `name`."""
    path = container.env.get(f"{name}_FILE")
    if not path:
        return container.env.get(name)
    if not Path(path).is_file():
        raise RunFailed(f"container {container.name}: {name}_FILE names {path}, which no mounted file is")
    return Path(path).read_text().rstrip("\n")


def smoke_admin(user: Pod) -> tuple[str, str]:
    """The admin the rendered user container seeds, which the smoke logs in as."""
    container = user.containers[0]
    email, password = secret_env(container, "SHOP_ADMIN_EMAIL"), secret_env(container, "SHOP_ADMIN_PASSWORD")
    if not email or not password:
        raise RunFailed(
            "the dev user service seeds no admin (its rendered container sets no SHOP_ADMIN_EMAIL(_FILE) and "
            "SHOP_ADMIN_PASSWORD(_FILE)), and the smoke's setup logs in as one to top up stock"
        )
    return email, password


def seed_catalog(root: Path, product: Pod, say: Say) -> None:
    """Not a manifest step: dev loads no catalog, and the smoke needs three products."""
    url = secret_env(product.containers[0], "DATABASE_URL")
    if not url:
        raise RunFailed("product: its container has no DATABASE_URL to load the catalog into")
    seed = root / "services" / "product" / "seed" / "demo.sql"
    psql = [str(postgres_bin() / "psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(seed)]
    result = subprocess.run(psql, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RunFailed(f"loading {seed} failed: {result.stderr.strip()[-1500:]}")
    say(
        f"runrendered: dev loads no catalog and the smoke needs one: loaded {seed.relative_to(root)} into the "
        f"product database ({url.rsplit('/', 1)[-1]}), as `cargo xtask seed` does (not a manifest step)"
    )


def smoke(options: Options, services: dict[str, ServiceAddress], admin: tuple[str, str]) -> None:
    """load-tests/scenarios/smoke.js through each Service's http port (as xtask's k6_run)."""
    if not options.k6.exists():
        raise RunFailed(f"no k6 at {options.k6} (cargo xtask load creates target/load-venv)")
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "HOME": os.environ.get("HOME", "/root"),
        "K6_NO_USAGE_REPORT": "true",
        "RESULTS_DIR": str(options.log_dir / "k6-results"),
        "ADMIN_EMAIL": admin[0],
        "ADMIN_PASSWORD": admin[1],
    }
    env.update({f"{name.upper()}_URL": services[name].url("http") for name in shopdeploy.SERVICES})
    env.update({f"{name.upper()}_METRICS_URL": services[name].url("metrics") for name in shopdeploy.SERVICES})
    (options.log_dir / "k6-results").mkdir(exist_ok=True)
    log = options.log_dir / "k6.log"
    began = time.monotonic()
    with log.open("wb") as handle:
        try:
            result = subprocess.run(
                [str(options.k6), "run", "--no-usage-report", "--quiet", "scenarios/smoke.js"],
                cwd=options.root / "load-tests",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=SMOKE_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RunFailed(f"the k6 smoke ran past {SMOKE_TIMEOUT_SECONDS}s; see {log}") from None
    if result.returncode != 0:
        why = "thresholds failed" if result.returncode == 99 else f"exit {result.returncode}"
        raise RunFailed(
            f"the k6 smoke failed ({why}); the services' logs are in {options.log_dir}; last lines of {log}:\n{tail(log, 40)}"
        )
    checks = next((line.strip() for line in log.read_text(errors="replace").splitlines() if line.startswith("checks:")), "")
    options.say(f"runrendered: k6 smoke through the Services passed in {time.monotonic() - began:.1f}s ({checks})")


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Options:
    root: Path
    bin_dir: Path
    log_dir: Path
    k6: Path
    #: The services whose Deployments and hook Jobs run; the dev-infra servers they name start.
    releases: list[str] = field(default_factory=lambda: list(shopdeploy.SERVICES))
    smoke: bool = True
    #: Seconds for every probe of every pod to pass.
    deadline: float = 90.0
    say: Say = print


@dataclass
class Cluster:
    """The dev render laid out: a pod per Deployment and hook Job, each prepared, and every
    Service bound with its forwarders."""

    pods: list[Pod]
    services: dict[str, ServiceAddress]
    #: dev-infra image repository → the pod its private server stands in for.
    replaced: dict[str, Pod]
    #: The private servers' ports, by the name of the pod each stands in for.
    private_ports: dict[str, int]


def lay_out(rendered: Rendered, images: dict[str, Image], options: Options, temp: Path, cleanup: ExitStack) -> Cluster:
    """Everything that can be resolved before a process starts; raises RunFailed naming
    every workload that does not resolve."""
    workloads = rendered.deployments + rendered.hooks
    pods = [make_pod(workload, f"{POD_NETWORK}{n}", temp / "pods") for n, workload in enumerate(workloads, start=1)]
    replaced = {pod.repository: pod for pod in pods if pod.repository in REPLACED_IMAGES}
    private_ports = {pod.name: free_port() for pod in replaced.values()}
    services = plan_services(rendered, pods, private_ports)
    for service in services.values():
        for port, target in service.targets.items():
            listener = bind(service.ip, port, options.say)
            service.bound[port] = int(listener.getsockname()[1])
            cleanup.callback(Forwarder(listener, target).close)
    problems = []
    for pod in pods:
        try:
            image = None
            if pod not in replaced.values():
                image = images.get(image_target(pod.repository))
                if image is None:
                    raise RunFailed(f"{pod.repository}: the Dockerfile has no `{image_target(pod.repository)}` target")
            prepare(pod, rendered, image, services, options.bin_dir, options.log_dir)
        except RunFailed as error:
            problems.append(f"{pod.workload.release}: {pod.workload.kind}/{pod.workload.name}: {error}")
    if problems:
        raise RunFailed("\n".join(problems))
    return Cluster(pods, services, replaced, private_ports)


def start_servers(cluster: Cluster, running: list[Pod], servers: Servers) -> None:
    """The private servers of the dev-infra Services that the running pods' values name."""
    named = {cluster.services[name].backend.repository for pod in running if pod.translate for name in pod.translate.named}
    for repository, pod in cluster.replaced.items():
        port = cluster.private_ports[pod.name]
        if repository not in named:
            continue
        if repository == POSTGRES_IMAGE:
            servers.postgres(pod, port)
        elif repository == REDIS_IMAGE:
            servers.redis(pod, port)
        else:
            servers.kafka(pod, port)


def run(options: Options) -> None:
    """Renders dev and runs it; raises RunFailed on the first failure, after stopping
    everything it started and removing its temporary root."""
    say = options.say
    began = time.monotonic()
    if options.smoke and sorted(options.releases) != sorted(shopdeploy.SERVICES):
        raise RunFailed("the smoke needs all six services")
    helm_python.disable_logging()
    manifests = shopdeploy.render_env(options.root, ENV)
    rendered = index(manifests, f"shop-{ENV}")
    images = read_images(options.root / "Dockerfile")
    options.log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shop-runrendered-") as directory, ExitStack() as cleanup:
        temp = Path(directory)
        temp.chmod(0o755)  # the postgres user reaches its cluster through it
        cluster = lay_out(rendered, images, options, temp, cleanup)
        running = [pod for pod in cluster.pods if pod.workload.release in options.releases]
        deployments = [pod for pod in running if pod.workload.kind == "Deployment"]
        jobs = [pod for pod in running if pod.workload.kind == "Job"]
        by_release = {pod.workload.release: pod for pod in deployments}
        admin = smoke_admin(by_release["user"]) if options.smoke else None
        say(
            f"runrendered: dev rendered and resolved in {time.monotonic() - began:.1f}s: {len(deployments)} Deployments "
            f"and {len(jobs)} hook Jobs to run, {len(cluster.services)} Services with their forwarders"
        )

        servers = Servers(options.log_dir, say)
        cleanup.callback(servers.stop)
        started = time.monotonic()
        start_servers(cluster, running, servers)
        say(f"runrendered: dev-infra servers up in {time.monotonic() - started:.1f}s")

        def stop_after_failure() -> None:
            for problem in stop(running, say):
                say(f"runrendered: also, while stopping: {problem}")

        cleanup.callback(stop_after_failure)
        run_jobs(jobs, say)
        if options.smoke:
            seed_catalog(options.root, by_release["product"], say)
        started = time.monotonic()
        for pod in deployments:
            start(pod)
        await_probes(deployments, options.deadline, say)
        say(f"runrendered: {len(deployments)} pods started and passed every probe in {time.monotonic() - started:.1f}s")
        if admin is not None:
            smoke(options, cluster.services, admin)
        for pod in deployments:
            for container in pod.containers:
                assert container.process is not None
                if container.process.poll() is not None:
                    raise RunFailed(
                        f"{pod.name} exited with {container.process.returncode} during the run; "
                        f"last lines of {container.log}:\n{tail(container.log)}"
                    )
        problems = stop(running, say)
        if problems:
            raise RunFailed("\n".join(problems))
    say(f"runrendered: the rendered manifests run ({time.monotonic() - began:.1f}s)")


# ---------------------------------------------------------------------------------------------
# Self-test: each deliberate break must make the run fail, and say why.


@dataclass
class Break:
    description: str
    apply: Callable[[Path], None]
    #: Text the failure must contain.
    expected: str
    #: The services to run: the fewest the break needs (their dev-infra servers start too).
    releases: list[str]


_edit = shopdeploy._edit

BREAKS = [
    Break(
        "the secret env vars renamed in the chart (DATABASE_URL_FILE becomes DATABASE_URL_PATH)",
        _edit("helm/shop-service/templates/_helpers.tpl", 'printf "%s_FILE" .env', 'printf "%s_PATH" .env'),
        "DATABASE_URL is required but not set",
        ["order"],
    ),
    Break(
        "cart's REDIS_URL renamed in its values (the code falls back to 127.0.0.1:6379, nothing in a pod)",
        _edit("helm/services/cart.yaml", "  - env: REDIS_URL\n", "  - env: REDIS_ADDRESS\n"),
        "cannot connect to Redis",
        ["cart"],
    ),
    Break(
        "the readiness probe's path changed",
        _edit("helm/shop-service/templates/deployment.yaml", "path: /readyz", "path: /ready"),
        "readinessProbe GET /ready on port http (8080) did not succeed",
        ["cart"],
    ),
    Break(
        "the container port renamed, so the Services' targetPort no longer resolves",
        _edit(
            "helm/shop-service/templates/deployment.yaml",
            "            - name: http\n              containerPort: 8080",
            "            - name: web\n              containerPort: 8080",
        ),
        "targetPort: http is not a port of Deployment/cart's containers",
        ["cart"],
    ),
    Break(
        "the listen port changed without the container port",
        _edit("helm/shop-service/templates/configmap.yaml", 'LISTEN_ADDR: "0.0.0.0:8080"', 'LISTEN_ADDR: "0.0.0.0:8081"'),
        "startupProbe GET /healthz on port http (8080) did not succeed",
        ["cart"],
    ),
    Break(
        "a URL at a port its Service does not serve",
        _edit("helm/services/order.yaml", "CART_GRPC_URL: http://cart:8080", "CART_GRPC_URL: http://cart:9090"),
        "names port 9090 of Service cart",
        ["order"],
    ),
    Break(
        "the database Secret's key renamed",
        _edit("helm/shop-dev-infra/templates/postgres.yaml", "  url: {{ printf", "  uri: {{ printf"),
        "Secret shop-order-database has no key url",
        ["order"],
    ),
    Break(
        "the secret file renamed in its volume",
        _edit(
            "helm/shop-service/templates/_helpers.tpl",
            "      - key: {{ . }}\n        path: {{ . }}",
            "      - key: {{ . }}\n        path: {{ . }}.txt",
        ),
        "DATABASE_URL_FILE has an invalid value",
        ["order"],
    ),
]
#: Seconds for the probes in the self-test: the unbroken services pass theirs in a few.
SELFTEST_DEADLINE = 20.0


def _copy(root: Path, directory: Path) -> Path:
    for part in ("helm", "argocd"):
        shutil.copytree(root / part, directory / part)
    for part in ("skaffold.yaml", "Dockerfile"):
        shutil.copy(root / part, directory / part)
    return directory


def selftest(options: Options) -> int:
    """First the unbroken charts must run with each set of services the breaks use (else a
    caught break would prove nothing), then each break must fail with its expected text."""
    quiet = replace(options, smoke=False, deadline=SELFTEST_DEADLINE, say=lambda _: None)
    unbroken_failures = 0
    for releases in sorted({tuple(item.releases) for item in BREAKS}):
        began = time.monotonic()
        try:
            run(replace(quiet, releases=list(releases), log_dir=options.log_dir / f"selftest-unbroken-{'-'.join(releases)}"))
            options.say(f"selftest: the unbroken charts run with {', '.join(releases)} ({time.monotonic() - began:.1f}s)")
        except RunFailed as error:
            unbroken_failures += 1
            options.say(f"selftest: the unbroken charts do NOT run with {', '.join(releases)}: {error}")
    caught = 0
    for number, item in enumerate(BREAKS, start=1):
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="shop-runrendered-selftest-") as directory:
            copy = _copy(options.root, Path(directory))
            item.apply(copy)
            try:
                run(replace(quiet, root=copy, releases=item.releases, log_dir=options.log_dir / f"selftest-{number}"))
                message = "the run passed"
            except RunFailed as error:
                message = str(error)
        took = time.monotonic() - began
        if item.expected in message:
            caught += 1
            lines = message.splitlines()
            line = next(line.strip() for line in lines if item.expected in line)
            why = line if line == lines[0] else f"{lines[0].split(';')[0]} … {line}"
            options.say(f"selftest: {item.description}: caught in {took:.1f}s ({why[:300]})")
        else:
            options.say(f"selftest: {item.description}: NOT caught in {took:.1f}s (expected {item.expected!r}; got {message[:800]!r})")
    options.say(f"selftest: {caught} of {len(BREAKS)} deliberate breaks caught")
    return 1 if unbroken_failures or caught < len(BREAKS) else 0


# ---------------------------------------------------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    default_root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(prog="runrendered", description="Run the dev render of the charts as local processes.")
    parser.add_argument("command", nargs="?", choices=["run", "selftest"], default="run", help="run (default), or prove deliberate breaks fail")
    parser.add_argument("--root", type=Path, default=default_root)
    parser.add_argument("--bin-dir", type=Path, help="the services' binaries (default: <root>/target/debug)")
    parser.add_argument("--log-dir", type=Path, help="each process's log (default: <root>/target/runrendered)")
    parser.add_argument("--k6", type=Path, help="the k6 binary (default: <root>/target/load-venv/bin/k6)")
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds for every probe of every pod to pass")
    arguments = parser.parse_args()
    root = arguments.root.resolve()
    say: Say = lambda message: print(message, flush=True)  # noqa: E731
    options = Options(
        root=root,
        bin_dir=(arguments.bin_dir or root / "target" / "debug").resolve(),
        log_dir=(arguments.log_dir or root / "target" / "runrendered").resolve(),
        k6=(arguments.k6 or root / "target" / "load-venv" / "bin" / "k6").resolve(),
        deadline=arguments.deadline,
        say=say,
    )
    isolate(say)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if arguments.command == "selftest":
            return selftest(options)
        run(options)
    except RunFailed as error:
        print(f"runrendered: FAILED: {error}", flush=True)
        return 1
    except KeyboardInterrupt:
        print("runrendered: interrupted; everything it started is stopped", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
