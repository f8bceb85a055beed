"""Arguments of ``llamasup bench`` and ``llamasup eval`` (run by :mod:`llamasup.cli.bench`
and :mod:`llamasup.cli.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler


def _int_list(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4; got {value!r}")
    return numbers


def _positive(value: str) -> int:
    numbers = _int_list(value)
    if len(numbers) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {value!r}")
    return numbers[0]


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets", nargs="+", metavar="TARGET", help="model, alias or model@agent (several)"
    )
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        metavar="PATH",
        help="profiles to run standalone (default: $LLAMASUP_PROFILES, ./profiles, "
        "./profiles.yaml)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="measure through this running llamasup instead of a supervisor of our own "
        "(variant flags travel in X-Agent-Flags: the server must allow them)",
    )
    parser.add_argument("--api-key", metavar="KEY", help="admin key of --server")
    parser.add_argument(
        "--flags",
        metavar="FLAGS",
        default="",
        help="load-time flags for every variant, as one string: --flags='-c 8192 -np 4'",
    )
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="FLAG=V1|V2",
        help="try each value of a load-time flag (repeat for a cross product): "
        "--vary spec-type=none|ngram-simple --vary ub=256|512",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=FLAGS",
        help="a named variant of several flags: --variant 'ngram=--spec-type ngram-simple "
        "--spec-ngram-simple-size-n 8' (crossed with --vary)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="JSON-lines results (default: a new timestamped file here)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in -o FILE, skipping what it holds"
    )
    parser.add_argument(
        "--keep-loaded",
        action="store_true",
        help="leave each variant loaded after its cells (the profiles' limits still apply); "
        "default: one variant at a time",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: on a terminal)"
    )


def register(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="throughput of models and flag variants on this host",
        description="Measure load time, memory, prompt and generation speed, time to first "
        "token and latency of each target x variant x (prompt, gen, concurrency) cell, "
        "through llamasup's own supervisor (or a running llamasup). Prints a Markdown table "
        "with ratios against the first variant; results go to a JSON-lines file that "
        "--resume continues cell by cell. Exit 0 all measured, 1 some failed, 2 usage.",
    )
    _where(bench)
    bench.add_argument("--prompt-tokens", type=_int_list, default=(512,), metavar="N,N")
    bench.add_argument("--gen-tokens", type=_int_list, default=(128,), metavar="N,N")
    bench.add_argument("--concurrency", type=_int_list, default=(1,), metavar="N,N")
    bench.add_argument("--repeat", type=_positive, default=3, metavar="N")
    bench.add_argument(
        "--warmup", type=int, default=1, metavar="N", help="untimed requests after each load"
    )
    bench.add_argument(
        "--prompt-file",
        type=Path,
        metavar="FILE",
        help="cut prompts from this text (default: random common words); repetitive text, "
        "like code, is where n-gram speculative decoding helps",
    )
    bench.add_argument(
        "--plot", type=Path, metavar="FILE", help="bar charts: .html (no dependency) or .png"
    )
    bench.set_defaults(handler=LazyHandler("llamasup.cli.bench:run_bench_command"))

    evaluate = commands.add_parser(
        "eval",
        help="accuracy of models and flag variants on a question suite, with A/B statistics",
        description="Ask every target the questions of a JSON-lines suite (multiple choice, "
        "numeric answer, code with unit tests, or free-form prompts judged pairwise), score "
        "them, and compare each target with the first: McNemar's exact test for right/wrong, "
        "a bootstrap interval for the difference. Resumable question by question. "
        "Exit 0 done, 1 some failed, 2 usage.",
    )
    _where(evaluate)
    evaluate.add_argument(
        "--suite", type=Path, required=True, metavar="FILE.jsonl", help="the questions"
    )
    evaluate.add_argument("--limit", type=_positive, metavar="N", help="the first N questions")
    evaluate.add_argument(
        "--judge",
        metavar="TARGET",
        help="a model (or model@agent) that compares free-form answers pairwise",
    )
    evaluate.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="run model-written code against a code suite's tests (in a subprocess with "
        "time, memory and file limits; see the README for what is and is not isolated)",
    )
    evaluate.set_defaults(handler=LazyHandler("llamasup.cli.evaluate:run_eval_command"))
