"""Finding llama-server, reading its version, and the cheap paths of install()."""

from __future__ import annotations

import fcntl
import shutil
import sys
import threading
from pathlib import Path

import pytest

from llamasup.core.paths import cache_root
from llamasup.errors import RuntimeInstallError, RuntimeNotFoundError
from llamasup.runtime import sdist_build as runtime_build
from llamasup.runtime.install import install, install_lock_path
from llamasup.runtime.locate import (
    LLAMA_CPP_BUILD,
    binary_version,
    cached_binary_path,
    parse_version_output,
    platform_tag,
    resolve_binary,
)
from llamasup.testing import write_fake_binary


def _script(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(root))
    return root


# --- cache location ---------------------------------------------------------------------------


def test_cache_root_prefers_llamasup_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("LLAMASUP_CACHE_DIR")
    assert cache_root() == tmp_path / "x" / "llamasup"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "llamasup"


def test_cached_binary_is_keyed_on_build_os_and_arch(cache: Path) -> None:
    path = cached_binary_path("123")
    assert path.name == "llama-server"
    assert path.parent.name == f"b123-{platform_tag()}"
    assert path.is_relative_to(cache)
    assert cached_binary_path() != path


# --- resolution order -------------------------------------------------------------------------


def test_profile_binary_wins(tmp_path: Path, cache: Path) -> None:
    configured = _script(tmp_path / "custom" / "my-server")
    env_bin = _script(tmp_path / "env" / "llama-server")
    _script(tmp_path / "path" / "llama-server")
    environ = {"PATH": str(tmp_path / "path"), "LLAMA_SERVER_BIN": str(env_bin)}
    resolved = resolve_binary(str(configured), environ)
    assert (resolved.path, resolved.source) == (configured, "profile")


def test_profile_bare_name_is_looked_up_on_path(tmp_path: Path, cache: Path) -> None:
    found = _script(tmp_path / "path" / "llama-server-cuda")
    resolved = resolve_binary("llama-server-cuda", {"PATH": str(tmp_path / "path")})
    assert (resolved.path, resolved.source) == (found, "profile")


def test_env_var_beats_path(tmp_path: Path, cache: Path) -> None:
    env_bin = _script(tmp_path / "env" / "server")
    _script(tmp_path / "path" / "llama-server")
    environ = {"PATH": str(tmp_path / "path"), "LLAMA_SERVER_BIN": str(env_bin)}
    assert resolve_binary(None, environ).source == "LLAMA_SERVER_BIN"


def test_path_beats_cache(tmp_path: Path, cache: Path) -> None:
    on_path = _script(tmp_path / "path" / "llama-server")
    _script(cached_binary_path())
    resolved = resolve_binary(None, {"PATH": str(tmp_path / "path")})
    assert (resolved.path, resolved.source) == (on_path, "PATH")


def test_cache_is_the_last_resort(tmp_path: Path, cache: Path) -> None:
    cached = _script(cached_binary_path())
    resolved = resolve_binary(None, {"PATH": str(tmp_path / "empty")})
    assert (resolved.path, resolved.source) == (cached, "cache")


def test_nothing_found_says_what_was_tried(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(RuntimeNotFoundError) as caught:
        resolve_binary(None, {"PATH": str(tmp_path / "empty")})
    message = str(caught.value)
    assert "LLAMA_SERVER_BIN" in message
    assert "on PATH" in message
    assert str(cached_binary_path()) in message
    assert "llamasup runtime install" in message


@pytest.mark.parametrize("source", ["profile", "LLAMA_SERVER_BIN"])
def test_unusable_named_binary_is_an_error_not_a_fallthrough(
    tmp_path: Path, cache: Path, source: str
) -> None:
    _script(tmp_path / "path" / "llama-server")  # would be found if we fell through
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("")
    for bad, problem in [
        (str(tmp_path / "missing"), "does not exist"),
        (str(not_executable), "not an executable file"),
        ("no-such-name", "not on PATH"),
    ]:
        environ = {"PATH": str(tmp_path / "path")}
        configured = None
        if source == "profile":
            configured = bad
        else:
            environ["LLAMA_SERVER_BIN"] = bad
        with pytest.raises(RuntimeNotFoundError, match=problem):
            resolve_binary(configured, environ)


# --- version ----------------------------------------------------------------------------------


def test_parse_version_output_reads_the_real_format() -> None:
    text = "version: 0.6.0-dev (build 11434, commit pypi-sdist)\nbuilt with GNU 12.2.0 for Linux"
    assert parse_version_output(text) == "b11434-pypi-sdist"
    assert parse_version_output("something else") is None


def test_binary_version(tmp_path: Path) -> None:
    assert binary_version(write_fake_binary(tmp_path / "fake")) == "b11434-fake"
    assert binary_version(_script(tmp_path / "odd", "echo 'custom 1.2'")) == "custom 1.2"
    assert binary_version(_script(tmp_path / "broken", "exit 3")) is None
    assert binary_version(tmp_path / "missing") is None
    hanging = _script(tmp_path / "hangs", "exec sleep 30")
    assert binary_version(hanging, timeout=0.3) is None


@pytest.mark.e2e
def test_real_binary_version(llama_server_bin: Path) -> None:
    version = binary_version(llama_server_bin)
    assert version is not None and version.startswith("b")


# --- install: the paths that do not compile -----------------------------------------------


def test_missing_build_tools_are_named_with_a_remedy(tmp_path: Path) -> None:
    with pytest.raises(RuntimeInstallError) as caught:
        runtime_build.find_build_tools({"PATH": str(tmp_path)}, extra_dirs=())
    message = str(caught.value)
    for needed in (
        "cmake",
        "ninja (or make)",
        "a C compiler",
        "a C++ compiler",
        "apt-get install -y cmake ninja-build g++",
        "pip install cmake ninja",
    ):
        assert needed in message


def test_build_tools_prefer_ninja_and_fall_back_to_make(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    for name in ("cmake", "make", "cc", "c++"):
        _script(bin_dir / name)
    tools = runtime_build.find_build_tools({"PATH": str(bin_dir)}, extra_dirs=())
    assert (tools.generator, Path(tools.make_program).name) == ("Unix Makefiles", "make")
    _script(bin_dir / "ninja")
    tools = runtime_build.find_build_tools({"PATH": str(bin_dir)}, extra_dirs=())
    assert (tools.generator, Path(tools.make_program).name) == ("Ninja", "ninja")
    assert Path(tools.cxx_compiler).name == "c++"


def test_install_checks_prerequisites_before_downloading(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    messages: list[str] = []
    with pytest.raises(RuntimeInstallError, match="missing cmake"):
        install(progress=messages.append)
    assert not any("downloading" in m for m in messages)


@pytest.mark.e2e
def test_install_reuses_a_working_cached_binary(
    llama_server_bin: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = cached_binary_path()
    target.parent.mkdir(parents=True)
    shutil.copy2(llama_server_bin, target)
    # no build tools at all: a cache hit must not even look for them
    monkeypatch.setenv("PATH", "")
    messages: list[str] = []
    assert install(progress=messages.append) == target
    assert messages == [f"llama-server b{LLAMA_CPP_BUILD} is already installed: {target}"]


def test_a_cached_binary_that_does_not_run_is_rebuilt(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _script(cached_binary_path(), "exit 1")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    with pytest.raises(RuntimeInstallError, match="missing"):
        install()


def test_concurrent_install_waits_and_uses_the_other_result(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = runtime_build.BuildTools("cmake", "Ninja", "ninja", "cc", "c++")
    monkeypatch.setattr(runtime_build, "find_build_tools", lambda environ: tools)
    not_a_tarball = tmp_path / "sdist.tar.gz"
    not_a_tarball.write_text("building from this would fail")
    lock_path = install_lock_path()
    lock_path.parent.mkdir(parents=True)
    waiting = threading.Event()
    messages: list[str] = []
    results: list[Path | BaseException] = []

    def progress(message: str) -> None:
        messages.append(message)
        if message.startswith("waiting for another"):
            waiting.set()

    def run() -> None:
        try:
            results.append(install(sdist=not_a_tarball, progress=progress))
        except BaseException as exc:
            results.append(exc)

    with lock_path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # "another install" is building
        worker = threading.Thread(target=run)
        worker.start()
        assert waiting.wait(10), messages
        write_fake_binary(cached_binary_path().parent)  # its result lands, then it unlocks
        fcntl.flock(held, fcntl.LOCK_UN)
        worker.join(20)
    assert results == [cached_binary_path()]
    assert "installed meanwhile" in messages[-1]
