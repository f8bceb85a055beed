"""The shipped systemd units: ``systemd-analyze verify`` finds nothing, and the service's
``systemd-analyze security`` exposure is at most 2.5 (and what the unit's comment says).

Both run offline on the unit files: ``verify`` in a throwaway root holding the host's system
units and stand-ins for the programs the units run; ``security --offline=true`` reads the
file alone. Neither needs a running systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "examples" / "systemd"
SERVICE = UNITS / "llamasup.service"
HOST_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.5


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: scripts/install-tools.sh installs systemd"
    return found


def _programs(unit: Path) -> set[str]:
    lines = unit.read_text().splitlines()
    commands = (line.split("=", 1)[1] for line in lines if line.startswith("Exec"))
    return {command.lstrip("-@:+!").split()[0] for command in commands}


@pytest.fixture
def system_root(tmp_path: Path) -> Path:
    """A root with the host's system units, the shipped units and their programs (stubs)."""
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for unit in UNITS.iterdir():
        shutil.copy(unit, root / "etc" / "systemd" / "system" / unit.name)
        for program in _programs(unit):
            stub = root / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    return root


@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.iterdir()))
def test_unit_verifies_clean(unit: str, system_root: Path) -> None:
    done = subprocess.run(
        [_systemd_analyze(), "verify", f"--root={system_root}", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on a setting it ignores as unparsable: every line it prints is a finding
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_a_broken_setting_is_caught(system_root: Path) -> None:
    unit = system_root / "etc" / "systemd" / "system" / "llamasup.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=yess"))
    done = subprocess.run(
        [_systemd_analyze(), "verify", f"--root={system_root}", "llamasup.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Failed to parse protect home value, ignoring: yess" in done.stderr


def exposure(unit: Path) -> float:
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found, done.stdout
    return float(found.group(1))


def test_the_service_is_sandboxed() -> None:
    score = exposure(SERVICE)
    assert score <= MAX_EXPOSURE
    claimed = re.search(r"rates it (\d+\.\d) OK", SERVICE.read_text())
    assert claimed and float(claimed.group(1)) == score  # the comment tells the truth


def test_gpus_stay_reachable() -> None:
    """The sandbox must not hide the GPUs: no private /dev, and their device groups allowed."""
    settings = [line.strip() for line in SERVICE.read_text().splitlines()]
    assert "PrivateDevices=yes" not in settings
    assert "PrivateUsers=yes" not in settings  # it would unmap the video and render groups
    allowed = {line.split("=", 1)[1] for line in settings if line.startswith("DeviceAllow=")}
    assert allowed == {"char-nvidia* rw", "char-drm rw", "char-kfd rw"}
    assert "SupplementaryGroups=video render" in settings
    assert any(re.fullmatch(r"LimitNOFILE=\d+", line) for line in settings)
    limit = next(int(line.split("=")[1]) for line in settings if line.startswith("LimitNOFILE="))
    assert limit >= 65536
