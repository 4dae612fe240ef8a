"""Reading compose/: the compose file, Prometheus's config and rules, Grafana's dashboards.

Shared by the file checks (tests/compose, python only) and the e2e test that runs the real
Prometheus (tests/e2e/test_prometheus_queries.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
COMPOSE_E2E_FILE = COMPOSE_DIR / "docker-compose.e2e.yml"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERT_RULES = COMPOSE_DIR / "prometheus" / "alerts.yml"
GRAFANA_DIR = COMPOSE_DIR / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROJECT_IMAGE = "kafka-exchange-pipeline"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE_FILE))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def project_services() -> dict[str, dict[str, Any]]:
    """The services that run the project's own image (`exchange <command>`)."""
    return {
        name: s
        for name, s in services().items()
        if str(s.get("image", "")).startswith(PROJECT_IMAGE + ":")
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose sets it when the host sets none of the variables
    it interpolates (``${NAME:-default}`` -> default, ``${NAME}`` -> empty)."""
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _INTERPOLATION.sub(lambda m: m.group(2) or "", str(v)) for k, v in env.items()}


_INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+)(?::?-([^}]*))?\}")


def dashboard(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row, rows' nested panels included."""
    out: list[dict[str, Any]] = []
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


@dataclass(frozen=True, slots=True)
class Query:
    where: str  # "<dashboard title> / <panel title> / <refId>" or "alert <name>"
    expr: str


def variable_values(dash: dict[str, Any]) -> dict[str, str]:
    """Each template variable's value as the dashboard opens: its current value, or the
    regex of "All"."""
    values: dict[str, str] = {}
    for var in dash.get("templating", {}).get("list", []):
        current = var.get("current", {}).get("value")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else "|".join(current)
        if current in (None, "$__all"):
            current = var.get("allValue") or ".*"
        values[var["name"]] = str(current)
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """What Grafana sends to Prometheus for ``expr``: ``$var``/``${var}`` replaced."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def dashboard_queries() -> list[Query]:
    out: list[Query] = []
    for path in DASHBOARDS:
        dash = dashboard(path)
        values = variable_values(dash)
        for p in panels(dash):
            for t in p.get("targets", []):
                out.append(
                    Query(
                        f"{dash['title']} / {p['title']} / {t['refId']}",
                        substitute(t["expr"], values),
                    )
                )
    return out


def variable_queries() -> list[Query]:
    """The series selectors inside the dashboards' ``label_values(...)`` variables."""
    out: list[Query] = []
    for path in DASHBOARDS:
        dash = dashboard(path)
        values = variable_values(dash)
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, f"{dash['title']} ${var['name']}: not a label_values() query: {q}"
            out.append(Query(f"{dash['title']} ${var['name']}", substitute(m.group(1), values)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERT_RULES)["groups"] for r in g["rules"] if "alert" in r]


_COMPARISON = re.compile(r"^(?P<signal>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>[0-9.e+-]+)$")


def alert_signal(expr: str) -> str:
    """``<signal> <op> <threshold>`` as ``<signal> <op> bool <threshold>``: the same series,
    each 0 or 1, whether or not the alert fires now."""
    m = _COMPARISON.match(" ".join(expr.split()))
    if m is None:
        raise ValueError(f"alert expression is not '<signal> <op> <threshold>': {expr!r}")
    return f"{m['signal']} {m['op']} bool {m['threshold']}"


def alert_queries() -> list[Query]:
    return [Query(f"alert {r['alert']}", alert_signal(r["expr"])) for r in alert_rules()]


METRIC_NAME = re.compile(r"\b((?:exchange|kafka)_[a-z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))
