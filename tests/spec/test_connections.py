"""The proxy's connection cap per sidecar follows llama-server's fixed HTTP thread pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamasup.profiles.load import load_profiles
from llamasup.spec.connections import http_threads, max_connections
from llamasup.spec.resolve import SidecarSpec, resolve


def _spec(tmp_path: Path, model: str) -> SidecarSpec:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    path = tmp_path / "p.yaml"
    path.write_text(
        "models:\n"
        f"  auto: {{path: {gguf}}}\n"
        f"  one: {{path: {gguf}, args: [-np, 1]}}\n"
        f"  eight: {{path: {gguf}, args: [--parallel, 8]}}\n"
        f"  pool: {{path: {gguf}, args: [-np, 1, --threads-http, 3]}}\n"
        f"  env: {{path: {gguf}, env: {{LLAMA_ARG_THREADS_HTTP: '7'}}}}\n"
        "  other: {command: [my-server, --port, '${PORT}']}\n"
    )
    return resolve(load_profiles(path), model).spec


# as b11434 printed them ("using N threads for HTTP server", -lv 4) on a 2-CPU host, and as
# other hosts' logs show them (8 CPUs: 8, 24: 23, 32: 31)
@pytest.mark.parametrize(
    ("model", "cpus", "threads"),
    [("auto", 2, 8), ("one", 2, 5), ("eight", 2, 12), ("pool", 2, 3), ("env", 2, 7),
     ("auto", 8, 8), ("auto", 32, 31), ("one", 24, 23)],
)  # fmt: skip
def test_the_pool_size_is_llama_servers(
    tmp_path: Path, model: str, cpus: int, threads: int
) -> None:
    assert http_threads(_spec(tmp_path, model), cpus=cpus) == threads


def test_the_cap_leaves_llamasup_its_own_connections_and_never_reaches_zero(
    tmp_path: Path,
) -> None:
    assert max_connections(_spec(tmp_path, "one"), cpus=2) == 3
    assert max_connections(_spec(tmp_path, "pool"), cpus=2) == 1
    assert max_connections(_spec(tmp_path, "other"), cpus=2) is None  # not llama-server
