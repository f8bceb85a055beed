"""llamasup's flag table against the ``--help`` of the real llama-server it was curated from.

A llama.cpp upgrade that adds, renames or removes a flag, or turns a switch into a flag with a
value, fails here. The comparison is spelled out with plain sets on purpose, independent of
``helptext.table_drift`` (which ``doctor`` uses and which forgives REMOVED flags).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llamasup.flags.helptext import HelpEntry, parse_help
from llamasup.flags.table import TABLE
from llamasup.runtime.locate import LLAMA_CPP_BUILD, binary_version
from llamasup.spec.childenv import is_scrubbed

pytestmark = pytest.mark.e2e

#: spellings the binary lists that the table deliberately does not model; a profile cannot use
#: them. Empty: every flag of b11434 is modelled. Add one only with the reason beside it.
DELIBERATELY_UNMODELLED: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def help_entries(llama_server_bin: Path) -> list[HelpEntry]:
    version = binary_version(llama_server_bin)
    assert version is not None and version.startswith(f"b{LLAMA_CPP_BUILD}-"), (
        f"the table describes llama.cpp b{LLAMA_CPP_BUILD}; {llama_server_bin} is {version}"
    )
    answer = subprocess.run(
        [str(llama_server_bin), "--help"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    entries = parse_help(answer.stdout)
    # a parser that silently found nothing would make every comparison below pass
    assert len(entries) > 200, answer.stdout[:500]
    return entries


def _table_spellings() -> set[str]:
    return {spelling for flag in TABLE for spelling in flag.spellings}


def _help_spellings(entries: list[HelpEntry]) -> set[str]:
    return {name for entry in entries for name in entry.names}


def test_every_flag_of_the_binary_is_modelled(help_entries: list[HelpEntry]) -> None:
    unmodelled = _help_spellings(help_entries) - _table_spellings() - DELIBERATELY_UNMODELLED
    assert unmodelled == set()


def test_every_flag_of_the_table_is_in_the_binary(help_entries: list[HelpEntry]) -> None:
    # REMOVED flags included: b11434 still lists them, with their replacement
    assert _table_spellings() - _help_spellings(help_entries) == set()


def test_the_deliberate_exclusions_are_current(help_entries: list[HelpEntry]) -> None:
    assert DELIBERATELY_UNMODELLED.issubset(_help_spellings(help_entries))
    assert not DELIBERATELY_UNMODELLED & _table_spellings()


def test_value_taking_and_switch_flags_agree(help_entries: list[HelpEntry]) -> None:
    by_spelling = {spelling: flag for flag in TABLE for spelling in flag.spellings}
    disagreeing = []
    for entry in help_entries:
        help_takes_value = bool(entry.placeholder)
        for name in entry.names:
            flag = by_spelling.get(name)
            if flag is None:
                continue
            table_takes_value = flag.value.arity > 0 and name not in flag.negations
            if table_takes_value != help_takes_value:
                disagreeing.append(f"{name}: help {entry.placeholder!r}, table {flag.value.value}")
    assert disagreeing == []


def test_every_environment_variable_of_the_binary_is_kept_from_sidecars(
    help_entries: list[HelpEntry],
) -> None:
    # an inherited one would silently change a sidecar (LLAMA_ARG_PORT, LLAMA_ARG_MODEL, ...)
    names = {entry.env for entry in help_entries if entry.env}
    assert len(names) > 100
    assert {name for name in names if not is_scrubbed(name)} == set()
