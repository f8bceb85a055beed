"""The curated ``llamasup`` namespace: each name resolves, and ``import llamasup`` stays bare."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import llamasup
from llamasup import errors, library


def test_import_llamasup_imports_only_its_version() -> None:
    probe = (
        "import json, sys, llamasup; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('llamasup'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == ["llamasup", "llamasup._version"]


def test_public_names_resolve_to_their_homes() -> None:
    assert llamasup.local_models is library.local_models
    assert llamasup.LocalModels is library.LocalModels
    assert llamasup.LocalSidecar is library.LocalSidecar
    assert llamasup.ProfileError is errors.ProfileError
    assert issubclass(llamasup.UnknownModelError, llamasup.LlamasupError)
    for name in llamasup.__all__:
        assert getattr(llamasup, name) is not None, name
    assert set(llamasup.__all__) <= set(dir(llamasup))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = llamasup.nothing_here
