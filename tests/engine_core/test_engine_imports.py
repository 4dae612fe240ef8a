"""Dependencies point inward, and nothing in engine/ can make a replay diverge.

An AST scan of every module under ``engine/`` (except ``engine/service/``, the Kafka adapter,
which is allowed I/O) checks:

* imports: only the standard library, ``sortedcontainers`` and ``engine.*``;
* no clock, randomness, uuid, threads or environment: the modules ``time``, ``random``,
  ``uuid``, ``secrets``, ``threading`` & co. are banned, and so are ``os.environ``,
  ``os.getenv``, ``datetime.now``/``utcnow``/``today``;
* no floats: no float literal and no call to ``float``;
* ``decimal`` only in ``engine/markets.py``, where the config is scaled to integers once.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"
EXCLUDED = ENGINE / "service"
ALLOWED_THIRD_PARTY = {"sortedcontainers"}
BANNED_MODULES = {
    "time",
    "random",
    "uuid",
    "secrets",
    "threading",
    "multiprocessing",
    "concurrent",
    "asyncio",
    "socket",
    "subprocess",
}
BANNED_ATTRIBUTES = {
    ("os", "environ"),
    ("os", "getenv"),
    ("os", "putenv"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
DECIMAL_ALLOWED_IN = {"markets.py"}


def engine_modules() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if EXCLUDED not in p.parents and p != EXCLUDED)


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: inside engine by construction
                found.append(("engine", node.lineno))
            else:
                assert node.module is not None
                found.append((node.module, node.lineno))
                # "from os import environ" is as bad as "os.environ"
                for alias in node.names:
                    if (node.module.split(".")[-1], alias.name) in BANNED_ATTRIBUTES:
                        found.append((f"{node.module}.{alias.name}", node.lineno))
    return found


def test_scan_when_run_covers_the_engine_core_modules() -> None:
    names = {p.name for p in engine_modules()}
    assert {"engine.py", "book.py", "balances.py", "markets.py", "orders.py"} <= names
    assert not any("service" in p.parts for p in engine_modules())


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_module_when_scanned_imports_only_stdlib_sortedcontainers_and_engine(
    path: Path,
) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = []
    for module, line in imported_modules(tree):
        top = module.split(".")[0]
        if top == "engine":
            if module.startswith("engine.service"):
                problems.append(f"{line}: the core must not import the adapter {module}")
            continue
        if module in {f"{a}.{b}" for a, b in BANNED_ATTRIBUTES}:
            problems.append(f"{line}: banned import {module}")
        elif top in BANNED_MODULES:
            problems.append(f"{line}: banned module {module} (clock, randomness, I/O or threads)")
        elif top == "decimal" and path.name not in DECIMAL_ALLOWED_IN:
            problems.append(f"{line}: decimal is only allowed in markets.py")
        elif top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
            problems.append(f"{line}: third-party import {module}")
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_module_when_scanned_reads_no_clock_environment_or_float(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in BANNED_ATTRIBUTES
        ):
            problems.append(f"{node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr in {"now", "utcnow"}:
            problems.append(f"{node.lineno}: .{node.attr} reads a clock")
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            problems.append(f"{node.lineno}: float literal {node.value!r}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "float"
        ):
            problems.append(f"{node.lineno}: float() call")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_scan_when_given_a_bad_module_finds_every_problem() -> None:
    """The scanner itself works: a module doing everything forbidden is caught."""
    bad = (
        "import time\nimport requests\nfrom os import environ\nimport os\n"
        "x = os.environ\ny = 1.5\nfrom datetime import datetime\nz = datetime.now()\n"
    )
    tree = ast.parse(bad)
    modules = [m for m, _ in imported_modules(tree)]
    assert "time" in modules and "requests" in modules and "os.environ" in modules
    attributes = [
        (n.value.id, n.attr)
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    ]
    assert ("os", "environ") in attributes and ("datetime", "now") in attributes
    assert any(isinstance(n, ast.Constant) and n.value == 1.5 for n in ast.walk(tree))
