"""``llamasup bench`` and ``llamasup eval`` against the real llama-server on the tiny model:
its numbers and answers are meaningless, the pipeline (supervisor, timings, memory,
spec-type variants, scoring, statistics) is real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamasup.cli.main import main

pytestmark = pytest.mark.e2e

SUITES = Path(__file__).parents[2] / "examples" / "suites"


def _profile(tmp_path: Path, binary: Path, model: Path) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "version: 1\n"
        "server:\n"
        f"  binary: {binary}\n"
        f"  state_dir: {tmp_path / 'state'}\n"
        "  ports: 18900-18999\n"
        "  base_args: [-c, 1024, -np, 2]\n"
        f"models:\n  tiny:\n    path: {model}\n"
        "agents:\n  coder: --temp 0.2\n"
    )
    return path


def _records(path: Path, kind: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in path.read_text().splitlines())
    return [r for r in lines if r.get("kind") == kind]


def test_bench_on_the_real_server(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.jsonl"
    code = main(
        ["bench", "tiny", "-f", str(_profile(tmp_path, llama_server_bin, tiny_model)),
         "--vary", "spec-type=none|ngram-simple", "--prompt-tokens", "48", "--gen-tokens", "16",
         "--concurrency", "1,2", "--repeat", "2", "-o", str(out), "--no-progress",
         "--plot", str(tmp_path / "p.html")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    cells = _records(out, "cell")
    assert len(cells) == 2 * 2 * 2
    for cell in cells:
        assert cell["identity"]["binary"].startswith("b11434")  # type: ignore[index]
        assert cell["gen_tps"] and cell["prompt_tps"] and cell["rss_peak"]
        for request in cell["requests"]:  # type: ignore[attr-defined]
            assert request["gen_n"] == 16  # ignore_eos: exactly what was asked
            assert 40 <= request["prompt_n"] <= 49  # no prompt cache reuse
    loads = _records(out, "load")
    assert all(r["load_seconds"] and r["memory_estimate"] and r["rss_peak"] for r in loads)
    assert "tiny [spec-type=ngram-simple]" in capsys.readouterr().out


def test_eval_on_the_real_server(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _profile(tmp_path, llama_server_bin, tiny_model)
    out = tmp_path / "e.jsonl"
    code = main(
        ["eval", "tiny", "tiny@coder", "-f", str(path), "--suite", str(SUITES / "code.jsonl"),
         "--limit", "2", "--allow-code-execution", "-o", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    answers = _records(out, "answer")
    assert len(answers) == 4
    # gibberish code fails its tests, but it was really run, in a sandbox
    assert all(a["execution"]["status"] in {"failed", "timeout"} for a in answers)  # type: ignore[index]
    assert "McNemar exact" in capsys.readouterr().out
