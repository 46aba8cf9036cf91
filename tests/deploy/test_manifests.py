"""Static checks of the deployment artefacts against the code they run.

No Docker engine or Kubernetes cluster is needed (or present): the Dockerfile,
``deploy/docker-compose.yml`` and ``deploy/k8s/*`` are parsed and every
reference they make is checked against the code: env vars are settings that
exist (and load), probe paths are routes the processes serve on the ports the
settings give, commands are ``cronhive`` subcommands, selectors select, the
kustomization lists every manifest.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dramatiq.cli
import pytest
import yaml

from cronhive.cli import PROCESSES
from cronhive.settings import VARIABLES, Settings
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

#: What the scheduler and worker serve on METRICS_HOST:METRICS_PORT (shared/ops_server.py).
OPS_PATHS = {"/healthz", "/readyz", "/metrics"}
#: Credentials: in the Kubernetes Secret, never in the ConfigMap.
SECRET_VARIABLES = {"MONGODB_URI", "RABBITMQ_URL", "API_TOKEN", "API_TOKENS", "UI_SECRET_KEY"}
#: Settings only `make up`'s embedded MongoDB reads; deployments need not set them.
LOCAL_ONLY_VARIABLES = {"DATA_DIR", "EMBEDDED_MONGODB_PORT"}
#: The documented variables of the third-party images (not cronhive settings), by image repository.
IMAGE_VARIABLES = {
    "mongo": {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD", "MONGO_INITDB_DATABASE"},
    "rabbitmq": {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS", "RABBITMQ_DEFAULT_VHOST"},
}
#: Python's and pip's own variables the Dockerfile may set for the build and the runtime.
PYTHON_IMAGE_VARIABLES = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH", "PIP_NO_CACHE_DIR",
                          "PIP_DISABLE_PIP_VERSION_CHECK"}


# -- loading ----------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}|\$(?P<bare>\w*)")


def interpolate(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Compose's ``${NAME:-default}`` interpolation, from ``env`` (empty: every default)."""
    env = env or {}
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare") is not None:
            raise AssertionError(f"write ${{NAME:-default}}, not a bare ${match.group('bare')}, in {value!r}")
        name, op = match.group("name"), match.group("op")
        if name in env and (env[name] != "" or op != ":-"):
            return env[name]
        assert op, f"${{{name}}} in {value!r} has no default: `docker compose up` would need it set"
        return match.group("default")

    return _INTERPOLATION.sub(substitute, value)


def env_mapping(environment: Any) -> dict[str, str]:
    """A compose ``environment`` (mapping or ``KEY=value`` list) as a dict of strings."""
    if environment is None:
        return {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = load_documents(COMPOSE)
    assert len(document) == 1
    return interpolate(document[0])


def cronhive_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the cronhive image (built from the Dockerfile)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def service_by_command(compose: dict[str, Any], command: str) -> tuple[str, dict[str, Any]]:
    matches = [(name, svc) for name, svc in cronhive_services(compose).items() if svc["command"][0] == command]
    assert len(matches) == 1, f"expected one compose service running `cronhive {command}`, found {len(matches)}"
    return matches[0]


@dataclass(frozen=True)
class Manifest:
    file: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load_documents(K8S / "kustomization.yaml")[0]


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[Manifest]:
    return [Manifest(file, doc) for file in kustomization["resources"] for doc in load_documents(K8S / file)]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {[m.name for m in found]}"
    return found[0]


def the_container(deployment: Manifest) -> dict[str, Any]:
    containers = deployment.doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment.name}: one container expected"
    return containers[0]


def deployment_for(manifests: list[Manifest], command: str) -> Manifest:
    found = [m for m in of_kind(manifests, "Deployment") if the_container(m)["args"][0] == command]
    assert len(found) == 1, f"expected one Deployment running `cronhive {command}`, found {[m.name for m in found]}"
    return found[0]


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return deployment.doc["spec"]["template"]["metadata"]["labels"]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def k8s_environment(manifests: list[Manifest], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: its envFrom ConfigMaps and Secrets, then its env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            [config] = [m for m in of_kind(manifests, "ConfigMap") if m.name == ref] or [None]
            assert config is not None, f"envFrom names ConfigMap {ref!r}, which no manifest defines"
            env.update({key: str(value) for key, value in config.doc.get("data", {}).items()})
        if "secretRef" in source:
            ref = source["secretRef"]["name"]
            [secret] = [m for m in of_kind(manifests, "Secret") if m.name == ref] or [None]
            assert secret is not None, f"envFrom names Secret {ref!r}, which no manifest defines"
            env.update({key: str(value) for key, value in secret.doc.get("stringData", {}).items()})
    env.update({item["name"]: str(item.get("value", "")) for item in container.get("env", [])})
    return env


def settings_of(env: Mapping[str, str]) -> Settings:
    """The settings a process started with ``env`` would build (raises on a bad value)."""
    return Settings.from_env(dict(env))


# -- Dockerfile -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, rest = (current + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def instruction_args(name: str) -> list[str]:
    return [rest for keyword, rest in dockerfile_instructions() if keyword == name]


def exec_form(name: str) -> list[str]:
    """The last ``NAME [...]`` instruction, which must be in exec (JSON array) form."""
    found = instruction_args(name)
    assert found, f"the Dockerfile has no {name}"
    value = json.loads(found[-1])
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), f"{name} must be a JSON array"
    return value


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instruction_args("ENV"):
        tokens = shlex.split(rest)
        if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def dockerfile_uid() -> int:
    user = instruction_args("USER")[-1].split(":")[0]
    assert user.isdigit(), "USER must be numeric so that Kubernetes' runAsNonRoot can verify it"
    return int(user)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the repo) out of the build context."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "negated patterns: extend this matcher"
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern.strip("/")) for prefix in prefixes):
            return True
    return False


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_dockerfile_builds_one_python_image_with_the_pinned_package() -> None:
    assert instruction_args("FROM") == ["python:3.11-slim"]
    runs = " ".join(instruction_args("RUN"))
    assert "pip install -c constraints.txt ." in runs
    # no extras: the embedded SecantusDB (`[embedded]`, `[test]`) must not be in the image, nor any MongoDB
    assert ".[" not in runs and "secantus" not in runs.lower() and "mongo" not in runs.lower()
    assert (REPO / "constraints.txt").is_file()


def test_dockerfile_copies_files_that_exist_and_are_in_the_build_context() -> None:
    for rest in instruction_args("COPY"):
        *sources, _destination = shlex.split(rest)
        for source in sources:
            if source == ".":
                continue
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repo"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # what `pip install .` needs: the project file, its readme and every package
    needed = ["pyproject.toml", "constraints.txt", pyproject()["project"]["readme"]]
    needed += [f"{folder}/__init__.py" for folder in sorted(pyproject()["tool"]["setuptools"]["package-dir"].values())]
    for path in needed:
        assert not dockerignored(path), f".dockerignore drops {path}, which the image build needs"
    for path in ["tests/conftest.py", ".venv/bin/python", ".git/HEAD", "deploy/docker-compose.yml"]:
        assert dockerignored(path), f".dockerignore should keep {path} out of the build context"


def test_dockerfile_entrypoint_is_the_cronhive_console_script_and_cmd_a_process() -> None:
    entrypoint = exec_form("ENTRYPOINT")
    assert entrypoint[-1] == "cronhive"
    assert pyproject()["project"]["scripts"]["cronhive"] == "cronhive.cli:main"
    if entrypoint[0].endswith("tini"):
        assert entrypoint[1] == "--"
        assert re.search(r"apt-get install [^&]*\btini\b", " ".join(instruction_args("RUN")))
    assert exec_form("CMD")[0] in PROCESSES


def test_every_process_module_is_packaged_with_a_main() -> None:
    setuptools = pyproject()["tool"]["setuptools"]
    for module in set(PROCESSES.values()):
        assert module in setuptools["packages"], f"{module} is not packaged"
        folder = REPO / setuptools["package-dir"][module]
        assert folder.is_dir(), f"cronhive runs `python -m {module}`: no {folder.name}/ folder"
        assert (folder / "__main__.py").is_file(), f"`python -m {module}` has no __main__.py"


def process_invocations(compose: dict[str, Any], manifests: list[Manifest]) -> set[tuple[str, ...]]:
    """Every ``cronhive ...`` argument list the compose file and the Deployments run."""
    invocations = {tuple(service["command"]) for service in cronhive_services(compose).values()}
    invocations |= {tuple(the_container(d)["args"]) for d in of_kind(manifests, "Deployment")}
    return invocations


def test_every_flag_given_to_a_process_is_one_it_accepts(compose: dict[str, Any], manifests: list[Manifest]) -> None:
    """``cronhive worker --processes 2 --threads 4``: each flag appears in ``python -m cronhive.worker --help``."""
    for invocation in sorted(process_invocations(compose, manifests)):
        command, flags = invocation[0], [arg for arg in invocation[1:] if arg.startswith("-")]
        if not flags:
            continue
        module = PROCESSES[command]
        assert importlib.util.find_spec(f"{module}.__main__") is not None, \
            f"`cronhive {command}` runs `python -m {module}`: no __main__"
        help_text = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                                   text=True, timeout=60, check=True).stdout
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"`cronhive {command}` has no {flag}"


def test_dockerfile_sets_only_known_variables_and_exposes_the_configured_ports() -> None:
    env = dockerfile_env()
    unknown = set(env) - set(VARIABLES) - PYTHON_IMAGE_VARIABLES
    assert not unknown, f"the Dockerfile sets variables that are no cronhive setting: {sorted(unknown)}"
    settings = settings_of({key: value for key, value in env.items() if key in VARIABLES})
    assert settings.api_host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"
    exposed = {int(port.split("/")[0]) for rest in instruction_args("EXPOSE") for port in rest.split()}
    assert exposed == {settings.api_port, settings.metrics_port}
    assert dockerfile_uid() != 0


# -- the code's routes --------------------------------------------------------------


@pytest.fixture(scope="module")
def api_paths() -> Iterator[set[str]]:
    """The GET paths the API serves (the Flask url_map; building the app connects nothing)."""
    from cronhive.api.app import close_app, create_app

    app = create_app(Settings.from_env({"MONGODB_TIMEOUT_MS": "100"}))
    try:
        yield {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}
    finally:
        close_app(app)


def test_ops_server_serves_the_probe_paths() -> None:
    """The scheduler's and worker's health/metrics server answers every path the manifests use."""
    from cronhive.ops_server import OpsServer

    server = OpsServer("127.0.0.1", free_port(), {}).start()
    try:
        for path in sorted(OPS_PATHS):
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
                assert response.status == 200, path
    finally:
        server.stop()


# -- every YAML file ----------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_into_mappings(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} is empty"
    for document in documents:
        assert isinstance(document, dict)
        if path.parent == K8S and path.name != "kustomization.yaml":
            assert {"apiVersion", "kind", "metadata"} <= set(document), path
            assert document["metadata"].get("name"), path


def test_deploy_holds_the_compose_file_and_the_kustomization() -> None:
    assert COMPOSE.is_file() and (K8S / "kustomization.yaml").is_file()
    assert not (DEPLOY / ".gitkeep").exists()


# -- Docker Compose -----------------------------------------------------------------


def test_compose_runs_mongodb_rabbitmq_api_two_schedulers_and_workers(compose: dict[str, Any]) -> None:
    images = {name: service.get("image", "") for name, service in compose["services"].items()}
    assert [name for name, image in images.items() if image.startswith("mongo:7")] == ["mongodb"]
    assert [name for name, image in images.items() if image == "rabbitmq:3-management"] == ["rabbitmq"]
    service_by_command(compose, "api")
    _, scheduler = service_by_command(compose, "scheduler")
    assert int(scheduler["deploy"]["replicas"]) >= 2
    _, worker = service_by_command(compose, "worker")
    assert int(worker["deploy"]["replicas"]) >= 1
    assert set(cronhive_services(compose)) | {"mongodb", "rabbitmq"} == set(compose["services"])


def test_compose_builds_the_image_from_the_repo_dockerfile(compose: dict[str, Any]) -> None:
    images = set()
    for name, service in cronhive_services(compose).items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
        images.add(service["image"])
    assert len(images) == 1, "every cronhive service should run the same image"


def test_compose_commands_are_cronhive_subcommands(compose: dict[str, Any]) -> None:
    assert exec_form("ENTRYPOINT")[-1] == "cronhive"  # compose's `command` is appended to it
    for name, service in cronhive_services(compose).items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: write the command as a list"
        assert command[0] in PROCESSES, f"{name}: `cronhive {command[0]}` is no cronhive process"
        assert "entrypoint" not in service, f"{name}: keep the image's entrypoint (tini + cronhive)"
    _, worker = service_by_command(compose, "worker")
    flags = dict(zip(worker["command"][1::2], worker["command"][2::2]))
    assert set(flags) == {"--processes", "--threads"} and all(value.isdigit() for value in flags.values())


def test_compose_sets_only_known_variables_and_every_setting_that_matters(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = env_mapping(service.get("environment"))
        if name in cronhive_services(compose):
            unknown = set(env) - set(VARIABLES)
            assert not unknown, f"{name} sets variables that are no cronhive setting: {sorted(unknown)}"
            missing = set(VARIABLES) - LOCAL_ONLY_VARIABLES - set(env)
            assert not missing, f"{name} leaves settings implicit: {sorted(missing)}"
        else:
            repository = service["image"].split(":")[0]
            unknown = set(env) - IMAGE_VARIABLES.get(repository, set())
            assert not unknown, f"{name} sets variables its image does not document: {sorted(unknown)}"


def test_compose_settings_load_and_point_at_the_compose_services(compose: dict[str, Any]) -> None:
    rabbit_env = env_mapping(compose["services"]["rabbitmq"]["environment"])
    for name, service in cronhive_services(compose).items():
        settings = settings_of(env_mapping(service["environment"]))
        assert settings.api_host == "0.0.0.0" and settings.metrics_host == "0.0.0.0", name
        assert not settings.mongodb_uri_from_default, name
        mongo, rabbit = urlsplit(settings.mongodb_uri), urlsplit(settings.rabbitmq_url)
        assert mongo.hostname in compose["services"] and rabbit.hostname in compose["services"], name
        assert rabbit.path == "/%2F", f"{name}: write the default vhost as %2F"
        assert (rabbit.username, rabbit.password) == (rabbit_env["RABBITMQ_DEFAULT_USER"], rabbit_env["RABBITMQ_DEFAULT_PASS"])


def test_compose_mongodb_is_a_replica_set_the_healthcheck_initiates(compose: dict[str, Any]) -> None:
    mongodb = compose["services"]["mongodb"]
    command = mongodb["command"]
    replica_set = command[command.index("--replSet") + 1]
    check = " ".join(mongodb["healthcheck"]["test"])
    assert "rs.initiate(" in check and "isWritablePrimary" in check
    assert re.search(r"_id:\s*'([^']+)'", check).group(1) == replica_set
    member = re.search(r"host:\s*'([^']+)'", check).group(1)
    assert member.split(":")[0] in {"mongodb", mongodb.get("hostname")}
    for name, service in cronhive_services(compose).items():
        uri = urlsplit(env_mapping(service["environment"])["MONGODB_URI"])
        assert parse_qs(uri.query)["replicaSet"] == [replica_set], name
        assert f"{uri.hostname}:{uri.port or 27017}" == member, name


def test_compose_comes_up_in_order(compose: dict[str, Any]) -> None:
    for infra in ("mongodb", "rabbitmq"):
        assert compose["services"][infra]["healthcheck"]["test"], infra
    for name, service in cronhive_services(compose).items():
        depends = service["depends_on"]
        assert {key: value["condition"] for key, value in depends.items()} == {
            "mongodb": "service_healthy", "rabbitmq": "service_healthy"}, name


def healthcheck_url(service: dict[str, Any]) -> tuple[int, str]:
    check = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[\w/.-]*)", check)
    assert match, f"no local http URL in the healthcheck {check!r}"
    return int(match.group(1)), match.group(2)


def test_compose_healthchecks_probe_served_paths_on_the_configured_ports(compose: dict[str, Any],
                                                                         api_paths: set[str]) -> None:
    for name, service in cronhive_services(compose).items():
        settings = settings_of(env_mapping(service["environment"]))
        port, path = healthcheck_url(service)
        if service["command"][0] == "api":
            assert (port, path in api_paths) == (settings.api_port, True), name
            published = {str(mapping).split(":")[-1].split("/")[0] for mapping in service["ports"]}
            assert published == {str(settings.api_port)}, name
        else:
            assert (port, path in OPS_PATHS) == (settings.metrics_port, True), name
        assert path == "/readyz", f"{name}: healthy means ready (MongoDB and RabbitMQ reachable)"


def test_compose_workers_get_longer_to_stop_than_dramatiq_waits_for_runs(compose: dict[str, Any]) -> None:
    _, worker = service_by_command(compose, "worker")
    assert duration_s(worker["stop_grace_period"]) > dramatiq_shutdown_timeout_s(worker["command"][1:])


def duration_s(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"unreadable duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def dramatiq_shutdown_timeout_s(worker_args: list[str]) -> float:
    """How long dramatiq lets running actors finish on SIGTERM (its CLI default, or the flag given)."""
    default_ms = dramatiq.cli.make_argument_parser().parse_args(["broker"]).worker_shutdown_timeout
    if "--worker-shutdown-timeout" in worker_args:
        return int(worker_args[worker_args.index("--worker-shutdown-timeout") + 1]) / 1000
    return default_ms / 1000


# -- Kubernetes ---------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_one_namespace(kustomization: dict[str, Any],
                                                              manifests: list[Manifest]) -> None:
    on_disk = {path.name for path in K8S.iterdir() if path.suffix in {".yaml", ".yml"}} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    namespace = one(manifests, "Namespace").name
    assert kustomization["namespace"] == namespace
    for manifest in manifests:
        if manifest.kind != "Namespace":
            assert manifest.doc["metadata"].get("namespace") == namespace, f"{manifest.file}: {manifest.name}"
    images = {the_container(d)["image"].split(":")[0] for d in of_kind(manifests, "Deployment")}
    assert images == {image["name"] for image in kustomization["images"]}


def test_k8s_config_and_secret_hold_only_known_settings(manifests: list[Manifest]) -> None:
    config = one(manifests, "ConfigMap").doc.get("data", {})
    secret = one(manifests, "Secret").doc
    assert "data" not in secret, "write the Secret's placeholders as stringData"
    secret_data = secret["stringData"]
    assert not set(config) - set(VARIABLES), f"ConfigMap keys that are no setting: {sorted(set(config) - set(VARIABLES))}"
    assert set(secret_data) == SECRET_VARIABLES
    assert not set(config) & SECRET_VARIABLES, "credentials belong in the Secret"
    missing = set(VARIABLES) - LOCAL_ONLY_VARIABLES - set(config) - set(secret_data)
    assert not missing, f"settings left implicit: {sorted(missing)}"
    assert all(isinstance(value, str) for value in [*config.values(), *secret_data.values()])


@pytest.mark.parametrize("command", sorted(PROCESSES))
def test_k8s_deployment_runs_a_cronhive_process_with_settings_that_load(manifests: list[Manifest], command: str) -> None:
    deployment = deployment_for(manifests, command)
    container = the_container(deployment)
    assert "command" not in container, "keep the image's entrypoint (tini + cronhive); set args only"
    assert container["args"][0] in PROCESSES
    refs = {key for source in container["envFrom"] for key in source}
    assert refs == {"configMapRef", "secretRef"}
    env = k8s_environment(manifests, container)
    assert not set(env) - set(VARIABLES)
    settings = settings_of(env)
    assert settings.api_host == "0.0.0.0" and settings.metrics_host == "0.0.0.0"
    assert urlsplit(settings.rabbitmq_url).path == "/%2F"
    assert not settings.mongodb_uri_from_default


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        assert port in {p["containerPort"] for p in container["ports"]}, port
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p.get("name") == port] or [None]
    assert number is not None, f"port name {port!r} is not a container port"
    return number


@pytest.mark.parametrize("command", sorted(PROCESSES))
def test_k8s_probes_hit_served_paths_on_the_configured_port(manifests: list[Manifest], api_paths: set[str],
                                                             command: str) -> None:
    deployment = deployment_for(manifests, command)
    container = the_container(deployment)
    settings = settings_of(k8s_environment(manifests, container))
    served, port = (api_paths, settings.api_port) if command == "api" else (OPS_PATHS, settings.metrics_port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in container:
            continue
        get = container[probe]["httpGet"]
        assert get["path"] in served, f"{deployment.name} {probe}: {get['path']} is not served"
        assert container_port(container, get["port"]) == port, f"{deployment.name} {probe}: wrong port"
    annotations = deployment.doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_schedulers_run_two_replicas_and_the_autoscaler_sizes_the_workers(manifests: list[Manifest]) -> None:
    assert deployment_for(manifests, "scheduler").doc["spec"]["replicas"] == 2
    worker = deployment_for(manifests, "worker")
    assert "replicas" not in worker.doc["spec"], "the HorizontalPodAutoscaler owns the worker count"
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa.doc["apiVersion"] == "autoscaling/v2"
    target = hpa.doc["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", worker.name)
    assert (hpa.doc["spec"]["minReplicas"], hpa.doc["spec"]["maxReplicas"]) == (2, 10)
    [metric] = hpa.doc["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert the_container(worker)["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"


def test_k8s_selectors_match_pod_labels(manifests: list[Manifest]) -> None:
    deployments = of_kind(manifests, "Deployment")
    for deployment in deployments:
        assert selects(deployment.doc["spec"]["selector"]["matchLabels"], pod_labels(deployment)), deployment.name
    covered = set()
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        selected = [d.name for d in deployments if selects(pdb.doc["spec"]["selector"]["matchLabels"], pod_labels(d))]
        assert len(selected) == 1, f"PodDisruptionBudget {pdb.name} selects {selected}"
        covered.update(selected)
    assert covered == {d.name for d in deployments}, "every Deployment needs a PodDisruptionBudget"
    for service in of_kind(manifests, "Service"):
        selected = [d for d in deployments if selects(service.doc["spec"]["selector"], pod_labels(d))]
        assert [d.name for d in selected] == [deployment_for(manifests, "api").name], service.name
        for port in service.doc["spec"]["ports"]:
            assert container_port(the_container(selected[0]), port["targetPort"])


def test_k8s_disruption_budgets_keep_a_scheduler_and_an_api(manifests: list[Manifest]) -> None:
    budgets = {}
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        [deployment] = [d for d in of_kind(manifests, "Deployment")
                        if selects(pdb.doc["spec"]["selector"]["matchLabels"], pod_labels(d))]
        budgets[the_container(deployment)["args"][0]] = (pdb.doc["spec"], deployment.doc["spec"].get("replicas"))
    for command in ("api", "scheduler"):
        spec, replicas = budgets[command]
        assert spec.get("minAvailable") == 1 and replicas > 1, command
    assert budgets["worker"][0].get("maxUnavailable") == 1


@pytest.mark.parametrize("command", sorted(PROCESSES))
def test_k8s_pods_run_unprivileged_with_resources(manifests: list[Manifest], command: str) -> None:
    deployment = deployment_for(manifests, command)
    pod = deployment.doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    container = the_container(deployment)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    if security.get("readOnlyRootFilesystem"):
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert "/tmp" in mounts, "gunicorn, dramatiq and prometheus_client write under /tmp"
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{deployment.name}: {bound}"


def test_k8s_workers_get_longer_to_stop_than_dramatiq_waits_for_runs(manifests: list[Manifest]) -> None:
    graces = {command: deployment_for(manifests, command).doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
              for command in PROCESSES}
    worker_args = the_container(deployment_for(manifests, "worker"))["args"][1:]
    assert graces["worker"] > dramatiq_shutdown_timeout_s(worker_args)
    assert graces["worker"] > max(graces["api"], graces["scheduler"])


# -- the operator's guide -----------------------------------------------------------


def test_deploy_readme_documents_both_ways_every_setting_and_every_manifest(kustomization: dict[str, Any]) -> None:
    guide = (DEPLOY / "README.md").read_text()
    headings = re.findall(r"^#+ (.+)$", guide, flags=re.MULTILINE)
    assert {"Run on Docker", "Run on Kubernetes"} <= set(headings)
    undocumented = [name for name in sorted(set(VARIABLES) - LOCAL_ONLY_VARIABLES) if f"`{name}`" not in guide]
    assert not undocumented, f"deploy/README.md does not explain {undocumented}"
    for file in kustomization["resources"]:
        assert f"`{file}`" in guide, f"deploy/README.md does not describe {file}"
