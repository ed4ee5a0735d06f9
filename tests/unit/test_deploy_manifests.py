"""Static checks of deploy/: the Dockerfile, docker-compose + nginx, and the Kubernetes manifests.

No container engine or cluster is available to the test suite, so the checks are structural but
real: the Dockerfile is parsed into stages, the image's health check command is executed against a
local HTTP server, compose and .env.example settings are loaded through ``Settings``, the
kustomization is built (in Python, and with ``kubectl kustomize`` when installed) and every
resource is validated offline against the Kubernetes 1.30 OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail).
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser
from service.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "example"
K8S_VERSION = "1.30"
HANDOFF_WINDOW_S = 30  # service/drain.py waits up to 30 s for hand-offs after the drain timeout
# Measured by load_tests/load_calls.py (docs/performance.md), rounded up: see deploy/k8s/base/deployment.yaml.
CPU_MILLICORES_PER_CALL = 10
MEMORY_MB_PER_CALL = 1
MEMORY_MB_BASE = 100
COMPOSE_ONLY_VARIABLES = frozenset({"CALLBRIDGE_HTTP_PORT"})


# ============================================================================ Dockerfile helpers

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "dangling line continuation"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def dockerfile_stages() -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Global ARG defaults, and the stages: {name, base, instructions}."""
    global_args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for instruction, args in dockerfile_instructions((DEPLOY / "Dockerfile").read_text(encoding="utf-8")):
        if instruction == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append({"name": name, "base": base, "instructions": []})
        elif not stages:
            assert instruction == "ARG", "only ARG may precede the first FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1]["instructions"].append((instruction, args))
    return global_args, stages


def final_stage() -> dict[str, Any]:
    return dockerfile_stages()[1][-1]


def instruction_args(stage: dict[str, Any], name: str) -> list[str]:
    return [args for instruction, args in stage["instructions"] if instruction == name]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A local HTTP server answering each path with the status set in the returned dict."""
    statuses: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses.get(self.path, 404)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_probe(command: list[str], port: int) -> int:
    """Run a ``python -c`` health-check command against ``port`` instead of 8080."""
    assert command[:2] == ["python", "-c"], command
    code = command[2]
    assert "127.0.0.1:8080" in code
    result = subprocess.run([sys.executable, "-c", code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
                            capture_output=True, timeout=20, check=False)
    return result.returncode


# ================================================================================= Dockerfile

def test_dockerfile_is_multi_stage_from_one_slim_python_311_base() -> None:
    _, stages = dockerfile_stages()
    assert len(stages) >= 2
    assert stages[0]["name"] == "builder"
    assert len({stage["base"] for stage in stages}) == 1
    base = stages[0]["base"]
    assert base.startswith("python:3.11") and "slim" in base


def test_builder_makes_wheels_of_the_project_with_the_local_extra() -> None:
    _, stages = dockerfile_stages()
    builder = stages[0]
    runs = " ".join(instruction_args(builder, "RUN"))
    assert "build-essential" in runs
    assert re.search(r"pip wheel .*--wheel-dir /wheels", runs)
    extras = dict(a.partition("=")[::2] for a in instruction_args(builder, "ARG"))
    assert extras["CALLBRIDGE_EXTRAS"] == "[local]"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "local" in pyproject["project"]["optional-dependencies"]
    copied = [args.split()[0] for args in instruction_args(builder, "COPY")]
    assert all((ROOT / source).exists() for source in copied)


def test_final_stage_has_no_build_tools_and_installs_only_the_wheels() -> None:
    stage = final_stage()
    text = " ".join(args for _, args in stage["instructions"])
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "libc6-dev", "apt-get install", "curl", "wget"):
        assert tool not in text, tool
    installs = [args for args in instruction_args(stage, "RUN") if "pip install" in args]
    assert len(installs) == 1
    assert "--no-index" in installs[0] and "--find-links /wheels" in installs[0] and "from=builder" in installs[0]
    assert not any("COPY" == i and "." == a.split()[0] for i, a in stage["instructions"])  # no source tree


def test_final_stage_runs_as_a_numeric_non_root_user_matching_kubernetes() -> None:
    stage = final_stage()
    users = instruction_args(stage, "USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    assert any(f"--uid {uid}" in args for args in instruction_args(stage, "RUN"))
    pod = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsNonRoot"] is True


def test_entrypoint_and_cmd_run_the_real_cli_on_the_exposed_port() -> None:
    stage = final_stage()
    entrypoint = exec_form(instruction_args(stage, "ENTRYPOINT")[-1])
    command = exec_form(instruction_args(stage, "CMD")[-1])
    assert entrypoint == ["callbridge"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "callbridge" in pyproject["project"]["scripts"]
    parsed = build_parser().parse_args(command)
    assert parsed.command == "serve" and parsed.host == "0.0.0.0"
    assert instruction_args(stage, "EXPOSE") == [str(parsed.port)]
    container = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text(encoding="utf-8"))[
        "spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == parsed.port
    assert instruction_args(stage, "STOPSIGNAL") == ["SIGTERM"]


def test_configuration_is_environment_only_and_no_secret_is_baked_in() -> None:
    stage = final_stage()
    env_text = " ".join(instruction_args(stage, "ENV"))
    baked = re.findall(r"(\w+)=", env_text)
    assert not [name for name in baked if re.search(r"KEY|TOKEN|SECRET|PASSWORD", name)]
    assert all(name in Settings.model_fields for name in
               (n.removeprefix("CALLBRIDGE_").lower() for n in baked if n.startswith("CALLBRIDGE_")))
    assert not [i for i, _ in stage["instructions"] if i in ("ADD", "VOLUME")]


def test_image_healthcheck_runs_python_against_healthz(health_server: tuple[int, dict[str, int]]) -> None:
    port, statuses = health_server
    healthcheck = instruction_args(final_stage(), "HEALTHCHECK")
    assert len(healthcheck) == 1
    command = exec_form(healthcheck[0].split("CMD", 1)[1].strip())
    assert "/healthz" in command[2]
    statuses["/healthz"] = 200
    assert run_probe(command, port) == 0
    statuses["/healthz"] = 503
    assert run_probe(command, port) != 0


def test_dockerignore_keeps_the_context_minimal_but_lets_the_copies_through() -> None:
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    builder = dockerfile_stages()[1][0]
    for args in instruction_args(builder, "COPY"):
        for source in args.split()[:-1]:
            assert source.rstrip("/") in allowed, source
    assert not {".env", "deploy", ".venv", ".git", "tests"} & allowed


# ==================================================================================== compose

def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    return loaded


def gateway_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items()
            if svc.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def duration_s(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", value):
        total += float(number) * {"h": 3600, "m": 60, "s": 1}[unit]
    assert total > 0, value
    return total


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_compose_runs_two_gateway_replicas_built_from_the_dockerfile() -> None:
    gateways = gateway_services()
    assert len(gateways) >= 2
    for service in gateways.values():
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile").resolve()
    replica_ids = {svc["environment"]["CALLBRIDGE_REPLICA_ID"] for svc in gateways.values()}
    assert len(replica_ids) == len(gateways)


def test_gateways_wait_for_redis_have_healthchecks_and_a_drain_long_grace_period() -> None:
    services = compose()["services"]
    drain = float(env_example()["CALLBRIDGE_DRAIN_TIMEOUT"])
    for name, service in gateway_services().items():
        redis_host = re.match(r"redis://([^:/]+)", service["environment"]["CALLBRIDGE_REDIS_URL"])
        assert redis_host and redis_host.group(1) in services, name
        assert service["depends_on"][redis_host.group(1)]["condition"] == "service_healthy"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert duration_s(service["stop_grace_period"]) >= drain + HANDOFF_WINDOW_S + 15, name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert service["env_file"] == ".env"


def test_compose_gateway_healthcheck_is_readiness(health_server: tuple[int, dict[str, int]]) -> None:
    port, statuses = health_server
    command = next(iter(gateway_services().values()))["healthcheck"]["test"][1:]
    statuses["/readyz"] = 200
    assert run_probe(command, port) == 0
    statuses["/readyz"] = 503  # draining or Redis unreachable
    assert run_probe(command, port) != 0


def test_redis_persists_with_aof_on_a_named_volume() -> None:
    spec = compose()
    redis = spec["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data" and volume in spec["volumes"]
    assert redis["healthcheck"]["test"][-1] == "ping"
    assert "ports" not in redis


def parse_nginx(text: str) -> list[Any]:
    """nginx config -> [(directive, [args], children or None)]."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r"\"[^\"]*\"|'[^']*'|[{};]|[^\s{};]+", text)
    position = 0

    def block() -> list[Any]:
        nonlocal position
        items: list[Any] = []
        while position < len(tokens):
            if tokens[position] == "}":
                position += 1
                return items
            words: list[str] = []
            while tokens[position] not in ("{", ";", "}"):
                words.append(tokens[position])
                position += 1
            terminator = tokens[position]
            assert terminator != "}", f"missing ';' after {words}"
            position += 1
            items.append((words[0], words[1:], block() if terminator == "{" else None))
        return items

    parsed = block()
    assert position == len(tokens)
    return parsed


def find(items: list[Any], name: str, *args: str) -> list[Any]:
    return [item for item in items if item[0] == name and (not args or tuple(item[1]) == args)]


def test_nginx_proxies_websockets_with_hour_long_timeouts_to_every_gateway() -> None:
    config = parse_nginx((DEPLOY / "nginx.conf").read_text(encoding="utf-8"))
    http_block = find(config, "http")[0][2]
    upstreams = find(http_block, "upstream")
    assert len(upstreams) == 1
    servers = {item[1][0] for item in find(upstreams[0][2], "server")}
    assert servers == {f"{name}:8080" for name in gateway_services()}
    server = find(http_block, "server")[0][2]
    assert find(server, "proxy_http_version", "1.1")
    media = find(server, "location", "=", "/twilio/media")[0][2]
    headers = {item[1][0]: item[1][1] for item in find(media, "proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade" and headers["Connection"] == "$connection_upgrade"
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        assert duration_s(find(media, directive)[0][1][0]) >= 3600
    assert find(media, "proxy_pass")[0][1][0] == f"http://{upstreams[0][1][0]}"
    metrics_location = find(server, "location", "=", "/metrics")[0][2]
    assert find(metrics_location, "return", "404")
    proxy = compose()["services"]["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert {name for name in proxy["depends_on"]} == set(gateway_services())


def test_env_example_names_only_real_settings_and_they_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    values = env_example()
    for name in values:
        assert name.startswith("CALLBRIDGE_")
        assert name in COMPOSE_ONLY_VARIABLES or name.removeprefix("CALLBRIDGE_").lower() in Settings.model_fields, name
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for svc in gateway_services().values():
        for name, value in {**values, **svc["environment"]}.items():
            monkeypatch.setenv(name, str(value))
        settings = load_settings()
        assert settings.public_url.startswith("https://")
        assert settings.drain_timeout == float(values["CALLBRIDGE_DRAIN_TIMEOUT"])
    secrets = [v for k, v in values.items() if re.search(r"TOKEN|SECRET|API_KEY", k)]
    assert secrets and all("replace" in v for v in secrets)


# ================================================================================ Kubernetes

def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def all_k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def _deep_merge(base: Any, patch: Any) -> Any:
    """Strategic-merge subset: maps merge, lists of named items merge by name, others replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (isinstance(base, list) and isinstance(patch, list) and base and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        by_name = {item["name"]: item for item in base}
        result = [_deep_merge(by_name[item["name"]], item) if item["name"] in by_name else item for item in patch]
        return [item for item in base if item["name"] not in {p["name"] for p in patch}] + result
    return copy.deepcopy(patch)


def _json6902(doc: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    for operation in operations:
        *parents, last = [int(p) if p.isdigit() else p for p in operation["path"].strip("/").split("/")]
        node: Any = doc
        for part in parents:
            node = node[part]
        assert operation["op"] in ("replace", "add"), operation
        if operation["op"] == "replace":
            assert (last in node) if isinstance(node, dict) else (last < len(node)), operation["path"]
        node[last] = operation["value"]


NAMESPACED_EXCEPTIONS = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """A small kustomize: resources (files and directories), labels, patches, images, namespace."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        path = directory / resource
        docs.extend(kustomize_build(path) if path.is_dir() else load_documents(path))
    for pairs in spec.get("labels", []):
        assert pairs.get("includeSelectors") is False
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(pairs["pairs"])
    for patch in spec.get("patches", []):
        if "path" in patch:
            for patch_doc in load_documents(directory / patch["path"]):
                indexes = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) ==
                           (patch_doc["kind"], patch_doc["metadata"]["name"])]
                assert len(indexes) == 1, patch_doc["metadata"]["name"]
                docs[indexes[0]] = _deep_merge(docs[indexes[0]], patch_doc)
        else:
            target = patch["target"]
            matches = [d for d in docs if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
            assert len(matches) == 1, target
            _json6902(matches[0], yaml.safe_load(patch["patch"]))
    for image in spec.get("images", []):
        for doc in docs:
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"].rsplit(":", 1)[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in NAMESPACED_EXCEPTIONS:
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    return kustomize_build(OVERLAY)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def validate(doc: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path)
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata'].get('name')}: {path}: {error.message}")


def test_validator_works_offline_and_is_strict() -> None:
    assert kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version()) >= K8S_VERSION
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_document_of_every_manifest_validates() -> None:
    validated = 0
    for path in all_k8s_files():
        for doc in load_documents(path):
            if doc.get("kind") == "Kustomization":
                assert doc["apiVersion"].startswith("kustomize.config.k8s.io/")
                continue
            validate(doc, str(path.relative_to(ROOT)))
            validated += 1
    assert validated >= 15


def test_every_kustomization_reference_exists() -> None:
    kustomizations = list(K8S.rglob("kustomization.yaml"))
    assert {p.parent for p in kustomizations} >= {K8S / "base", OVERLAY, K8S / "redis"}
    for path in kustomizations:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        for resource in spec.get("resources", []):
            target = path.parent / resource
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{path}: {resource}"
        for patch in spec.get("patches", []):
            assert "path" not in patch or (path.parent / patch["path"]).is_file(), f"{path}: {patch}"
    # every manifest in base/ and redis/ is used by their kustomization
    for directory in (K8S / "base", K8S / "redis"):
        listed = set(yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))["resources"])
        assert {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"} == listed


def test_the_built_overlay_validates(built: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in built}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "ConfigMap", "Secret", "StatefulSet", "Namespace"} <= kinds
    for doc in built:
        validate(doc, "overlays/example (built)")
    namespace = one(built, "Namespace", "callbridge")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == namespace for d in built if d["kind"] != "Namespace")
    assert one(built, "Deployment", "callbridge")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/callbridge:0.1.0")
    assert one(built, "Ingress", "callbridge")["spec"]["rules"][0]["host"] == "voice.example.com"


def test_python_build_matches_kubectl_kustomize(built: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the Python build above is the check")
    result = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    ours = {(d["kind"], d["metadata"]["name"]): d for d in built}
    assert theirs == ours


def pod_template(built: list[dict[str, Any]]) -> dict[str, Any]:
    template: dict[str, Any] = one(built, "Deployment", "callbridge")["spec"]["template"]
    return template


def quantity_millicores(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def quantity_mib(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value) / 2**20


def test_probes_prestop_and_grace_period_fit_the_drain(built: list[dict[str, Any]]) -> None:
    spec = pod_template(built)["spec"]
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    prestop = container["lifecycle"]["preStop"]
    prestop_s = prestop["sleep"]["seconds"] if "sleep" in prestop else int(prestop["exec"]["command"][-1])
    assert prestop_s >= 3
    config = one(built, "ConfigMap", "callbridge-config")["data"]
    drain = float(config.get("CALLBRIDGE_DRAIN_TIMEOUT", Settings.model_fields["drain_timeout"].default))
    assert spec["terminationGracePeriodSeconds"] >= prestop_s + drain + HANDOFF_WINDOW_S + 15
    assert "replicas" not in one(built, "Deployment", "callbridge")["spec"]  # the HPA owns it
    strategy = one(built, "Deployment", "callbridge")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_resources_follow_the_planning_figures_and_the_hpa_target(built: list[dict[str, Any]]) -> None:
    resources = pod_template(built)["spec"]["containers"][0]["resources"]
    hpa = one(built, "HorizontalPodAutoscaler", "callbridge")["spec"]
    calls_target = float(next(m for m in hpa["metrics"] if m["type"] == "Pods")["pods"]["target"]["averageValue"])
    cpu_target = next(m for m in hpa["metrics"] if m["type"] == "Resource")["resource"]["target"]["averageUtilization"]
    request_m = quantity_millicores(resources["requests"]["cpu"])
    assert request_m >= calls_target * CPU_MILLICORES_PER_CALL
    # the CPU fallback should trip near the same load as the calls target, not far above it
    assert request_m * cpu_target / 100 <= 1.5 * calls_target * CPU_MILLICORES_PER_CALL + 100
    assert quantity_mib(resources["requests"]["memory"]) * 2**20 / 1e6 >= MEMORY_MB_BASE + calls_target * MEMORY_MB_PER_CALL
    # the limit holds twice the target (burst before the HPA reacts)
    assert quantity_mib(resources["limits"]["memory"]) * 2**20 / 1e6 >= MEMORY_MB_BASE + 2 * calls_target * MEMORY_MB_PER_CALL
    assert quantity_millicores(resources["limits"]["cpu"]) >= 2 * calls_target * CPU_MILLICORES_PER_CALL


def test_hpa_scales_on_active_calls_with_a_cpu_fallback(built: list[dict[str, Any]]) -> None:
    from service import metrics

    hpa = one(built, "HorizontalPodAutoscaler", "callbridge")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "callbridge"}
    assert spec["minReplicas"] >= 2
    pods_metric = next(m for m in spec["metrics"] if m["type"] == "Pods")["pods"]["metric"]["name"]
    assert pods_metric == next(iter(metrics.ACTIVE_CALLS.describe())).name
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in spec["metrics"])
    adapter = load_documents(K8S / "monitoring" / "prometheus-adapter-rules.yaml")[0]
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert any(pods_metric in rule["seriesQuery"] and rule["name"]["as"] == pods_metric for rule in rules)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_selectors_and_references_resolve(built: list[dict[str, Any]]) -> None:
    template = pod_template(built)
    labels = template["metadata"]["labels"]
    container = template["spec"]["containers"][0]
    deployment = one(built, "Deployment", "callbridge")
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert _selects(one(built, "Service", "callbridge")["spec"]["selector"], labels)
    assert _selects(one(built, "PodDisruptionBudget", "callbridge")["spec"]["selector"]["matchLabels"], labels)
    assert _selects(one(built, "NetworkPolicy", "callbridge")["spec"]["podSelector"]["matchLabels"], labels)
    port_names = {p["name"] for p in container["ports"]}
    service = one(built, "Service", "callbridge")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    names = {(d["kind"], d["metadata"]["name"]) for d in built}
    for source in container["envFrom"]:
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        assert (kind, ref["name"]) in names
    assert ("ServiceAccount", template["spec"]["serviceAccountName"]) in names
    redis = one(built, "StatefulSet", "callbridge-redis")["spec"]["template"]["spec"]
    for env in redis["containers"][0]["env"]:
        assert ("Secret", env["valueFrom"]["secretKeyRef"]["name"]) in names
    redis_policy = one(built, "NetworkPolicy", "callbridge-redis")["spec"]
    assert _selects(redis_policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"], labels)
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for rule in one(built, "Ingress", "callbridge")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == "callbridge"
            assert path["backend"]["service"]["port"]["name"] in service_ports


def test_ingress_keeps_websockets_open_and_hides_metrics(built: list[dict[str, Any]]) -> None:
    ingress = one(built, "Ingress", "callbridge")
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert not any("affinity" in key for key in annotations)  # sticky sessions are not needed
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert "/twilio/" in paths and not any(p.startswith("/metrics") for p in paths)
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]


def test_network_policy_allows_only_what_the_gateway_needs(built: list[dict[str, Any]]) -> None:
    spec = one(built, "NetworkPolicy", "callbridge")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
    namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in sources}
    assert {"ingress-nginx", "monitoring"} <= namespaces
    assert all(port["port"] == 8080 for rule in spec["ingress"] for port in rule["ports"])
    egress_ports = {(port["port"], port["protocol"]) for rule in spec["egress"] for port in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (26379, "TCP"), (443, "TCP")} <= egress_ports
    redis_labels = one(built, "StatefulSet", "callbridge-redis")["spec"]["template"]["metadata"]["labels"]
    redis_rule = next(rule for rule in spec["egress"] if any(p["port"] == 6379 for p in rule["ports"]))
    assert _selects(redis_rule["to"][0]["podSelector"]["matchLabels"], redis_labels)
    https = next(rule for rule in spec["egress"] if any(p["port"] == 443 for p in rule["ports"]))
    assert "169.254.169.254/32" in https["to"][0]["ipBlock"]["except"]


def test_redis_statefulset_persists_with_aof(built: list[dict[str, Any]]) -> None:
    statefulset = one(built, "StatefulSet", "callbridge-redis")
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    mounts = {m["name"]: m["mountPath"] for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    config = one(built, "ConfigMap", "callbridge-redis-config")["data"]["redis.conf"]
    directives = dict(line.split(None, 1) for line in config.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    assert directives["appendonly"] == "yes" and directives["dir"] == "/data"
    assert directives["maxmemory-policy"] == "noeviction"
    service = one(built, "Service", "callbridge-redis")
    secret = one(built, "Secret", "callbridge-secrets")["stringData"]
    assert f"@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/" in secret["CALLBRIDGE_REDIS_URL"]
    password = one(built, "Secret", "callbridge-redis-auth")["stringData"]["REDIS_PASSWORD"]
    assert f":{password}@" in secret["CALLBRIDGE_REDIS_URL"]


def test_example_config_and_secrets_are_real_settings_with_placeholder_secrets(
    built: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = one(built, "ConfigMap", "callbridge-config")["data"]
    secrets = [d for d in built if d["kind"] == "Secret"]
    assert all("stringData" in s and "data" not in s for s in secrets)
    gateway_secret = one(built, "Secret", "callbridge-secrets")["stringData"]
    for name in {**config, **gateway_secret}:
        assert name.removeprefix("CALLBRIDGE_").lower() in Settings.model_fields, name
    for secret in secrets:
        for key, value in secret["stringData"].items():
            if re.search(r"TOKEN|SECRET|API_KEY|PASSWORD", key):
                assert "replace" in value, key
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**config, **gateway_secret}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.public_url == "https://" + one(built, "Ingress", "callbridge")["spec"]["rules"][0]["host"]
    assert "sentinel" in (Settings.model_fields["redis_url"].description or "")


def test_documented_sentinel_urls_parse() -> None:
    from service.state.store import parse_sentinel_url

    sources = [ROOT / "docs" / "deploy.md", *K8S.rglob("*.yaml"), DEPLOY / ".env.example"]
    urls = {url for path in sources for url in re.findall(r"redis\+sentinel://[^\s`'\"]+", path.read_text(encoding="utf-8"))}
    assert len(urls) >= 2
    for url in urls:
        target = parse_sentinel_url(url.replace("<password>", "pw"))
        assert target.service_name == "mymaster" and all(port == 26379 for _, port in target.sentinels), url


def test_deploy_doc_names_real_settings_and_files() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    variables = set(re.findall(r"\bCALLBRIDGE_[A-Z0-9_]+", text)) - COMPOSE_ONLY_VARIABLES - {"CALLBRIDGE_EXTRAS"}
    assert variables
    assert {v for v in variables if v.removeprefix("CALLBRIDGE_").lower() not in Settings.model_fields} == set()
    paths = set(re.findall(r"`((?:deploy|docs)/[\w./-]+)`", text))
    assert paths
    user_made = {"deploy/.env"}  # created by the operator from .env.example
    assert {p for p in paths - user_made if not (ROOT / p).exists() and "/prod" not in p} == set()
    assert "/twilio/voice" in text and "HTTP POST" in text
