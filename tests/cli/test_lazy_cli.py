"""The parser is light: ``--version``, ``--help`` and usage errors import no service, no
reconciler and no HTTP stack; every subcommand's lazily named handler exists."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from llamasup.cli.commands import LazyHandler
from llamasup.cli.main import build_parser

#: what building the parser may import from llamasup (the help of `runtime install` names the
#: cache path, found by the standard-library-only runtime.locate)
ALLOWED = {
    "llamasup",
    "llamasup._version",
    "llamasup.errors",
    "llamasup.cli",
    "llamasup.cli.main",
    "llamasup.core",
    "llamasup.core.paths",
    "llamasup.runtime",
    "llamasup.runtime.locate",
}
#: what a cheap answer must never pay for
FORBIDDEN = (
    "uvicorn",
    "prometheus_client",
    "httpx",
    "watchfiles",
    "jsonschema",
    "anyio",
    "asyncio",
    "gguf",
    "llamasup.service",
    "llamasup.reconcile",
    "llamasup.proxy",
    "llamasup.sidecars",
    "llamasup.profiles",
    "llamasup.runtime.install",
)


def imported_by(*argv: str) -> set[str]:
    """The modules a fresh ``python -m llamasup ARGV`` imports (from ``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llamasup", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 2), done.stderr
    lines = (line for line in done.stderr.splitlines() if line.startswith("import time:"))
    return {line.rsplit("|", 1)[1].strip() for line in lines} - {"imported package"}


@pytest.mark.parametrize(
    "argv",
    [("--version",), ("--help",), ("serve", "--help"), ("status", "--no-such-flag"), ()],
)
def test_building_the_parser_imports_only_light_modules(argv: tuple[str, ...]) -> None:
    modules = imported_by(*argv)
    assert "llamasup.cli.main" in modules  # the probe saw the command line being built
    heavy = sorted(m for m in modules if any(m == f or m.startswith(f"{f}.") for f in FORBIDDEN))
    assert not heavy, f"llamasup {' '.join(argv)} imported {heavy}"
    ours = {m for m in modules if m == "llamasup" or m.startswith("llamasup.")}
    extra = sorted(m for m in ours - ALLOWED if not m.startswith("llamasup.cli.commands"))
    assert not extra, f"llamasup {' '.join(argv)} imported {extra}"


def _handlers(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, object]]:
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser.get_default("handler")
    for action in subcommands:
        for name, sub in action.choices.items():
            yield from _handlers(sub, f"{path} {name}".strip())


def test_every_subcommand_names_a_handler_that_exists() -> None:
    handlers = dict(_handlers(build_parser()))
    assert {"validate", "serve", "status", "apply", "runtime install", "doctor"} <= set(handlers)
    for command, handler in handlers.items():
        assert isinstance(handler, LazyHandler), command
        assert callable(handler.resolve()), command
