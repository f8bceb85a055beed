"""Shell completion, run in the real shells: bash's ``_llamasup`` with a typed line, fish's
``complete -C``, and zsh's ``_llamasup`` with the completion builtins (which only run inside
the line editor) replaced by stand-ins that print what they are given."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamasup.cli.completion_tree import AGENT, FILE, MODEL, TARGET, command_tree
from llamasup.cli.main import build_parser, main
from llamasup.profiles.discover import read_names

ROOT = Path(__file__).resolve().parents[2]
CODING = ROOT / "examples" / "coding-host" / "profiles.yaml"

PROFILE = """\
models:
  qwen3:8b: {path: q.gguf, aliases: [coder-default]}
  gemma: {path: g.gguf}
agents:
  coder: --temp 0.2
  summarizer: {flags: --temp 0.7}
"""


def _shell(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: scripts/install-tools.sh installs it (apt-get)"
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory whose ./profiles.yaml is the default profile set of the completions."""
    (tmp_path / "profiles.yaml").write_text(PROFILE)
    (tmp_path / "notes.txt").write_text("")
    return tmp_path


def _environment() -> dict[str, str]:
    # the scripts call `llamasup __complete`: the one installed beside this Python
    env = {k: v for k, v in os.environ.items() if k != "LLAMASUP_PROFILES"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


BASH = r"""
source "$1"; shift
for line in "$@"; do
    COMP_LINE="$line"; COMP_POINT=${#line}; COMPREPLY=()
    _llamasup
    printf '%s\n' "${COMPREPLY[*]}"
done
complete -p llamasup
"""


def _bash(script: Path, workdir: Path, *lines: str) -> list[str]:
    done = subprocess.run(
        [_shell("bash"), "-c", BASH, "bash", str(script), *lines],
        cwd=workdir,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_bash_completes_commands_options_models_and_agents(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "llamasup.bash"
    script.write_text(_script("bash", capsys))
    lines = {
        "llamasup ren": "render",
        "llamasup r": "render reload restart runtime",
        "llamasup runtime ": "install which",
        "llamasup runtime install --f": "--force",
        "llamasup runtime install --backend ": "cpu cuda rocm vulkan metal auto",
        "llamasup render ": "coder-default gemma qwen3:8b",
        "llamasup render qwen3:": "8b",  # bash replaces only what follows the last ':'
        "llamasup render gemma@": "gemma@coder gemma@summarizer",
        "llamasup render gemma@s": "gemma@summarizer",
        "llamasup render --agent ": "coder summarizer",
        "llamasup render -o ": "text table json",
        f"llamasup render -f {CODING} ": "coder-default qwen3-coder qwen3-coder-fim",
        f"llamasup render --file={CODING} q": "qwen3-coder qwen3-coder-fim",
        "llamasup unload g": "gemma",
        "llamasup logs -f ": "coder-default gemma qwen3:8b",  # -f is --follow here
        "llamasup validate no": "notes.txt",
        "llamasup completion ": "bash zsh fish",
        "llamasup status --server ": "",
    }
    *answers, registered = _bash(script, workdir, *lines)
    assert dict(zip(lines, answers, strict=True)) == lines
    assert registered == "complete -F _llamasup llamasup"


def test_fish_completes_commands_options_models_and_agents(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "llamasup.fish"
    script.write_text(_script("fish", capsys))
    expected = {
        "llamasup ren": ["render"],
        "llamasup runtime ": ["install", "which"],
        "llamasup render ": ["coder-default", "gemma", "qwen3:8b"],
        "llamasup render gemma@": ["gemma@coder", "gemma@summarizer"],
        "llamasup render --agent ": ["coder", "summarizer"],
        f"llamasup render -f {CODING} ": ["coder-default", "qwen3-coder", "qwen3-coder-fim"],
        "llamasup completion ": ["bash", "fish", "zsh"],
        "llamasup validate no": ["notes.txt"],
    }
    for line, words in expected.items():
        done = subprocess.run(
            [_shell("fish"), "--no-config", "-c", f"source {script}; complete -C {line!r}"],
            cwd=workdir,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert [entry.split("\t")[0] for entry in done.stdout.splitlines()] == words, line


ZSH = r"""
autoload -Uz compinit && compinit -u -d "$2"
source "$1"; shift 2
print -r -- "registered: $_comps[llamasup]"
# stand-ins for the line editor's builtins: print the candidates they are handed
compadd() { while [[ $1 == -* && $1 != -- ]]; do shift; done; [[ $1 == -- ]] && shift
            print -rl -- "${IPREFIX}${^@}"; }
_describe() { print -rl -- ${${(P)4}%%:*}; }
_files() { print -r -- "(files)"; }
compset() { if [[ $1 == -P && $PREFIX == *@* ]]; then
              IPREFIX=${PREFIX%%@*}@; PREFIX=${PREFIX#*@}; fi; }
for line in "$@"; do
    words=("${(@Q)${(z)line}}"); [[ $line == *' ' ]] && words+=('')
    CURRENT=${#words}; PREFIX=${words[CURRENT]}; IPREFIX=
    print -r -- "${(j: :)${(f)$(_llamasup)}}"
done
"""


def test_zsh_registers_and_completes(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "_llamasup"
    script.write_text(_script("zsh", capsys))
    lines = {
        "llamasup runtime ": "install which",
        "llamasup render ": "coder-default gemma qwen3:8b",
        "llamasup render gemma@": "gemma@coder gemma@summarizer",
        "llamasup render --agent ": "coder summarizer",
        "llamasup render -o ": "text table json",
        f"llamasup render -f {CODING} ": "coder-default qwen3-coder qwen3-coder-fim",
        "llamasup runtime install --": "-h --help --backend --force --sdist --jobs",
        "llamasup validate ": "(files)",
    }
    done = subprocess.run(
        [_shell("zsh"), "-f", "-c", ZSH, "zsh", str(script), str(tmp_path / "zcompdump"), *lines],
        cwd=workdir,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    registered, *answers = done.stdout.splitlines()
    assert registered == "registered: _llamasup"
    assert dict(zip(lines, answers, strict=True)) == lines
    assert done.stderr == ""


def test_every_command_is_in_the_tree_and_the_helper_is_not() -> None:
    tree = command_tree(build_parser())
    names = {command.name for command in tree.walk()}
    assert {"render", "runtime install", "import llama-swap", "completion", "status"} <= names
    assert not any("__complete" in name for name in names)
    render = next(c for c in tree.walk() if c.name == "render")
    assert render.positionals == ((TARGET,),)
    values = {flag: option.value for option in render.options for flag in option.flags}
    assert values["--agent"] == (AGENT,)
    assert values["-f"] == (FILE,)
    assert values["-o"] == ("text", "table", "json")
    unload = next(c for c in tree.walk() if c.name == "unload")
    assert unload.positionals == ((MODEL,),)


def test_the_helper_prints_names_of_the_named_or_default_profiles(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("LLAMASUP_PROFILES", raising=False)
    assert main(["__complete", "models"]) == 0
    assert capsys.readouterr().out.split() == ["coder-default", "gemma", "qwen3:8b"]
    assert main(["__complete", "agents", str(CODING)]) == 0
    assert "coder" in capsys.readouterr().out.split()
    assert main(["__complete", "agents", str(workdir / "missing")]) == 0
    assert capsys.readouterr().out == ""


def test_read_names_skips_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("models:\n  m1: {aliases: [x, y]}\n  m2: null\n")
    (tmp_path / "b.yaml").write_text("models: [not, a, mapping]\nagents: {z: --temp 1}\n")
    (tmp_path / "c.yaml").write_text("{broken")
    (tmp_path / "d.yml").write_text("- a list\n")
    assert read_names(tmp_path) == (["m1", "m2", "x", "y"], ["z"])
    assert read_names(tmp_path / "nothing.yaml") == ([], [])
