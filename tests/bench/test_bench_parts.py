"""The pure parts of bench and eval: variants, the result log, statistics, answer reading,
suites, the sandbox and the converters."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from llamasup.bench.measure import Cell
from llamasup.bench.report import Stat
from llamasup.evaluate import convert
from llamasup.evaluate.judge import combined, verdict
from llamasup.evaluate.sandbox import Limits, run_program
from llamasup.evaluate.scoring import code_program, extract_letter, extract_number, same_number
from llamasup.evaluate.stats import bootstrap_mean, compare_scores, mcnemar_exact
from llamasup.evaluate.suite import SuiteError, load_suite
from llamasup.harness.records import ResultLog, ResultLogError, record_key
from llamasup.harness.targets import VariantError, expand, parse_axis, parse_named

SUITES = Path(__file__).parents[2] / "examples" / "suites"


def test_vary_is_a_cross_product_in_order_with_canonical_flags() -> None:
    axes = [parse_axis("spec-type=none|ngram-simple"), parse_axis("ub=256|512")]
    variants = expand(["m", "m@coder"], common=["-c", "4096"], axes=axes)
    assert [v.label for v in variants[:4]] == [
        "spec-type=none ub=256",
        "spec-type=none ub=512",
        "spec-type=ngram-simple ub=256",
        "spec-type=ngram-simple ub=512",
    ]
    assert len(variants) == 8 and variants[4].target == "m@coder"
    assert "--ubatch-size" in variants[0].flags and "--ctx-size" in variants[0].flags
    label, flags = parse_named("ngram=--spec-type ngram-simple --spec-ngram-simple-size-n 8")
    assert label == "ngram" and flags[:2] == ("--spec-type", "ngram-simple")
    # a variant's own value wins over --flags, as a later layer does
    (only,) = expand(["m"], common=["-c", "1024"], axes=[parse_axis("c=2048")])
    assert only.flags == ("--ctx-size", "2048")


@pytest.mark.parametrize(
    "text",
    ["nonsense", "no-such-flag=1|2", "temp=0|1", "spec-type=a|a", "port=1|2", "ub=x|512"],
)
def test_bad_vary_values_are_refused(text: str) -> None:
    with pytest.raises(VariantError):
        parse_axis(text)


def test_two_variants_with_the_same_flags_are_refused() -> None:
    with pytest.raises(VariantError, match="same flags"):
        expand(["m"], named=[("a", ("-ub", "512")), ("b", ("--ubatch-size", "512"))])


def test_result_log_resumes_drops_a_torn_line_and_refuses_to_mix(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with ResultLog(path, resume=False) as log:
        log.append({"kind": "cell", "key": "k1"})
        log.append({"kind": "cell", "key": "k2"})
    with path.open("ab") as handle:
        handle.write(b'{"kind": "cell", "key": "k3"')  # killed mid-write
    with pytest.raises(ResultLogError, match="--resume"):
        ResultLog(path, resume=False)
    with ResultLog(path, resume=True) as log:
        assert log.done("k1") and log.done("k2") and not log.done("k3")
        log.append({"kind": "cell", "key": "k3"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["key"] for r in lines] == ["k1", "k2", "k3"]
    assert record_key({"a": 1, "b": 2}) == record_key({"b": 2, "a": 1})


def test_stat_median_and_spread() -> None:
    stat = Stat.of([10.0, 12.0, 11.0, None])
    assert stat is not None and stat.median == 11.0 and stat.count == 3
    assert stat.spread == pytest.approx(1 / 11)
    assert Stat.of([None]) is None
    assert Cell(512, 128, 4).as_dict() == {
        "prompt_tokens": 512,
        "gen_tokens": 128,
        "concurrency": 4,
    }


def test_mcnemar_exact_and_the_bootstrap() -> None:
    # n = 12 discordant, 2 one way: 2 * (1 + 12 + 66) / 4096 (scipy's binomtest agrees)
    assert mcnemar_exact(2, 10) == pytest.approx(0.0385742, rel=1e-5)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    better = compare_scores("A", "B", [(0, 1)] * 10 + [(1, 1)] * 5 + [(1, 0)])
    assert better.b_only == 10 and better.a_only == 1 and better.ties == 5
    assert better.p_value < 0.05 and better.difference.low > 0
    assert better.verdict().startswith("B is better")
    same = compare_scores("A", "B", [(1, 0), (0, 1)] * 5)
    assert "no significant difference" in same.verdict()
    interval = bootstrap_mean([1.0] * 8 + [0.0] * 2)
    assert interval.low <= 0.8 <= interval.high and interval.estimate == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("The answer is (C).", "C"),
        ("B. Au", "B"),
        ("Answer: d", "D"),
        ("I think it is B because", "B"),
        ("no idea", None),
        ("E", None),  # not one of four options
    ],
)
def test_extract_letter(reply: str, letter: str | None) -> None:
    assert extract_letter(reply, 4) == letter


@pytest.mark.parametrize(
    ("reply", "number"),
    [
        ("3 + 5 = 8\n#### 8", "8"),
        ("so the answer is $1,200.", "1200"),
        ("first 2, then 40 and finally 42", "42"),
        ("nothing", None),
    ],
)
def test_extract_number(reply: str, number: str | None) -> None:
    assert extract_number(reply) == number


def test_numbers_compare_by_value() -> None:
    assert same_number("8.0", 8) and same_number("1200", "1,200")
    assert not same_number("7", 8) and not same_number(None, 8)


def test_judge_verdicts_need_both_orders_to_agree() -> None:
    assert verdict("B") == "B" and verdict("Response A is better") == "A"
    assert verdict("tie") == "T" and verdict("hmm") == "T"
    assert combined("B", "A") == 1.0  # B wins shown second and shown first
    assert combined("A", "B") == 0.0
    assert combined("A", "A") == 0.5  # position bias: a tie


def test_suites_load_and_bad_ones_name_the_line(tmp_path: Path) -> None:
    for name, kind in [
        ("choice", "choice"),
        ("numeric", "numeric"),
        ("code", "code"),
        ("agents", "judge"),
    ]:
        suite = load_suite(SUITES / f"{name}.jsonl")
        assert suite.kind == kind and 0 < len(suite.questions) <= 20
        assert suite.sampling["temperature"] == 0.0 and "seed" in suite.sampling
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"suite": {"kind": "choice"}}\n'
        '{"id": 1, "question": "q", "choices": ["a", "b"], "answer": "C"}\n'
    )
    with pytest.raises(SuiteError, match=r"bad.jsonl:2: answer 'C'"):
        load_suite(bad)
    bad.write_text('{"suite": {"kind": "essay"}}\n')
    with pytest.raises(SuiteError, match="kind"):
        load_suite(bad)


def test_code_program_takes_a_whole_function_or_a_body() -> None:
    question = load_suite(SUITES / "code.jsonl").questions[0]  # add(a, b)
    whole = code_program(question, "Here:\n```python\ndef add(a, b):\n    return a + b\n```")
    body = code_program(question, "    return a + b\n")
    for program in (whole, body):
        assert "def add(a, b):" in program and program.endswith("check(add)\n")


def test_the_sandbox_passes_fails_times_out_and_cuts_the_network() -> None:
    async def run(source: str, seconds: float = 10.0) -> tuple[str, str, str]:
        done = await run_program(source, Limits(seconds=seconds))
        return done.status, done.isolation, done.output

    assert asyncio.run(run("print('ok')"))[0] == "passed"
    assert asyncio.run(run("assert False"))[0] == "failed"
    assert asyncio.run(run("while True:\n    pass", seconds=1))[0] == "timeout"
    status, isolation, output = asyncio.run(
        run("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    )
    assert status == "failed" and isolation in {"network-namespace", "socket-stub"}
    status, _, output = asyncio.run(run("import os\nprint(sorted(os.environ))"))
    assert output == "['HOME', 'LANG', 'PATH', 'TMPDIR']"  # nothing inherited
    assert asyncio.run(run("x = bytearray(4 << 30)"))[0] == "failed"  # the memory limit


def test_converters_make_suites_that_load(tmp_path: Path) -> None:
    csv_file = tmp_path / "anatomy_test.csv"
    csv_file.write_text('"What is 2+2?",3,4,5,6,B\n')
    gsm = tmp_path / "test.jsonl"
    gsm.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    human = tmp_path / "HumanEval.jsonl"
    human.write_text(
        json.dumps(
            {
                "task_id": "HumanEval/0",
                "prompt": "def f():\n",
                "entry_point": "f",
                "test": "def check(c):\n    pass\n",
                "canonical_solution": "    return 1\n",
            }
        )
        + "\n"
    )
    for fmt, source in [("mmlu", csv_file), ("gsm8k", gsm), ("humaneval", human)]:
        out = tmp_path / f"{fmt}.jsonl"
        assert convert.main([fmt, str(source), "-o", str(out)]) == 0
        suite = load_suite(out)
        assert len(suite.questions) == 1
    assert load_suite(tmp_path / "gsm8k.jsonl").questions[0].data["answer"] == "2"
