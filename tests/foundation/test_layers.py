"""The layers of the Code map hold: import-linter's contracts (pyproject.toml) are kept, and a
wrong-way import breaks them (so the check is not vacuous)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "exchange", "settlement", "gateway", "ops", "entrypoints")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120
    )


def copy_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.sql", "static"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_lint_imports_when_run_on_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        ("settlement/store.py", "import ops.lag", "settlement is not allowed to import ops"),
        ("exchange/topics.py", "import settlement.store", "exchange is not allowed to import"),
        ("engine/book.py", "import fastavro", "engine.book is not allowed to import fastavro"),
        (
            "engine/orders.py",
            "import engine.service.output_log",
            "engine.orders is not allowed to import engine.service",
        ),
    ],
)
def test_lint_imports_when_an_import_points_the_wrong_way_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, broken: str
) -> None:
    root = copy_tree(tmp_path)
    with (root / module).open("a") as f:
        f.write(f"\n{bad_import}  # noqa\n")
    done = lint_imports(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert broken in done.stdout
