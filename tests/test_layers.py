"""The layer contracts (import-linter, configured in pyproject.toml) hold, and can fail.

A contract that cannot fail is not a contract: each case copies the package, adds one
wrong-way import, and checks that ``lint-imports`` rejects it naming the broken contract.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=src,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_every_contract() -> None:
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("planner/plan.py", "import asyncio", "The planner is pure"),
        ("core/units.py", "import llamasup.profiles.types", "Layers"),
        ("proxy/app.py", "import llamasup.reconcile.reconciler", "pool contract"),
        ("service/api.py", "import llamasup.testing.process", "Test helpers"),
        ("reconcile/demand.py", "import llamasup.reconcile.leases", "No import cycles"),
        ("flags/flagset.py", "import llamasup.planner.types", "Layers"),
    ],
)
def test_a_wrong_way_import_fails_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "llamasup", src / "llamasup")
    target = src / "llamasup" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint(src)
    assert result.returncode != 0
    # the report lists each broken contract, by name, under this heading
    assert "Broken contracts" in result.stdout, result.stdout + result.stderr
    assert contract in result.stdout.split("Broken contracts", 1)[1], result.stdout
