"""Static checks of the deployment files under deploy/ (Docker, Compose, Kubernetes).

Nothing here builds an image or talks to a cluster: the files are parsed and checked
against what the code really does. Flags are read from the real ``geogate ... --help``,
settings are built with the real config classes, Kubernetes objects are checked against
the bundled Kubernetes OpenAPI schemas (``kubernetes-validate``, offline), and the
overlays are built by a small kustomize subset below (compared with the real
``kubectl kustomize`` where that is installed).
"""

from __future__ import annotations

import argparse
import configparser
import copy
import fnmatch
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from geogate.gateway.config import GatewayConfig
from geogate.gateway.routing.topology import load_topology
from geogate.node.config import NodeConfig
from geogate.shared.config import add_arguments, build_config, flatten

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
SECRET_TEMPLATES = BASE / "secrets.template.yaml"
REGIONS = ["cn-east", "ap-southeast", "eu-central", "us-east"]
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests promise to work on

# What the services serve (node/app.py, gateway/app.py): (readiness, liveness).
PROBES = {"node": ("/health/ready", "/health/live"), "gateway": ("/readyz", "/healthz")}
DOCKERFILES = {"node": DOCKER / "Dockerfile.node", "gateway": DOCKER / "Dockerfile.gateway"}
IMAGES = {"geogate-node": "node", "geogate-gateway": "gateway"}


# ------------------------------------------------------------------------------ helpers


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@functools.cache
def cli_help(*command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "geogate.shared.cli", *command, "--help"], cwd=REPO, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"geogate {' '.join(command)} --help failed:\n{result.stderr}"
    return result.stdout


@functools.cache
def cli_flags(*command: str) -> frozenset[str]:
    flags = frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", cli_help(*command)))
    assert len(flags) > 3, f"no flags found in geogate {' '.join(command)} --help"
    return flags


@functools.cache
def cli_env_names(*command: str) -> frozenset[str]:
    return frozenset(re.findall(r"env\s+(GEOGATE_[A-Z0-9_]+)", cli_help(*command)))


def flags_in(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag and i + 1 < len(argv)]


# ------------------------------------------------------------------------ Dockerfiles


@dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, rest) with continuations joined

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        out: list[tuple[str, str]] = []
        pending = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.startswith("#"):  # a comment inside a continued instruction
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            full = (pending + line).strip()
            pending = ""
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
        assert not pending, f"{path}: ends inside a continued line"
        return cls(path, out)

    def all(self, name: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == name]

    def final_stage(self) -> list[tuple[str, str]]:
        starts = [i for i, (word, _) in enumerate(self.instructions) if word == "FROM"]
        return self.instructions[starts[-1]:]

    def final(self, name: str) -> list[str]:
        return [rest for word, rest in self.final_stage() if word == name]

    def exec_form(self, name: str) -> list[str]:
        values = self.final(name)
        assert values, f"{self.path.name}: no {name}"
        parsed = json.loads(values[-1])
        assert isinstance(parsed, list), f"{self.path.name}: {name} must use the exec (JSON) form"
        return parsed

    def healthcheck(self) -> list[str]:
        checks = self.final("HEALTHCHECK")
        assert checks, f"{self.path.name}: no HEALTHCHECK"
        assert checks[-1].upper() != "NONE"
        _, _, command = checks[-1].partition("CMD ")
        return json.loads(command)

    def arg_default(self, name: str) -> str | None:
        for rest in self.all("ARG"):
            key, _, value = rest.partition("=")
            if key == name:
                return value
        return None

    def copies(self) -> list[tuple[list[str], str]]:
        """(sources, destination) of every COPY/ADD from the build context."""
        out = []
        for word, rest in self.instructions:
            if word not in ("COPY", "ADD"):
                continue
            parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            options = [p for p in parts if p.startswith("--")]
            if any(o.startswith("--from=") for o in options):
                continue
            paths = [p for p in parts if not p.startswith("--")]
            out.append((paths[:-1], paths[-1]))
        return out


@functools.cache
def dockerfile(kind: str) -> Dockerfile:
    return Dockerfile.read(DOCKERFILES[kind])


def service_of_image(image: str) -> str | None:
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return IMAGES.get(name)


# ---------------------------------------------------------------- kustomize (a subset)

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "namePrefix", "nameSuffix", "labels",
                      "replicas", "patches"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge for what the overlays use: maps merge, lists of named items
    (containers, env, volumes, ports) merge by name, other lists are replaced, null deletes."""
    if isinstance(target, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            if value is None:
                target.pop(key, None)
            elif key in target:
                target[key] = strategic_merge(target[key], value)
            else:
                target[key] = copy.deepcopy(value)
        return target
    if (isinstance(target, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in target + patch)):
        by_name = {i["name"]: i for i in target}
        for item in patch:
            if item["name"] in by_name:
                strategic_merge(by_name[item["name"]], item)
            else:
                target.append(copy.deepcopy(item))
        return target
    return copy.deepcopy(patch)


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc.get("kind") in WORKLOADS:
        yield doc["spec"]["template"]["spec"]


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in pod_specs(doc):
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def rename_references(docs: list[dict[str, Any]], renamed: dict[tuple[str, str], str]) -> None:
    """What kustomize's name-reference transformer does for the fields these files use."""
    def new(kind: str, name: str) -> str:
        return renamed.get((kind, name), name)

    for doc in docs:
        for spec in pod_specs(doc):
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    volume["configMap"]["name"] = new("ConfigMap", volume["configMap"]["name"])
                if "secret" in volume:
                    volume["secret"]["secretName"] = new("Secret", volume["secret"]["secretName"])
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]
                    claim["claimName"] = new("PersistentVolumeClaim", claim["claimName"])
        for container in containers(doc):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    source["configMapRef"]["name"] = new("ConfigMap", source["configMapRef"]["name"])
                if "secretRef" in source:
                    source["secretRef"]["name"] = new("Secret", source["secretRef"]["name"])
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    ref["configMapKeyRef"]["name"] = new("ConfigMap", ref["configMapKeyRef"]["name"])
                if "secretKeyRef" in ref:
                    ref["secretKeyRef"]["name"] = new("Secret", ref["secretKeyRef"]["name"])
        if doc["kind"] == "StatefulSet" and "serviceName" in doc["spec"]:
            doc["spec"]["serviceName"] = new("Service", doc["spec"]["serviceName"])
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            target["name"] = new(target["kind"], target["name"])


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization with the subset of kustomize these files use; anything else
    is an error here, so an overlay cannot silently use a feature this build ignores."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(k) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: kustomization fields this test cannot build: {sorted(unknown)}"
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = directory / entry
        docs += kustomize(path) if path.is_dir() else copy.deepcopy(load_docs(path))

    def find(kind: str, name: str) -> dict[str, Any]:
        found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(found) == 1, f"{directory}: {len(found)} {kind} named {name}"
        return found[0]

    for entry in k.get("patches", []):
        assert set(entry) <= {"patch", "path"}, f"{directory}: unsupported patch options {sorted(entry)}"
        patch = yaml.safe_load(entry["patch"]) if "patch" in entry else load_docs(directory / entry["path"])[0]
        strategic_merge(find(patch["kind"], patch["metadata"]["name"]), patch)
    for entry in k.get("replicas", []):
        found = [d for d in docs if d["kind"] in WORKLOADS and d["metadata"]["name"] == entry["name"]]
        assert len(found) == 1, f"{directory}: replicas: no single workload {entry['name']}"
        found[0]["spec"]["replicas"] = entry["count"]
    for entry in k.get("labels", []):
        assert not entry.get("includeSelectors"), "labels with includeSelectors are not supported here"
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeTemplates") and doc["kind"] in WORKLOADS:
                template = doc["spec"]["template"]
                template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
                for claim in doc["spec"].get("volumeClaimTemplates", []):
                    claim["metadata"].setdefault("labels", {}).update(entry["pairs"])
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = k["namespace"]
            else:
                doc["metadata"]["namespace"] = k["namespace"]
    prefix, suffix = k.get("namePrefix", ""), k.get("nameSuffix", "")
    if prefix or suffix:
        renamed = {}
        for doc in docs:
            if doc["kind"] == "Namespace":
                continue
            old = doc["metadata"]["name"]
            doc["metadata"]["name"] = renamed[(doc["kind"], old)] = prefix + old + suffix
        rename_references(docs, renamed)
    return docs


def base_resources() -> list[dict[str, Any]]:
    return kustomize(BASE)


def overlay(region: str) -> list[dict[str, Any]]:
    return kustomize(K8S / "overlays" / region)


BUILDS = ["base", *REGIONS]


def build(name: str) -> list[dict[str, Any]]:
    return base_resources() if name == "base" else overlay(name)


def only(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of that base name (in an overlay: with the region's suffix)."""
    pattern = rf"{re.escape(name)}(-({'|'.join(REGIONS)}))?"
    found = [d for d in docs if d["kind"] == kind and re.fullmatch(pattern, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def template_secrets() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in load_docs(SECRET_TEMPLATES)}


def config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


def secret_keys(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secrets of the build plus the templates (those are created outside the build)."""
    out = {n: set(d.get("stringData", {})) | set(d.get("data", {})) for n, d in template_secrets().items()}
    for d in docs:
        if d["kind"] == "Secret":
            out[d["metadata"]["name"]] = set(d.get("stringData", {})) | set(d.get("data", {}))
    return out


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it ($(VAR) expanded)."""
    cms = config_maps(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(cms[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = {"status.podIP": "10.1.2.3"}.get(item["valueFrom"]["fieldRef"]["fieldPath"], "x")
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = cms[ref["name"]][ref["key"]]
    return env


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


# ------------------------------------------------------------------- invocations


@dataclass
class Invocation:
    """One way a deployment file runs `geogate ...`: argv, environment, and the files
    the container sees (container path -> host file or text)."""

    where: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path | str] = field(default_factory=dict)
    port: int | None = None  # the container port it should listen on

    @property
    def command(self) -> tuple[str, ...]:
        assert self.argv[:1] == ["geogate"], f"{self.where}: does not run geogate: {self.argv}"
        return ("registry", "init") if self.argv[1] == "registry" else (self.argv[1],)

    @property
    def args(self) -> list[str]:
        return self.argv[len(self.command) + 1:]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def compose_kind(service: dict[str, Any]) -> str | None:
    if "build" in service:
        dockerfile_path = (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
        return next((k for k, p in DOCKERFILES.items() if p.resolve() == dockerfile_path), None)
    return service_of_image(service.get("image", ""))


def compose_bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            if source.startswith((".", "/")):
                mounts[rest.split(":")[0]] = (COMPOSE.parent / source).resolve()
        elif volume.get("type") == "bind":
            mounts[volume["target"]] = (COMPOSE.parent / volume["source"]).resolve()
    return mounts


def compose_invocations() -> list[Invocation]:
    out = []
    for name, service in compose()["services"].items():
        kind = compose_kind(service)
        if kind is None:
            continue
        df = dockerfile(kind)
        entrypoint = service.get("entrypoint", df.exec_form("ENTRYPOINT"))
        command = service.get("command", df.exec_form("CMD") if "entrypoint" not in service else [])
        assert isinstance(entrypoint, list) and isinstance(command, list), f"compose {name}: use list form"
        inv = Invocation(f"compose {name}", [*entrypoint, *command], dict(service.get("environment") or {}),
                         dict(compose_bind_mounts(service)))
        out.append(inv)
    return out


def k8s_invocations(name: str) -> list[Invocation]:
    docs = build(name)
    cms = config_maps(docs)
    keys = secret_keys(docs)
    out = []
    for doc in docs:
        for spec in pod_specs(doc):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in spec.get("initContainers", []) + spec["containers"]:
                kind = service_of_image(c["image"])
                if kind is None:
                    continue
                df = dockerfile(kind)
                env = container_env(docs, c)
                if "command" in c:
                    argv = [*c["command"], *c.get("args", [])]
                else:
                    argv = [*df.exec_form("ENTRYPOINT"), *c.get("args", df.exec_form("CMD"))]
                argv = [expand(a, env) for a in argv]
                files: dict[str, Path | str] = {}
                for mount in c.get("volumeMounts", []):
                    volume = volumes[mount["name"]]
                    if "configMap" in volume:
                        for key, text in cms[volume["configMap"]["name"]].items():
                            files[f"{mount['mountPath']}/{key}"] = text
                    elif "secret" in volume:
                        for key in keys[volume["secret"]["secretName"]]:
                            files[f"{mount['mountPath']}/{key}"] = f"(secret {volume['secret']['secretName']})"
                ports = [p["containerPort"] for p in c.get("ports", [])]
                out.append(Invocation(f"k8s {name} {doc['kind']} {doc['metadata']['name']}/{c['name']}", argv, env,
                                      files, ports[0] if ports else None))
    return out


def dockerfile_invocations() -> list[Invocation]:
    return [Invocation(f"{DOCKERFILES[k].name} defaults", [*dockerfile(k).exec_form("ENTRYPOINT"),
                                                              *dockerfile(k).exec_form("CMD")])
            for k in DOCKERFILES]


def all_invocations() -> list[Invocation]:
    invocations = dockerfile_invocations() + compose_invocations()
    for name in BUILDS:
        invocations += k8s_invocations(name)
    return invocations


def build_service_config(inv: Invocation, tmp_path: Path) -> NodeConfig | GatewayConfig:
    """Build the settings exactly as the service would: argv through its argparse flags,
    the environment, and the config file the container sees."""
    cls, section = {"node": (NodeConfig, "node"), "gateway": (GatewayConfig, "gateway")}[inv.command[0]]
    parser = argparse.ArgumentParser(prog=inv.where, exit_on_error=False)
    add_arguments(parser, cls)
    args = parser.parse_args(inv.args)
    config_file = None
    if args.config is not None:
        config_file = materialize(inv, str(args.config), tmp_path)
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    return build_config(cls, section=section, file=config_file, env=inv.env, overrides=overrides)


def materialize(inv: Invocation, container_path: str, tmp_path: Path) -> Path:
    assert container_path in inv.files, f"{inv.where}: {container_path} is not mounted into the container"
    source = inv.files[container_path]
    if isinstance(source, Path):
        assert source.is_file(), f"{inv.where}: {source} (mounted at {container_path}) does not exist"
        return source
    path = tmp_path / re.sub(r"[^\w.]+", "_", container_path)
    path.write_text(source, encoding="utf-8")
    return path


# ================================================================================ tests
# (a) every YAML file parses


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_the_deployment_files_exist() -> None:
    expected = [DOCKERFILES["gateway"], DOCKERFILES["node"], COMPOSE, DEPLOY / "compose" / "gateway.yaml",
                BASE / "kustomization.yaml", SECRET_TEMPLATES,
                *(K8S / "overlays" / r / "kustomization.yaml" for r in REGIONS)]
    assert [p for p in expected if not p.is_file()] == []


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_yaml_embedded_in_config_maps_parses() -> None:
    for name in BUILDS:
        for cm_name, data in config_maps(build(name)).items():
            for key, text in data.items():
                if key.endswith((".yaml", ".yml")):
                    assert isinstance(yaml.safe_load(text), dict), f"{name}: ConfigMap {cm_name}/{key}"


# (b) Kubernetes manifests against the Kubernetes schemas


@pytest.mark.parametrize("name", BUILDS)
def test_kubernetes_schema(name: str) -> None:
    import kubernetes_validate

    docs = build(name) + (list(template_secrets().values()) if name == "base" else [])
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: no schema for {doc['apiVersion']}")
    assert errors == []


def test_schema_check_rejects_a_broken_manifest() -> None:
    """The validator really is strict: a misspelt field fails."""
    import kubernetes_validate

    deployment = copy.deepcopy(only(base_resources(), "Deployment", "node-blue"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_base_has_every_part() -> None:
    docs = base_resources()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for color in ("blue", "green"):
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert (kind, f"node-{color}") in kinds
    for kind, name in [("Deployment", "gateway"), ("Service", "gateway"), ("PodDisruptionBudget", "gateway"),
                       ("ConfigMap", "gateway-config"), ("StatefulSet", "redis"), ("ConfigMap", "redis"),
                       ("Job", "registry-init"), ("ConfigMap", "geogate-env")]:
        assert (kind, name) in kinds
    assert only(docs, "Deployment", "gateway")["spec"]["replicas"] == 2
    # The Secrets are templates created outside `apply -k`, with placeholders marked.
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert SECRET_TEMPLATES.name not in listed
    secrets = template_secrets()
    assert set(secrets) == {"gateway-tls", "geogate-admin"}
    for secret in secrets.values():
        assert "REPLACE" in secret["metadata"]["annotations"]["geogate.io/template"]
        assert all("REPLACE" in v for v in secret["stringData"].values())


def test_admin_tokens_template_has_the_format_the_gateway_reads(tmp_path: Path) -> None:
    from geogate.gateway.control.auth import TokenBook
    from geogate.shared.config import ConfigError

    text = template_secrets()["geogate-admin"]["stringData"]["tokens.yaml"]
    placeholder = tmp_path / "placeholder.yaml"
    placeholder.write_text(text)
    with pytest.raises(ConfigError):  # a placeholder never admits anyone
        TokenBook.load(str(placeholder))
    filled = tmp_path / "filled.yaml"
    filled.write_text(re.sub(r"REPLACE-WITH-THE-TOKEN-SHA256", "ab" * 32, text))
    assert len(TokenBook.load(str(filled)).entries) == 1


@pytest.mark.skipif(shutil.which("kubectl") is None and shutil.which("kustomize") is None,
                    reason="neither kubectl nor kustomize is installed")
@pytest.mark.parametrize("region", REGIONS)
def test_overlay_build_matches_real_kustomize(region: str) -> None:
    """The subset above builds what kustomize builds (so the other tests check the real thing)."""
    tool = ["kubectl", "kustomize"] if shutil.which("kubectl") else ["kustomize", "build"]
    result = subprocess.run([*tool, str(K8S / "overlays" / region)], check=False, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    real = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    ours = {(d["kind"], d["metadata"]["name"]): d for d in overlay(region)}
    assert sorted(ours) == sorted(real)
    for key, doc in real.items():
        assert ours[key] == doc, f"{key} differs from kustomize's build"


@pytest.mark.parametrize("region", REGIONS)
def test_overlay_sets_its_region(region: str) -> None:
    docs = overlay(region)
    env = config_maps(docs)[f"geogate-env-{region}"]
    assert env["GEOGATE_REGION"] == region
    for doc in docs:
        assert doc["metadata"]["labels"]["geogate.io/region"] == region, doc["metadata"]["name"]
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == f"geogate-{region}"
            continue
        assert doc["metadata"]["namespace"] == f"geogate-{region}"
        assert doc["metadata"]["name"].endswith(f"-{region}"), doc["metadata"]["name"]
        if doc["kind"] in WORKLOADS:
            assert doc["spec"]["template"]["metadata"]["labels"]["geogate.io/region"] == region
    # Every process of the region reads the region from that ConfigMap.
    for inv in k8s_invocations(region):
        assert inv.env.get("GEOGATE_REGION") == region, inv.where
    # The gateways' topology knows the region.
    gateway_yaml = config_maps(docs)[f"gateway-config-{region}"]["gateway.yaml"]
    assert region in yaml.safe_load(gateway_yaml)["regions"]
    # Node replicas: set per region, the same for both colors, and within the HPA's range.
    counts = set()
    for color in ("blue", "green"):
        deployment = only(docs, "Deployment", f"node-{color}")
        hpa = only(docs, "HorizontalPodAutoscaler", f"node-{color}")
        assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
        counts.add(deployment["spec"]["replicas"])
    assert len(counts) == 1


def test_overlays_differ_in_node_capacity() -> None:
    counts = {r: only(overlay(r), "Deployment", "node-blue")["spec"]["replicas"] for r in REGIONS}
    assert len(set(counts.values())) > 1, counts


@pytest.mark.parametrize("name", BUILDS)
def test_kubernetes_references_resolve(name: str) -> None:
    docs = build(name)
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    cms, secrets = config_maps(docs), secret_keys(docs)
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in WORKLOADS]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in templates)

    for doc in docs:
        where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
        for spec in pod_specs(doc):
            assert doc["spec"].get("selector", {"matchLabels": {}})["matchLabels"].items() \
                <= doc["spec"]["template"]["metadata"]["labels"].items(), where
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in cms, where
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets, where
            for c in spec.get("initContainers", []) + spec["containers"]:
                mounted = {m["name"] for m in c.get("volumeMounts", [])}
                assert mounted <= {v["name"] for v in spec.get("volumes", [])} | {
                    t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}, where
                port_names = {p.get("name") for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if isinstance(port, str):
                        assert port in port_names, f"{where}: {probe} port {port}"
                for source in c.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in cms, where
                container_env(docs, c)  # every configMapKeyRef resolves
        if doc["kind"] == "Service":
            assert selects(doc["spec"]["selector"]), f"{where}: selects no pods"
            for port in doc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                pods = [d for d in docs if d["kind"] in WORKLOADS
                        and doc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
                exposed = {p.get("name") for d in pods for c in containers(d) for p in c.get("ports", [])} | {
                    p["containerPort"] for d in pods for c in containers(d) for p in c.get("ports", [])}
                assert target in exposed, f"{where}: targetPort {target}"
        if doc["kind"] in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = doc["spec"]["selector" if doc["kind"] == "PodDisruptionBudget" else "podSelector"]
            assert selects(selector["matchLabels"]), f"{where}: selects no pods"
        if doc["kind"] == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            assert target["name"] in by_kind.get(target["kind"], {}), where
        if doc["kind"] == "StatefulSet":
            service = by_kind["Service"][doc["spec"]["serviceName"]]
            assert service["spec"].get("clusterIP") == "None", f"{where}: its Service must be headless"


URL = re.compile(r"\b(https?|rediss?|redis\+sentinel)://([^/\s\"'?]+)")


@pytest.mark.parametrize("name", BUILDS)
def test_kubernetes_urls_name_services_of_the_build(name: str) -> None:
    """Names inside URLs are not rewritten by kustomize: every host in a URL must be a
    Service of this very build (or a StatefulSet pod behind its headless Service)."""
    docs = build(name)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    texts = [v for data in config_maps(docs).values() for v in data.values()]
    texts += [a for inv in k8s_invocations(name) for a in inv.argv] + [
        v for inv in k8s_invocations(name) for v in inv.env.values()]
    hosts = []
    for text in texts:
        for _, netloc in URL.findall(text):
            for hostport in netloc.rpartition("@")[2].split(","):
                host, _, port = hostport.partition(":")
                if re.fullmatch(r"[\d.]+|\$\(.*", host):  # pod IPs, loopback
                    continue
                hosts.append((host, int(port) if port else None, text))
    assert hosts, "no URL found"
    for host, port, text in hosts:
        labels = host.split(".")
        service = services.get(labels[0])
        if service is None and len(labels) > 1 and labels[1] in services:
            service = services[labels[1]]
            owner = [s for s in sets.values() if s["spec"]["serviceName"] == labels[1]]
            assert owner, f"{host}: {labels[1]} governs no StatefulSet"
            match = re.fullmatch(rf"{re.escape(owner[0]['metadata']['name'])}-(\d+)", labels[0])
            assert match and int(match.group(1)) < owner[0]["spec"]["replicas"], f"{host}: no such pod"
        assert service is not None, f"{name}: {host} (in {text!r}) is no Service of this build"
        if port is not None:
            assert port in {p["port"] for p in service["spec"]["ports"]}, f"{host}:{port} is not a port of it"


@pytest.mark.parametrize("name", BUILDS)
def test_redis_sentinel_url_matches_the_redis_set(name: str) -> None:
    docs = build(name)
    url = config_maps(docs)[next(n for n in config_maps(docs) if n.startswith("geogate-env"))][
        "GEOGATE_REGISTRY_URL"]
    parts = urlsplit(url)
    assert parts.scheme == "redis+sentinel"
    redis = only(docs, "StatefulSet", "redis")
    hosts = parts.netloc.split(",")
    assert len(hosts) == redis["spec"]["replicas"] == 3
    script = only(docs, "ConfigMap", "redis")["data"]["configure.sh"]
    master_set = re.search(r"^MASTER_SET=(\S+)$", script, re.MULTILINE).group(1)
    # shared/store.py: the path is the master set's name, the db goes in the query.
    assert parts.path.strip("/") == master_set
    assert "db=" in parts.query
    assert re.search(r"sentinel monitor \$\{MASTER_SET\} \$\{MASTER\} 6379 2$", script, re.MULTILINE)


@pytest.mark.parametrize("name", BUILDS)
def test_nodes_on_gpus_drain_before_they_are_killed(name: str) -> None:
    docs = build(name)
    default_drain = NodeConfig().drain_timeout_s
    nodes = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("node-")]
    gateways = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("gateway")]
    assert len(nodes) == 2 and len(gateways) == 1
    for doc in nodes + gateways:
        spec = doc["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        if doc in nodes:
            assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        drain = float(flag_value(c["args"], "--drain-timeout-s") or default_drain)
        assert spec["terminationGracePeriodSeconds"] > int(command[1]) + drain, doc["metadata"]["name"]


def test_hpa_scales_on_a_metric_the_node_exports() -> None:
    exported = set(re.findall(r"Gauge\(\s*\"([a-z_]+)\"", (REPO / "node" / "metrics.py").read_text()))
    assert "geogate_node_queue_depth" in exported
    hpas = [d for d in base_resources() if d["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpas) == 2
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == "geogate_node_queue_depth"
        assert metric["pods"]["metric"]["name"] in exported


@pytest.mark.parametrize("name", BUILDS)
def test_gateway_serves_tls_from_the_secret(name: str) -> None:
    docs = build(name)
    (inv,) = [i for i in k8s_invocations(name) if i.command == ("gateway",)]
    assert inv.port == int(flag_value(inv.args, "--port")) == 8443
    for flag in ("--tls-cert", "--tls-key"):
        assert inv.files.get(flag_value(inv.args, flag)) == "(secret gateway-tls)", flag
    service = only(docs, "Service", "gateway")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443 and port["targetPort"] == "https"
    metrics = only(docs, "Service", "gateway-metrics")
    assert metrics["spec"]["ports"][0]["name"] == "metrics"


# (c) Compose


def test_compose_topology() -> None:
    services = compose()["services"]
    assert services["redis"]["image"].startswith("redis:7")
    nodes = {}
    for inv in compose_invocations():
        if inv.command == ("node",):
            nodes[(flag_value(inv.args, "--region"), flag_value(inv.args, "--color"))] = inv
    assert set(nodes) == {(r, c) for r in ("cn-east", "eu-central") for c in ("blue", "green")}
    for (region, color), inv in nodes.items():
        assert flag_value(inv.args, "--model") == {"blue": "demo", "green": "demo-v2"}[color]
        assert flag_value(inv.args, "--device") == "cpu" and flag_value(inv.args, "--dtype") == "fp32"
        # Others reach it by its service name: that is what it must advertise.
        advertised = urlsplit(flag_value(inv.args, "--advertise-url"))
        assert advertised.hostname == inv.where.split()[-1]
        assert advertised.port == int(flag_value(inv.args, "--port"))
    published = {}
    for inv in compose_invocations():
        if inv.command == ("gateway",):
            service = services[inv.where.split()[-1]]
            (mapping,) = service["ports"]
            host, container = str(mapping).split(":")
            assert int(container) == int(flag_value(inv.args, "--port"))
            published[flag_value(inv.args, "--region")] = int(host)
    assert published == {"cn-east": 8080, "eu-central": 8090}
    # The GPU stanza is documented, not active.
    text = COMPOSE.read_text()
    assert re.search(r"#\s+devices:", text) and re.search(r"#\s+capabilities: \[gpu\]", text)


def test_compose_builds_mounts_and_dependencies_exist() -> None:
    spec = compose()
    services = spec["services"]
    named_volumes = set(spec.get("volumes") or {})
    checked = 0
    for name, service in services.items():
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / service["build"]["dockerfile"]).is_file(), f"{name}: {service['build']['dockerfile']}"
            checked += 1
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} does not exist"
                checked += 1
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        depends = service.get("depends_on", {})
        for other in depends:
            assert other in services, f"{name} depends on unknown service {other}"
            condition = depends[other]["condition"] if isinstance(depends, dict) else "service_started"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                target = services[other]
                has_check = ("healthcheck" in target and not target["healthcheck"].get("disable")) or (
                    compose_kind(target) is not None and dockerfile(compose_kind(target)).final("HEALTHCHECK"))
                assert has_check, f"{name} waits for {other} to be healthy, but it has no healthcheck"
    assert checked >= 8
    # Services that share an image tag build it from the same Dockerfile.
    tags: dict[str, set[str]] = {}
    for service in services.values():
        if "build" in service:
            tags.setdefault(service["image"], set()).add(service["build"]["dockerfile"])
    assert all(len(v) == 1 for v in tags.values()), tags


def test_compose_registry_init_seeds_after_the_nodes() -> None:
    services = compose()["services"]
    init = services["registry-init"]
    nodes = [n for n, s in services.items() if compose_kind(s) == "node"]
    assert len(nodes) == 4
    for node in nodes:
        assert init["depends_on"][node]["condition"] == "service_healthy"
    (inv,) = [i for i in compose_invocations() if i.command == ("registry", "init")]
    urls = flag_values(inv.args, "--node")
    assert sorted(urlsplit(u).hostname for u in urls) == sorted(nodes)
    assert urlsplit(flag_value(inv.args, "--registry-url")).hostname in services
    assert flag_value(inv.args, "--regions").split(",") == ["cn-east", "eu-central"]
    for gateway in (n for n, s in services.items() if compose_kind(s) == "gateway" and n != "registry-init"):
        assert services[gateway]["depends_on"]["registry-init"]["condition"] == "service_completed_successfully"


def test_compose_gateway_config_matches_the_services(tmp_path: Path) -> None:
    services = compose()["services"]
    path = DEPLOY / "compose" / "gateway.yaml"
    topology = load_topology(path)
    assert set(topology.regions) == {"cn-east", "eu-central"}
    assert set(topology.countries.values()) <= set(topology.regions)
    node_args = {i.where.split()[-1]: i.args for i in compose_invocations() if i.command == ("node",)}
    assert len(topology.nodes) == len(node_args) == 4
    for node in topology.nodes:
        url = urlsplit(node.url)
        args = node_args[url.hostname]
        assert (flag_value(args, "--region"), flag_value(args, "--color")) == (node.region, node.color)
        assert url.port == int(flag_value(args, "--port"))
    config = build_config(GatewayConfig, section="gateway", file=path)
    assert urlsplit(config.store.registry_url).hostname in services


# (d) Dockerfiles


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_copies_exist_and_runs_unprivileged(kind: str) -> None:
    df = dockerfile(kind)
    copies = df.copies()
    assert copies
    sources = [s for srcs, _ in copies for s in srcs]
    for source in sources:
        assert (REPO / source).exists(), f"{df.path.name}: COPY {source} is not in the repository"
    assert {"setup.cfg", "pyproject.toml", "README.md", "gateway/", "node/", "shared/"} <= set(sources)
    # The dockerignore next to it must not hide what is copied.
    ignore = df.path.with_name(df.path.name + ".dockerignore")
    if ignore.is_file():
        patterns = [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        for source in sources:
            hidden = [p for p in patterns if fnmatch.fnmatch(source.rstrip("/"), p.rstrip("/"))]
            assert not hidden, f"{ignore.name} hides {source}"
    users = df.final("USER")
    assert users, f"{df.path.name}: no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), f"{df.path.name}: USER {users[-1]} (numeric, not root)"
    # The build context is the repository root; the file says so.
    assert re.search(rf"docker build -f deploy/docker/{re.escape(df.path.name)} .* \.$", df.path.read_text(),
                     re.MULTILINE), "say how to build it from the repository root"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_healthcheck_probes_readiness(kind: str) -> None:
    df = dockerfile(kind)
    check = df.healthcheck()
    url = urlsplit(re.search(r"http://[^'\"]+", " ".join(check)).group(0))
    assert url.path == PROBES[kind][0]
    (exposed,) = df.final("EXPOSE")
    default_port = int(flag_value(df.exec_form("CMD"), "--port"))
    assert url.port == int(exposed) == default_port
    assert df.exec_form("ENTRYPOINT") == ["geogate", kind]


def test_gateway_image_has_no_torch() -> None:
    df = dockerfile("gateway")
    runs = " ".join(df.all("RUN")).lower()
    assert "pip install" in runs
    assert "torch" not in runs and "[node]" not in runs and "[mgeo]" not in runs and "nvidia" not in runs
    bases = df.all("FROM")
    assert all(b.split()[0] == "python:3.11-slim" for b in bases), bases


def test_node_image_installs_cuda_torch_then_the_node_extra() -> None:
    df = dockerfile("node")
    runs = df.all("RUN")
    torch_step = next(i for i, r in enumerate(runs) if "--index-url" in r and "torch" in r)
    extra_step = next(i for i, r in enumerate(runs) if ".[${extra}]" in r or ".[node]" in r)
    assert torch_step < extra_step
    assert df.arg_default("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cu126"
    assert "mgeo" in runs[extra_step] and "WITH_MODELSCOPE" in runs[extra_step]
    assert df.arg_default("WITH_MODELSCOPE") == "0"
    assert df.exec_form("CMD")[-4:] == ["--device", "cuda", "--dtype", "fp16"]


def test_images_have_the_python_the_project_needs() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    need = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", cfg["options"]["python_requires"]).group(1).split("."))
    gateway_base = dockerfile("gateway").all("FROM")[-1].split()[0]
    assert tuple(int(x) for x in re.search(r"python:(\d+)\.(\d+)", gateway_base).groups()) >= need
    node = dockerfile("node")
    base = node.arg_default("CUDA_IMAGE")
    assert base and base.startswith("nvidia/cuda:12.6")
    ubuntu_python = {"ubuntu24.04": (3, 12), "ubuntu22.04": (3, 10), "ubuntu20.04": (3, 8)}
    distro = re.search(r"(ubuntu\d+\.\d+)$", base).group(1)
    assert ubuntu_python[distro] >= need, f"{base} has Python {ubuntu_python[distro]}"


def packaged_files() -> set[Path]:
    """What `pip install .` (the images' install) ships besides modules: setup.cfg's
    [options.package_data] globs, resolved the way setuptools does."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = set()
    package_dir = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    for package, value in cfg["options.package_data"].items():
        top = next(p for p in package_dir if package == p or package.startswith(p + "."))
        base = REPO / package_dir[top] / package[len(top) + 1:].replace(".", "/")
        for pattern in (p.strip() for p in value.replace("\n", ",").split(",")):
            if pattern:
                out |= {p for p in base.glob(pattern) if p.is_file()}
    return out


def test_images_ship_every_data_file_of_the_packages() -> None:
    """The images install with `pip install .`, not in editable mode: a data file the code
    reads (a model, gateway/control/golden.json) that setup.cfg does not list is missing there,
    and the service fails in the container while every test on a checkout passes."""
    data = {p for package in ("gateway", "node", "shared") for p in (REPO / package).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".pyi") and "__pycache__" not in p.parts}
    missing = sorted(str(p.relative_to(REPO)) for p in data - packaged_files())
    assert not missing, f"not in setup.cfg [options.package_data], so not in the images: {missing}"


def test_demo_models_named_in_deploy_files_are_in_the_installed_package() -> None:
    """Images run `pip install .`, not an editable install: a demo model the deployment
    files name must be in setup.cfg's package data, or `--model demo-v2` fails there."""
    from geogate.node.demo import DEMO_MODELS

    package = REPO / "node" / "demo"
    packaged = packaged_files()
    models = {flag_value(inv.args, "--model") for inv in all_invocations() if inv.command == ("node",)}
    models.discard(None)
    assert {"demo", "demo-v2"} <= models
    for model in sorted(models & set(DEMO_MODELS)):
        files = {p for p in Path(DEMO_MODELS[model]).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
        missing = sorted(str(p.relative_to(package)) for p in files - packaged)
        assert not missing, (f"--model {model}: setup.cfg [options.package_data] node.demo does not ship "
                             f"{missing}")


# (e) every geogate invocation uses real flags and valid settings


def invocation_ids(invocations: list[Invocation]) -> list[str]:
    return [i.where for i in invocations]


def _collect() -> tuple[list[Invocation], str | None]:
    # Parametrization happens at collection: a broken file must fail one test, not
    # abort the collection of all of them.
    try:
        return all_invocations(), None
    except Exception as exc:  # noqa: BLE001 - reported by test_invocations_collect
        return [], f"{type(exc).__name__}: {exc}"


INVOCATIONS, COLLECT_ERROR = _collect()


def test_invocations_collect() -> None:
    assert COLLECT_ERROR is None


def test_every_service_is_invoked_somewhere() -> None:
    commands = {inv.command for inv in INVOCATIONS}
    assert commands == {("node",), ("gateway",), ("registry", "init")}
    wheres = " ".join(inv.where for inv in INVOCATIONS)
    for region in REGIONS:
        assert f"k8s {region} " in wheres


@pytest.mark.parametrize("inv", INVOCATIONS, ids=invocation_ids(INVOCATIONS))
def test_invocation_uses_real_flags(inv: Invocation) -> None:
    known = cli_flags(*inv.command)
    unknown = sorted(set(flags_in(inv.args)) - known)
    assert unknown == [], f"{inv.where}: geogate {' '.join(inv.command)} has no {unknown}"
    env_names = {n for n in inv.env if n.startswith("GEOGATE_")}
    if inv.command != ("registry", "init"):
        assert env_names <= cli_env_names(*inv.command), sorted(env_names - cli_env_names(*inv.command))
    else:
        for required in ("--registry-url", "--node", "--regions"):
            assert required in flags_in(inv.args), f"{inv.where}: {required} is required"
        leftover = [a for a in inv.args if "$(" in a]
        assert not leftover, f"{inv.where}: unexpanded {leftover}"


@pytest.mark.parametrize("inv", [i for i in INVOCATIONS if i.command != ("registry", "init")],
                         ids=invocation_ids([i for i in INVOCATIONS if i.command != ("registry", "init")]))
def test_invocation_builds_a_valid_config(inv: Invocation, tmp_path: Path) -> None:
    if inv.where.endswith("defaults") and inv.command == ("gateway",):
        # The image's default CMD names a config file that only a deployment mounts.
        inv = Invocation(inv.where, inv.argv, inv.env, {"/etc/geogate/gateway.yaml": DEPLOY / "compose" / "gateway.yaml"})
    config = build_service_config(inv, tmp_path)
    assert config.host == "0.0.0.0", f"{inv.where}: a container must listen on all interfaces"
    if inv.port is not None:
        assert config.port == inv.port, f"{inv.where}: listens on {config.port}, the container port is {inv.port}"
    if isinstance(config, NodeConfig):
        if inv.where.startswith("k8s"):
            assert config.registry_url, f"{inv.where}: a node without registry_url never registers"
            assert urlsplit(config.advertise_url).port == config.port
    else:
        config_path = str(next(v for k, v in zip(inv.args, inv.args[1:]) if k == "--config"))
        topology = load_topology(materialize(inv, config_path, tmp_path))
        assert set(topology.countries.values()) <= set(topology.regions)
        if not inv.where.endswith("defaults") and not inv.where.startswith("k8s base"):  # base: region unset
            assert config.region in topology.regions, f"{inv.where}: region {config.region} is not in the topology"
        settings = flatten(config)
        for path_setting in ("tls_cert", "tls_key", "admin_tokens_file", "geoip_db", "upstream_ca"):
            path = settings[path_setting]
            if path and not inv.where.endswith("defaults"):
                assert path in inv.files, f"{inv.where}: {path_setting} {path} is not mounted"


@pytest.mark.parametrize("name", BUILDS)
def test_k8s_registry_init_seeds_every_color(name: str) -> None:
    (inv,) = [i for i in k8s_invocations(name) if i.command == ("registry", "init")]
    nodes = flag_values(inv.args, "--node")
    assert sorted(urlsplit(u).hostname.split("-")[1] for u in nodes) == ["blue", "green"]
    assert flag_value(inv.args, "--registry-url") == inv.env["GEOGATE_REGISTRY_URL"]
    assert flag_value(inv.args, "--regions").split(",") == REGIONS
    assert flag_value(inv.args, "--active") in ("blue", "green")


# (g) probes hit the paths the services serve


def test_services_serve_the_probed_paths() -> None:
    routes = {"node": (REPO / "node" / "app.py").read_text(), "gateway": (REPO / "gateway" / "app.py").read_text()}
    for kind, paths in PROBES.items():
        for path in paths:
            assert f'add_get("{path}"' in routes[kind], f"{kind} serves no {path}"


@pytest.mark.parametrize("name", BUILDS)
def test_kubernetes_probes(name: str) -> None:
    seen = set()
    for doc in build(name):
        for c in containers(doc):
            kind = service_of_image(c["image"])
            if kind is None or "command" in c:  # the registry-init Job serves nothing
                continue
            ready, live = PROBES[kind]
            assert c["readinessProbe"]["httpGet"]["path"] == ready, doc["metadata"]["name"]
            assert c["livenessProbe"]["httpGet"]["path"] == live, doc["metadata"]["name"]
            scheme = "HTTPS" if flag_value(c["args"], "--tls-cert") else "HTTP"
            assert c["readinessProbe"]["httpGet"].get("scheme", "HTTP") == scheme
            assert c["livenessProbe"]["httpGet"].get("scheme", "HTTP") == scheme
            seen.add(kind)
    assert seen == {"node", "gateway"}


def test_compose_healthchecks_probe_readiness() -> None:
    services = compose()["services"]
    for inv in compose_invocations():
        name = inv.where.split()[-1]
        kind = inv.command[0]
        check = services[name].get("healthcheck")
        if inv.command == ("registry", "init"):
            assert check == {"disable": True}
            continue
        test = check["test"] if check else dockerfile(kind).healthcheck()
        url = urlsplit(re.search(r"http://[^'\"]+", " ".join(test)).group(0))
        assert url.path == PROBES[kind][0], name
        assert url.port == int(flag_value(inv.args, "--port")), name
