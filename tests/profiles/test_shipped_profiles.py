"""The default profile set, every example, and the schema file stay valid and in sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llamasup.profiles.load import load_profiles
from llamasup.profiles.schema import schema

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "examples" / "kubernetes"
EXAMPLE_SETS = sorted(
    [
        p
        for p in (ROOT / "examples").rglob("*.yaml")
        if p.parent.name != "profiles" and p.parent != KUBERNETES
    ]
    + [p for p in (ROOT / "examples").rglob("profiles") if p.is_dir()]
)
ENVIRONMENT = {"LLAMASUP_INFERENCE_KEY": "example"}


def test_there_are_examples() -> None:
    assert len(EXAMPLE_SETS) >= 3


@pytest.mark.parametrize("path", [ROOT / "profiles", *EXAMPLE_SETS], ids=lambda p: str(p.name))
def test_profile_set_validates(path: Path) -> None:
    profiles = load_profiles(path, ENVIRONMENT)
    assert profiles.models
    for warning in profiles.warnings:
        assert "does not exist" in warning.message  # model files live on the real hosts


def test_kubernetes_configmap_profiles_validate(tmp_path: Path) -> None:
    """The ConfigMap's data entries, written out as kubelet mounts them, form a valid set."""
    documents = list(yaml.safe_load_all((KUBERNETES / "llamasup-daemonset.yaml").read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    profiles = load_profiles(tmp_path, ENVIRONMENT)
    assert set(profiles.models) == {"qwen3-coder"}
    assert [key.scope for key in profiles.server.api_keys] == ["inference", "admin"]


def test_schema_file_and_packaged_copy_are_identical() -> None:
    top = json.loads((ROOT / "schemas" / "profiles.schema.json").read_text())
    assert top == schema()


def test_schema_is_valid_json_schema() -> None:
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    Draft202012Validator.check_schema(schema())
