"""Every config of the llama-swap corpus imports with the meaning llama-swap's own loader
gives it, or with a warning naming what is lost; every config it refuses is refused, naming
what it names.

The corpus (``tests/fixtures/llama-swap/corpus``, see its PROVENANCE.md) holds real configs
from llama-swap's tests, docs and example configs across its history, and reproductions of
reported import bugs; ``expected.json`` is what llama-swap's loader made of each
(``scripts/llama_swap_corpus.py`` regenerates it with the Go oracle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamasup.errors import ProfileError
from llamasup.migrate.draft import InputError
from llamasup.migrate.emit import render_single, validate
from llamasup.migrate.llama_swap.convert import import_swap

from .corpus_meaning import Outcome, disagreements
from .import_helpers import SWAP_FIXTURES

CORPUS = SWAP_FIXTURES / "corpus"
EXPECTED: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text("utf-8"))
ENVIRON: dict[str, str] = json.loads((CORPUS / "environ.json").read_text("utf-8"))
#: where llama-swap ran (its relative paths resolve there) and where the profile is written
WORKDIR, ANCHOR = "/srv/llama-swap", Path("/srv/profiles")


def imported(text: str) -> Outcome:
    try:
        draft = import_swap(
            text, source="config.yaml", environ=ENVIRON, anchor=ANCHOR, workdir=Path(WORKDIR)
        )
    except InputError as exc:
        return Outcome(None, None, exc.problems)
    try:
        return Outcome(draft, validate(render_single(draft), ANCHOR, ENVIRON), [])
    except ProfileError as exc:
        return Outcome(draft, None, [f"the import wrote an invalid profile: {exc}"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_means_what_it_means_to_llama_swap(name: str) -> None:
    outcome = imported((CORPUS / f"{name}.yaml").read_text("utf-8"))
    findings = disagreements(EXPECTED[name], outcome, WORKDIR)
    assert not findings, "\n".join(map(str, findings))


def test_every_config_has_an_expectation_and_a_source() -> None:
    configs = sorted(p.stem for p in CORPUS.glob("*.yaml"))
    assert configs == sorted(EXPECTED)
    provenance = (CORPUS / "PROVENANCE.md").read_text("utf-8")
    assert [c for c in configs if f"`{c}.yaml`" not in provenance] == []


def test_the_corpus_covers_both_verdicts() -> None:
    refused = sum("error" in e for e in EXPECTED.values())
    assert refused >= 50 and len(EXPECTED) - refused >= 150
