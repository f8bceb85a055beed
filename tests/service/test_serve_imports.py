"""A serving llamasup imports what serving needs, not what other commands or rare features
need (issue #20: idle memory). A real ``llamasup serve`` runs under ``-X importtime``, which
prints every module it imports over its life: at start, while a sidecar starts, for a
proxied request and for a reload that is rejected then accepted. None of the modules below
may appear; a change that imports one of them again (at the top of a module on the serve
path, or on a request) fails here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
from e2e.serve_process import Served
from service_helpers import fake_profile, write_model_files

from llamasup.testing.process import ServerProcess, free_port

#: what a serving process must not import, and what each costs it or is for instead
NEVER = (
    # profile validation is llamasup.profiles.schema_validator (~4.7 MB with these)
    "jsonschema",
    "referencing",
    "rpds",
    "attrs",
    # own series are llamasup.service.exposition; the sidecars' series need a scrape
    "prometheus_client",
    "llamasup.service.sidecar_metrics",
    "httpx",  # the /metrics scrape of the sidecars, the CLI's client
    # uvicorn's command line and reload supervisors (llamasup.service.uvicorn_package)
    "uvicorn.main",
    "uvicorn.supervisors",
    "click",
    "multiprocessing",
    # other commands' rooms
    "llamasup.cli.control",
    "llamasup.cli.quickstart",
    "llamasup.migrate",
    "llamasup.evaluate",
    "llamasup.bench",
    "llamasup.harness",
    "llamasup.doctor",
    "llamasup.library",
    "llamasup.runtime.install",
    "llamasup.testing",
    "gguf",
    "numpy",
)
#: on Linux the profile watch is inotify; watchfiles (with anyio) is the fallback elsewhere
NEVER_ON_LINUX = ("watchfiles", "anyio")


def _imports(lines: list[str]) -> set[str]:
    found = (line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:"))
    return set(found) - {"imported package"}


def _forbidden(modules: set[str]) -> list[str]:
    never = NEVER + (NEVER_ON_LINUX if sys.platform == "linux" else ())
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in never))


def test_a_serving_process_imports_none_of_the_lazy_modules(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    write_model_files(tmp_path, ["alpha"])
    root = tmp_path / "profiles"
    root.mkdir()
    profile = root / "p.yaml"
    valid = fake_profile(fake_server_bin, tmp_path / "state", {"alpha": "preload: true"})
    profile.write_text(valid)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-X", "importtime", "-m", "llamasup", "serve", str(root)]
    with ServerProcess([*argv, "--listen", f"127.0.0.1:{port}"]) as process:
        process.wait_for_line(re.compile(rf"llamasup: serving 1 models from .* on {url};"), 60)
        served = Served(process, url)
        served.wait_for(
            "alpha ready",
            lambda: any(row["state"] == "ready" for row in served.status()["sidecars"]),
        )
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
            answer = client.post("/v1/chat/completions", json={**body, "max_tokens": 2})
            assert answer.status_code == 200, answer.text
            # a reload validates the profiles: an invalid one is refused with the schema's words
            profile.write_text(valid.replace("version: 1", "version: 1\nsurplus: 1"))
            refused = client.post("/api/reload")
            assert refused.status_code == 422, refused.text
            assert "unknown key 'surplus'" in refused.text
            profile.write_text(valid)
            assert client.post("/api/reload").status_code == 200
        stopped = served.stop()
        assert stopped.code == 0, served.stderr_tail()
    modules = _imports(process.lines)
    assert "llamasup.service.serve" in modules  # the probe saw the serve path
    assert "llamasup.profiles.schema_validator" in modules
    assert not _forbidden(modules), f"llamasup serve imported {_forbidden(modules)}"
