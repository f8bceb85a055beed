"""A planned restart with real llama-servers: two pinned models loaded, ``llamasup restart``
while clients send requests the whole time. The same processes keep serving (no model is
loaded again) and no request fails.

Run on the generated tiny model and on Gemma 3 270M (the quickstart model: from the cache,
else written from its PyPI package, which the quickstart extra installs).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from restart_helpers import ClientLoop, outcomes, restart
from service_helpers import port_range

from e2e.serve_process import Served, serving
from llamasup.cli.quickstart import ensure_quickstart_model, models_dir

pytestmark = pytest.mark.e2e

MODELS = ("first", "second")


@pytest.fixture(scope="session")
def gemma_model() -> Path:
    return ensure_quickstart_model(models_dir())


def write_profile(path: Path, binary: Path, model: Path, state_dir: Path) -> None:
    models = "".join(f"  {name}:\n    path: {model}\n    pinned: true\n" for name in MODELS)
    path.write_text(
        f"""\
version: 1
server:
  binary: {binary}
  ports: {port_range()}
  state_dir: {state_dir}
  start_timeout: 60s
  base_args: [--ctx-size, 512, --parallel, 1]
models:
{models}"""
    )


def ready(served: Served) -> dict[str, int] | None:
    rows = served.status()["sidecars"]
    pids = {row["model"]: row["pid"] for row in rows if row["state"] == "ready"}
    return pids if set(pids) == set(MODELS) and len(rows) == len(MODELS) else None


@pytest.mark.parametrize("model", ["tiny", "gemma3-270m"])
def test_restart_keeps_the_loaded_models_serving_with_no_failed_request(
    model: str, request: pytest.FixtureRequest, tmp_path: Path, llama_server_bin: Path
) -> None:
    path: Path = request.getfixturevalue("tiny_model" if model == "tiny" else "gemma_model")
    profile = tmp_path / "llamasup.yaml"
    state = tmp_path / "state"
    write_profile(profile, llama_server_bin, path, state)
    with serving(profile) as served:
        before = served.wait_for("both models loaded", lambda: ready(served))
        keys = {row["model"]: row["key"] for row in served.status()["sidecars"]}
        with ClientLoop(served.url, MODELS) as loop:
            served.wait_for("requests answered", lambda: loop.served_after(0) >= 4)
            done = restart(served)
            served.wait_for("answers after it", lambda: loop.served_after(done.asked) >= 4)
        assert loop.errors == []
        assert outcomes(done.process) == dict.fromkeys(MODELS, "adopted")
        assert ready(served) == before  # the same llama-server processes
        for name in MODELS:
            log = (state / "logs" / f"{keys[name]}.log").read_text()
            # loaded once, before the restart; its output goes on in the same log after it
            assert log.count("[llamasup] started pid") == 1
            assert log.count("model loaded") == 1
            assert log.index("[llamasup] adopted pid") < log.rindex("slot")
        report = done.process["last_restart"]
        print(
            f"{model}: restart to serving {report['exec_seconds'] * 1000:.0f} ms "
            f"(adoption {report['adopt_seconds'] * 1000:.1f} ms); longest request across it "
            f"{loop.longest_wait_around(done.asked) * 1000:.0f} ms; the command took "
            f"{done.seconds:.2f} s with its preflight"
        )
