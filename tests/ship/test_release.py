"""The version lives in one place, the changelog names it, and nothing tells users to install
llamasup from a package index it has not been published to."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from llamasup._version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_version_is_read_from_version_py() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "llamasup._version.__version__"}


def test_the_newest_changelog_entry_is_this_version() -> None:
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == __version__


def test_no_document_installs_llamasup_from_an_index() -> None:
    documents = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.y*ml")]
    # `pip install llamasup` or `pipx install llamasup` (a name, not a path or a wheel)
    index_install = re.compile(r"\b(?:pip|pipx|uv tool) install (?:-\S+ )*['\"]?llamasup\b(?!-)")
    offenders = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in documents
        for line in path.read_text().splitlines()
        if index_install.search(line)
    ]
    assert offenders == []
