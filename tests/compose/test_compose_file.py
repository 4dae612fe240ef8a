"""compose/docker-compose.yml, the Dockerfile and Prometheus's targets, read as files.

Compose itself validates the file too (`make compose-check`: `docker compose config --quiet`);
these check what Compose cannot know: pinned images, healthchecks, and that the variables
set for our image are the settings model's (exchange/settings.py is the single source).
"""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
from compose_testkit import (
    COMPOSE_E2E_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    PROJECT_IMAGE,
    PROMETHEUS_CONFIG,
    ROOT,
    compose,
    environment,
    load_yaml,
    project_services,
    services,
)

from entrypoints.cli import build_parser
from exchange.settings import Settings, load_settings
from ops.versions import CASSANDRA_VERSION, KAFKA_VERSION

# A service without a healthcheck must be named here with the reason.
NO_HEALTHCHECK = {"init": "a one-shot job: the others wait for its exit code, not its health"}
# What a user reaches from the host: the API, Grafana, Prometheus. Nothing else is published.
PUBLISHED = {"gateway": 8000, "grafana": 3000, "prometheus": 9090}


def test_images_when_read_are_all_pinned_to_a_version() -> None:
    for name, service in services().items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image!r} is not pinned"


def test_kafka_and_cassandra_images_when_read_match_the_pinned_real_stack() -> None:
    s = services()
    assert s["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert s["cassandra"]["image"] == f"cassandra:{CASSANDRA_VERSION}"


def test_services_when_read_have_a_healthcheck_or_a_stated_reason() -> None:
    without = {
        name
        for name, s in services().items()
        if not s.get("healthcheck", {}).get("test") or s["healthcheck"].get("disable")
    }
    assert without == set(NO_HEALTHCHECK)


def test_project_services_when_read_wait_for_the_init_job_to_succeed() -> None:
    ours = project_services()
    assert {"init", "engine", "settlement", "gateway", "lag"} <= set(ours)
    for name, s in ours.items():
        if name == "init":
            continue
        assert s["depends_on"]["init"]["condition"] == "service_completed_successfully", name
    init = ours["init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["depends_on"]["cassandra"]["condition"] == "service_healthy"
    script = init["command"][-1]
    assert "exchange topics" in script and "exchange db init" in script


def test_project_services_when_read_run_real_cli_commands() -> None:
    parser = build_parser()
    for name, s in project_services().items():
        argv = s["command"]
        if argv[:2] == ["sh", "-c"]:
            commands = [shlex.split(part) for part in argv[2].split("&&")]
        else:
            commands = [argv]
        for cmd in commands:
            assert cmd[0] == "exchange", f"{name}: {cmd}"
            parser.parse_args(cmd[1:])  # exits (fails the test) on an unknown command


def test_environment_when_set_for_our_image_is_read_by_the_settings_model() -> None:
    fields = {f.upper() for f in Settings.model_fields}
    for name, s in project_services().items():
        env = environment(s)
        unknown = set(env) - fields
        assert not unknown, f"{name}: {sorted(unknown)} are not settings (exchange/settings.py)"
        settings = load_settings(env)  # and every value is valid
        assert settings.kafka_bootstrap_servers == "kafka:9092"
        assert settings.cassandra_contact_points == ("cassandra",)


def test_dockerfile_env_when_it_sets_exchange_variables_sets_only_settings() -> None:
    fields = {f.upper() for f in Settings.model_fields}
    names = set(re.findall(r"\b(EXCHANGE_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    assert names and names <= fields


def test_settlement_when_deployed_runs_two_workers_of_one_group() -> None:
    assert services()["settlement"]["deploy"]["replicas"] == 2


def test_published_ports_when_read_are_only_what_a_user_needs_on_the_bind_address() -> None:
    published = {}
    for name, s in services().items():
        for port in s.get("ports", []):
            host, host_port, container_port = str(port).rsplit(":", 2)
            assert host == "${BIND_ADDRESS:-127.0.0.1}", f"{name}: {port} binds every interface"
            assert host_port == container_port
            published[name] = int(container_port)
    assert published == PUBLISHED
    e2e = load_yaml(COMPOSE_E2E_FILE)["services"]
    for name, s in e2e.items():  # the e2e override publishes Kafka/Cassandra on loopback only
        assert all(str(p).startswith("127.0.0.1:") for p in s.get("ports", [])), name


def test_volumes_when_mounted_are_named_or_our_config_read_only() -> None:
    spec = compose()
    declared = set(spec["volumes"])
    used = set()
    for name, s in services().items():
        for volume in s.get("volumes", []):
            source, _target, *mode = volume.split(":")
            if source.startswith("./"):  # configuration shipped in compose/
                assert mode == ["ro"], f"{name}: {volume} should be read-only"
                assert (ROOT / "compose" / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: {volume} is not a named volume"
                used.add(source)
    assert used == declared


def test_health_and_metrics_ports_when_read_match_the_service_settings() -> None:
    ports = {
        "engine": "EXCHANGE_ENGINE_METRICS_PORT",
        "settlement": "EXCHANGE_SETTLEMENT_METRICS_PORT",
        "lag": "EXCHANGE_LAG_METRICS_PORT",
        "gateway": "EXCHANGE_PORT",
    }
    ours = project_services()
    for name, variable in ports.items():
        port = environment(ours[name])[variable]
        assert f"http://127.0.0.1:{port}/" in " ".join(ours[name]["healthcheck"]["test"]), name


def test_prometheus_when_configured_scrapes_every_service_on_its_port() -> None:
    expected = {
        "engine": ("engine", environment(services()["engine"])["EXCHANGE_ENGINE_METRICS_PORT"]),
        "settlement": (
            "settlement",
            environment(services()["settlement"])["EXCHANGE_SETTLEMENT_METRICS_PORT"],
        ),
        "gateway": ("gateway", environment(services()["gateway"])["EXCHANGE_PORT"]),
        "exchange-lag": ("lag", environment(services()["lag"])["EXCHANGE_LAG_METRICS_PORT"]),
        "kafka-exporter": ("kafka-exporter", "9308"),
        "prometheus": ("localhost", "9090"),
    }
    jobs = {}
    for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]:
        if "dns_sd_configs" in job:
            (sd,) = job["dns_sd_configs"]
            (host,) = sd["names"]
            jobs[job["job_name"]] = (host, str(sd["port"]))
        else:
            ((target,),) = [c["targets"] for c in job["static_configs"]]
            host, port = target.rsplit(":", 1)
            jobs[job["job_name"]] = (host, port)
    assert jobs == expected
    for host, _ in jobs.values():
        assert host == "localhost" or host in services()


def _stages(text: str) -> list[str]:
    return re.split(r"(?m)^FROM\s", text)[1:]


def test_dockerfile_when_built_has_a_final_stage_without_build_tools_running_as_non_root() -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "multi-stage"
    final = stages[-1]
    assert re.search(r"(?m)^USER\s+(?!root\b|0\b)\S+", final), "the final stage runs as root"
    assert not re.search(r"gcc|build-essential|apt-get install", final)
    assert re.search(r"(?m)^COPY --from=", final)


def test_dockerignore_when_read_sends_only_what_the_image_copies() -> None:
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything else (.venv, data, .git, tests) stays out"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = set(re.findall(r"(?m)^COPY\s+(?!--from)(\S+)", DOCKERFILE.read_text()))
    for source in copied:
        assert source in allowed, f"COPY {source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), source
    # Every package the project installs, and the data the codec and the Cassandra store
    # read from beside them.
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for package in [p.removesuffix("*") for p in include] + ["avro", "cql"]:
        assert package in allowed and package in copied, f"{package} is not in the image"


@pytest.mark.parametrize(
    "image",
    ["apache/kafka", "cassandra", "prom/prometheus", "grafana/grafana", "danielqsj/kafka-exporter"],
)
def test_stack_when_read_has_each_dependency_once(image: str) -> None:
    assert sum(1 for s in services().values() if s["image"].startswith(image + ":")) == 1


def test_project_image_when_read_is_built_from_the_root_dockerfile() -> None:
    for name, s in project_services().items():
        assert s["image"].startswith(PROJECT_IMAGE + ":")
        assert s["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name


def test_grafana_when_provisioned_loads_our_dashboards_and_opens_one_as_home() -> None:
    grafana = services()["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    (provider,) = load_yaml(ROOT / "compose/grafana/provisioning/dashboards/exchange.yml")[
        "providers"
    ]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, name = home.rpartition("/")
    assert folder == provider["options"]["path"]
    assert (ROOT / "compose/grafana/dashboards" / name).exists()
    # Viewers open it without a login prompt.
    assert environment(grafana)["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment(grafana)["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    (source,) = load_yaml(ROOT / "compose/grafana/provisioning/datasources/prometheus.yml")[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services()


def test_gateway_when_deployed_requires_and_scrapes_every_container_by_name() -> None:
    s = services()
    settings = load_settings(environment(s["gateway"]))
    sources = settings.exchange_dashboard_sources
    assert sources is not None
    replicas = s["settlement"]["deploy"]["replicas"]
    project = compose()["name"]
    port = {
        name: environment(s[name])[var]
        for name, var in (
            ("engine", "EXCHANGE_ENGINE_METRICS_PORT"),
            ("settlement", "EXCHANGE_SETTLEMENT_METRICS_PORT"),
            ("lag", "EXCHANGE_LAG_METRICS_PORT"),
        )
    }
    assert set(sources) == {
        f"http://engine:{port['engine']}/metrics",
        f"http://lag:{port['lag']}/metrics",
        *(
            f"http://{project}-settlement-{i}:{port['settlement']}/metrics"
            for i in range(1, replicas + 1)
        ),
    }
    assert set(settings.ready_urls) == {
        f"http://engine:{port['engine']}/ready",
        *(
            f"http://{project}-settlement-{i}:{port['settlement']}/ready"
            for i in range(1, replicas + 1)
        ),
    }


def test_engine_when_deployed_cannot_be_scaled_past_its_single_writer() -> None:
    engine = services()["engine"]
    assert engine.get("container_name")  # compose refuses --scale for a named container
    assert engine.get("deploy", {}).get("replicas", 1) == 1
