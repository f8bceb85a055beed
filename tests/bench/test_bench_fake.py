"""``llamasup bench`` and ``llamasup eval`` against the fake llama-server: the whole pipeline
(supervisor, variants, results, table, plots), resumption after a SIGKILL in mid-run, and a
run through a running llamasup."""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path

import pytest
from service_helpers import running_service

from llamasup.bench.measure import Cell
from llamasup.bench.report import summarize
from llamasup.bench.runner import BenchPlan, identities, run_bench
from llamasup.cli.main import main
from llamasup.harness.records import ResultLog
from llamasup.harness.remote import open_remote
from llamasup.harness.targets import expand, parse_axis
from llamasup.testing import write_fake_binary

from .bench_helpers import llamasup, profile, records, wait_for_records

SUITES = Path(__file__).parents[2] / "examples" / "suites"


@pytest.fixture
def slow_fake(tmp_path: Path) -> tuple[Path, Path]:
    """A fake that takes 5 ms per generated piece, logging every request it serves."""
    log = tmp_path / "requests.jsonl"
    binary = write_fake_binary(
        tmp_path / "bin",
        env={
            "FAKE_LLAMA_STREAM_DELAY": "0.005",
            "FAKE_LLAMA_TOKENS": "64",
            "FAKE_LLAMA_REQUEST_LOG": str(log),
        },
    )
    return binary, log


def _models(tmp_path: Path, *names: str) -> dict[str, Path]:
    found = {}
    for name in names:
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(b"GGUF" + name.encode() * 100)
        found[name] = path
    return found


def test_bench_measures_every_variant_and_cell_and_plots(
    tmp_path: Path, slow_fake: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    binary, _ = slow_fake
    path = profile(tmp_path, binary, _models(tmp_path, "alpha"))
    out = tmp_path / "r.jsonl"
    argv = [
        "bench",
        "alpha",
        "alpha@coder",
        "-f",
        str(path),
        "--vary",
        "ub=256|512",
        "--prompt-tokens",
        "16,32",
        "--gen-tokens",
        "8",
        "--concurrency",
        "1,2",
        "--repeat",
        "2",
        "-o",
        str(out),
        "--no-progress",
    ]
    assert main([*argv, "--plot", str(tmp_path / "p.html")]) == 0
    table = capsys.readouterr().out
    cells = records(out, "cell")
    assert len(cells) == 2 * 2 * 4 * 2  # targets x variants x cells x repeats
    assert len({c["key"] for c in cells}) == len(cells)
    first = cells[0]
    assert first["identity"]["binary"] == "b11434-fake"
    assert first["identity"]["model"]["fingerprint"]
    assert first["gen_tps"] == pytest.approx(200, rel=0.01)  # the fake's 5 ms per piece
    assert first["ttft"] > 0 and first["latency"] >= first["ttft"]
    assert first["rss_peak"] > 0
    loads = records(out, "load")
    assert len(loads) == 4 and all(r["load_seconds"] > 0 for r in loads)
    assert all(r["memory_estimate"] is None for r in loads)  # not a real GGUF
    assert "| alpha [ub=256] | 16 | 8 | 1 |" in table and "1.00" in table
    assert "<svg" in (tmp_path / "p.html").read_text()
    # a second run on the same file without --resume is refused; with it, nothing is redone
    assert main([*argv]) == 1
    assert main([*argv, "--resume", "--plot", str(tmp_path / "p.png")]) == 0
    assert len(records(out, "cell")) == len(cells)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_a_variant_that_cannot_start_is_reported_and_the_others_run(
    tmp_path: Path, slow_fake: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    binary, _ = slow_fake
    models = _models(tmp_path, "alpha")
    path = profile(tmp_path, binary, models, env={"alpha": {"FAKE_LLAMA_LOAD_DELAY": "0"}})
    models["alpha"].unlink()  # the first variant's start fails: no model file
    out = tmp_path / "r.jsonl"
    code = main(
        [
            "bench",
            "alpha",
            "-f",
            str(path),
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "4",
            "--repeat",
            "1",
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 1
    assert records(out, "variant-error")
    assert "error:" in capsys.readouterr().out


def test_bench_killed_mid_run_resumes_without_running_a_cell_twice(
    tmp_path: Path, slow_fake: tuple[Path, Path]
) -> None:
    binary, request_log = slow_fake
    path = profile(tmp_path, binary, _models(tmp_path, "alpha"))
    out = tmp_path / "r.jsonl"
    argv = [
        "bench",
        "alpha",
        "-f",
        str(path),
        "--vary",
        "ub=256|512",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "32",
        "--concurrency",
        "1,2",
        "--repeat",
        "3",
        "-o",
        str(out),
        "--warmup",
        "0",
    ]
    first = llamasup(*argv)
    wait_for_records(first, out, "cell", 5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = {r["key"]: r for r in records(out, "cell")}
    sent_before = _completions(request_log)
    assert 5 <= len(before) < 12
    second = llamasup(*argv, "--resume")
    assert second.wait(60) == 0, second.communicate()
    cells = records(out, "cell")
    keys = [c["key"] for c in cells]
    assert len(keys) == 12 and len(set(keys)) == 12  # none lost, none twice
    # the resumed run sent exactly the requests of the cells it measured: none done twice
    resumed = [c for c in cells if c["key"] not in before]
    sent_after = _completions(request_log) - sent_before
    assert sent_after == sum(c["params"]["concurrency"] for c in resumed)
    # the killed run sent those of its finished cells, and at most the one cell in flight
    in_flight = sent_before - sum(c["params"]["concurrency"] for c in before.values())
    assert 0 <= in_flight <= 2


def _completions(request_log: Path) -> int:
    lines = request_log.read_text().splitlines()
    return sum(json.loads(line)["path"] == "/completion" for line in lines)


def test_eval_killed_mid_run_resumes_question_by_question(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([["gold", "The answer is B"], ["hexagon", "B"]]))
    request_log = tmp_path / "requests.jsonl"
    binary = write_fake_binary(
        tmp_path / "bin",
        env={
            "FAKE_LLAMA_STREAM_DELAY": "0.02",
            "FAKE_LLAMA_REQUEST_LOG": str(request_log),
            "FAKE_LLAMA_REPLIES": str(replies),
        },
    )
    path = profile(tmp_path, binary, _models(tmp_path, "alpha", "beta"))
    out = tmp_path / "e.jsonl"
    argv = [
        "eval",
        "alpha",
        "beta",
        "-f",
        str(path),
        "--suite",
        str(SUITES / "choice.jsonl"),
        "-o",
        str(out),
    ]
    first = llamasup(*argv)
    wait_for_records(first, out, "answer", 14)  # into the second target
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = llamasup(*argv, "--resume")
    stdout, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr
    answers = records(out, "answer")
    keys = [a["key"] for a in answers]
    assert len(keys) == 24 and len(set(keys)) == 24
    asked = collections.Counter(
        (json.loads(line)["pid"], json.dumps(json.loads(line)["body"]["messages"]))
        for line in request_log.read_text().splitlines()
    )
    per_question = collections.Counter(messages for (_, messages) in asked)
    # 12 questions x 2 targets; only the question in flight at the kill was asked again
    assert sum(per_question.values()) <= 24 + 1
    assert sum(a["score"] for a in answers) == 4  # c01 and c02 right, for both targets
    assert "McNemar exact p=1" in stdout


def test_eval_judge_prefers_the_answers_it_is_told_to(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([["", "GOOD"]]))
    bad.write_text(json.dumps([["", "BAD"]]))
    verdicts = tmp_path / "judge.json"
    # whichever position the good answer is shown in, the judge names it
    verdicts.write_text(json.dumps([["[Response A]\nGOOD", "A"], ["[Response B]\nGOOD", "B"]]))
    binary = write_fake_binary(tmp_path / "bin")
    models = _models(tmp_path, "weak", "strong", "judge")
    env = {
        "weak": {"FAKE_LLAMA_REPLIES": str(bad)},
        "strong": {"FAKE_LLAMA_REPLIES": str(good)},
        "judge": {"FAKE_LLAMA_REPLIES": str(verdicts)},
    }
    path = profile(tmp_path, binary, models, env=env)
    out = tmp_path / "e.jsonl"
    code = main(
        [
            "eval",
            "weak",
            "strong",
            "--judge",
            "judge",
            "-f",
            str(path),
            "--suite",
            str(SUITES / "agents.jsonl"),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    judgements = records(out, "judgement")
    assert len(judgements) == 2 * 8
    assert {(j["order"], j["verdict"]) for j in judgements} == {(0, "B"), (1, "A")}


def test_a_code_suite_needs_the_flag(tmp_path: Path, fake_server_bin: Path) -> None:
    path = profile(tmp_path, fake_server_bin, _models(tmp_path, "alpha"))
    code = main(
        [
            "eval",
            "alpha",
            "-f",
            str(path),
            "--suite",
            str(SUITES / "code.jsonl"),
            "-o",
            str(tmp_path / "e.jsonl"),
        ]
    )
    assert code == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_bench_through_a_running_llamasup(
    tmp_path: Path, slow_fake: tuple[Path, Path], anyio_backend: str
) -> None:
    binary, _ = slow_fake
    extra = "agent_flags: {enabled: true, allow_load_flags: [--ubatch-size]}"
    path = profile(tmp_path, binary, _models(tmp_path, "alpha"), server_extra=extra)
    variants = expand(["alpha"], axes=[parse_axis("ub=256|512")])
    plan = BenchPlan(variants, [Cell(16, 8, 1)], repeat=2, warmup=0)
    async with running_service(path, watch=False) as running:
        with ResultLog(tmp_path / "r.jsonl", resume=False) as log:
            async with open_remote(running.url) as session:
                known = identities(session, plan)
                await run_bench(session, plan, log, known)
            rows = summarize(plan, log, known)
            loads = list(log.of_kind("load"))
        status = (await running.client.get("/api/status")).json()
    assert [row.repeats for row in rows] == [2, 2]
    assert all(row.metrics["gen_tps"] is not None for row in rows)
    assert all(r["load_seconds"] is not None and r["rss_peak"] for r in loads)
    # each variant's sidecar was started by the bench, so it was unloaded after it
    assert not [s for s in status["sidecars"] if s["pid"]]
