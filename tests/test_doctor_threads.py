"""doctor's threads check: CPU-only sidecars leaving --threads to llama.cpp on a small host."""

from __future__ import annotations

from pathlib import Path

from llamasup.doctor.threads import check_threads, unset_threads
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles


def _profiles(tmp_path: Path, base_args: str, models: str) -> Profiles:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nserver:\n"
        f"  state_dir: {tmp_path / 'state'}\n"
        f"  base_args: [{base_args}]\n"
        f"models:\n{models}"
    )
    return load_profiles(path, {})


MODELS = (
    "  cpu:\n    path: /m/a.gguf\n"
    "  pinned-threads:\n    path: /m/b.gguf\n    args: [-t, 1]\n"
    "  env-threads:\n    path: /m/c.gguf\n    env: {LLAMA_ARG_THREADS: '1'}\n"
    "  offloaded:\n    path: /m/d.gguf\n    args: [-ngl, '99']\n"
)


def test_lists_only_cpu_models_without_threads(tmp_path: Path) -> None:
    profiles = _profiles(tmp_path, "-c, 1024", MODELS)
    assert unset_threads(profiles, list(profiles.models)) == ["cpu"]


def test_warns_on_a_small_cpu_only_host_with_the_fix(tmp_path: Path) -> None:
    profiles = _profiles(tmp_path, "-c, 1024", MODELS)
    result = check_threads(profiles, list(profiles.models), gpu=False, cpus=2)
    assert result.status == "warn"
    assert result.detail.startswith("cpu run on the CPU")
    assert "--threads 1" in result.fix


def test_quiet_when_set_on_big_hosts_or_with_a_gpu(tmp_path: Path) -> None:
    profiles = _profiles(tmp_path, "-c, 1024, -t, 1", MODELS)
    assert check_threads(profiles, list(profiles.models), gpu=False, cpus=2).status == "ok"
    profiles = _profiles(tmp_path, "-c, 1024", MODELS)
    assert check_threads(profiles, list(profiles.models), gpu=False, cpus=16).status == "ok"
    assert check_threads(profiles, list(profiles.models), gpu=True, cpus=2).status == "ok"
