"""``llamasup --help`` fits one screen and names every command; each command keeps its detail."""

from __future__ import annotations

import argparse

import pytest

from llamasup.cli.main import build_parser, main

SCREEN_LINES, SCREEN_COLUMNS = 24, 100


def test_the_overview_fits_one_screen_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= SCREEN_LINES
    assert max(len(line) for line in lines) <= SCREEN_COLUMNS
    examples = lines.index("examples:")
    assert sum(line.startswith("  llamasup ") for line in lines[examples:]) >= 4


def test_the_overview_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    words = set(capsys.readouterr().out.split())
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    public = {name for name in commands.choices if not name.startswith("__")}
    assert public - words == set()


def test_a_command_help_keeps_its_detail(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--agent AGENT" in out and "MODEL[@AGENT]" in out


def test_no_command_prints_the_overview_and_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert "examples:" in capsys.readouterr().err
