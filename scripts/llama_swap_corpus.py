"""Build the llama-swap import corpus: real configs from llama-swap's history, and what
llama-swap's own loader makes of each (the expectations ``tests/migrate/test_corpus.py``
checks the importer against).

    python scripts/llama_swap_corpus.py collect MIRROR    # configs + PROVENANCE.md
    python scripts/llama_swap_corpus.py expect ORACLE     # expected.json from the oracle

MIRROR is a git directory of llama-swap (every ref is read). ``collect`` takes every version
of its Go tests of the config loader and proxy (YAML in raw strings), its README and docs
(```yaml blocks) and its example configs, drops exact duplicates, keeps one config per
(source file, shape, oracle verdict) and at most ``PER_SOURCE`` per source file.

ORACLE is ``scripts/llama_swap_oracle/main.go`` built inside a checkout of llama-swap
(``go build -o oracle ./cmd/oracle`` after copying it to cmd/oracle/): it runs
``config.LoadConfig`` and prints the result as JSON. Each config is loaded with the
environment in ``environ.json`` (variables named UNSET/UNDEFINED/... stay unset on purpose).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).parents[1] / "tests" / "fixtures" / "llama-swap" / "corpus"
PER_SOURCE = 30
_MODELS = re.compile(r"^\s*models:\s*(#.*)?$", re.MULTILINE)


def _git(mirror: str, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", mirror, *args], capture_output=True, text=True, errors="replace", check=False
    )
    return done.stdout


def _from_go(text: str) -> Iterator[tuple[str, str]]:
    for match in re.finditer(r"`([^`]*)`", text, re.DOTALL):
        body = match.group(1)
        if _MODELS.search(body) and "%" not in body and "\n" in body:
            funcs = re.findall(r"^func (\w+)", text[: match.start()], re.MULTILINE)
            yield body, funcs[-1] if funcs else ""


def _from_markdown(text: str) -> Iterator[tuple[str, str]]:
    for match in re.finditer(r"^```ya?ml[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        if re.search(r"^models:", match.group(1), re.MULTILINE):
            yield match.group(1), ""


def _from_yaml(text: str) -> Iterator[tuple[str, str]]:
    if re.search(r"^models:", text, re.MULTILINE):
        yield text, ""


def _extractor(path: str) -> Callable[[str], Iterator[tuple[str, str]]] | None:
    if path.endswith("_test.go") and "windows" not in path:
        return _from_go if re.search(r"config|proxymanager|server/", path) else None
    if path.endswith(".md") and (path == "README.md" or path.startswith("docs/")):
        return _from_markdown
    name = r"(config[^/]*|llama-swap|lazy-config[^/]*|generated-config)\.ya?ml"
    if re.search(rf"(^|/){name}$", path) and not path.startswith(".github"):
        return _from_yaml
    return None


def _clean(body: str) -> str:
    lines = [line.rstrip() for line in body.split("\n")]
    return textwrap.dedent("\n".join(lines)).strip("\n") + "\n"


def _shape(text: str) -> frozenset[str]:
    """Key paths (ids abstracted) and macro kinds: configs of one shape test the same things."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return frozenset({"yaml-error"})
    found: set[str] = set()
    named = ("models", "groups", "macros", "peers", "setParams", "setParamsByID", "metadata")

    def walk(node: Any, prefix: str, depth: int) -> None:
        if depth > 4:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                part = "*" if prefix.rsplit(".", 1)[-1] in named else str(key)
                path = f"{prefix}.{part}" if prefix else part
                found.add(path)
                walk(value, path, depth + 1)
        elif isinstance(node, str):
            for name in re.findall(r"\$\{([A-Za-z0-9_.-]+)\}", node):
                kind = "env" if name.startswith("env.") else name
                found.add(f"{prefix}:{kind if kind in ('env', 'PORT', 'MODEL_ID') else 'macro'}")

    walk(data, "", 0)
    return frozenset(found)


def _oracle(oracle: str, config: Path, environ: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [oracle, str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **environ},
        cwd="/",
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def collect(mirror: str, oracle: str) -> None:
    environ = json.loads((CORPUS / "environ.json").read_text("utf-8"))
    paths = sorted(set(_git(mirror, "log", "--all", "--format=", "--name-only").split()))
    found: dict[str, tuple[str, str, str, str]] = {}  # digest → text, path, commit, function
    for path in paths:
        extract = _extractor(path)
        if extract is None:
            continue
        blobs: set[str] = set()
        for commit in _git(mirror, "log", "--all", "--reverse", "--format=%H", "--", path).split():
            blob = _git(mirror, "rev-parse", f"{commit}:{path}").strip()
            if len(blob) != 40 or blob in blobs:
                continue
            blobs.add(blob)
            for body, function in extract(_git(mirror, "cat-file", "-p", blob)):
                text = _clean(body)
                digest = hashlib.sha1(text.encode()).hexdigest()[:10]  # noqa: S324 (a name)
                found.setdefault(digest, (text, path, commit, function))
    scratch = CORPUS / ".scratch.yaml"
    by_kind: dict[tuple[str, Any], list[str]] = defaultdict(list)
    for digest, (text, path, _, _) in found.items():
        scratch.write_text(text, "utf-8")
        error = _oracle(oracle, scratch, environ).get("error")
        verdict = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "X", error)[:60] if error else "ok"
        by_kind[(path, (verdict, _shape(text)))].append(digest)
    scratch.unlink()
    per_source: dict[str, list[str]] = defaultdict(list)
    for (path, _), digests in by_kind.items():
        per_source[path].append(digests[0])
    entries = []
    for path, digests in sorted(per_source.items()):
        step = max(1, len(digests) / PER_SOURCE)
        for i in range(min(len(digests), PER_SOURCE)):
            digest = digests[int(i * step)]
            text, _, commit, function = found[digest]
            stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(path).stem).strip("-")
            name = f"{stem}-{function}-{digest}" if function else f"{stem}-{digest}"
            (CORPUS / f"{name}.yaml").write_text(text, "utf-8")
            entries.append((name, path, commit, function))
    _provenance(entries)


def _provenance(entries: list[tuple[str, str, str, str]]) -> None:
    path = CORPUS / "PROVENANCE.md"
    head = path.read_text("utf-8").split("\n## Files\n")[0] if path.exists() else "# Provenance\n"
    lines = [head.rstrip("\n"), "", "## Files", "", "| file | from llama-swap | commit |"]
    lines.append("|---|---|---|")
    for name, source, commit, function in sorted(entries):
        where = f"`{source}` {function}".strip()
        lines.append(f"| `{name}.yaml` | {where} | `{commit[:12]}` |")
    path.write_text("\n".join(lines) + "\n", "utf-8")


def expect(oracle: str) -> None:
    environ = json.loads((CORPUS / "environ.json").read_text("utf-8"))
    expected_path = CORPUS / "expected.json"
    expected = {}
    for config in sorted(CORPUS.glob("*.yaml")):
        result = _oracle(oracle, config, environ)
        if "error" in result:
            error = result["error"]
            # the names it quotes (YAML line numbers differ between parsers: not kept)
            mentions = re.findall(r"'([^']+)'|\"([^\"]+)\"", error)
            terms = [a or b for a, b in mentions]
            result = {"error": error, "refusal_mentions": terms}
        expected[config.stem] = result
    expected_path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n", "utf-8")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "collect":
        collect(rest[0], rest[1])
    elif command == "expect":
        expect(rest[0])
    else:
        raise SystemExit(__doc__)
