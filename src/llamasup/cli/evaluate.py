"""``llamasup eval``: load the suite, open a session, ask, score, judge, print the summary."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from llamasup.cli.bench import default_output, open_session, report_error, variants_of
from llamasup.errors import LlamasupError
from llamasup.evaluate.report import Summary, summarize, text
from llamasup.evaluate.runner import EvalError, EvalPlan, count_units, identities, run_eval
from llamasup.evaluate.suite import load_suite
from llamasup.harness.progress import Progress
from llamasup.harness.records import ResultLog
from llamasup.harness.targets import Variant

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_eval_command(args: argparse.Namespace) -> int:
    output: Path = args.output or default_output("eval")
    try:
        suite = load_suite(args.suite).limited(args.limit)
        variants = variants_of(args)
        judge = Variant(args.judge, "judge") if args.judge else None
        plan = EvalPlan(
            suite, variants, judge, args.allow_code_execution, keep_loaded=args.keep_loaded
        )
        plan.check()
        with ResultLog(output, resume=args.resume) as log:
            print(f"llamasup eval: results in {output}", file=sys.stderr)
            summary = asyncio.run(_evaluate(args, plan, log))
    except EvalError as exc:  # asked for something it will not do (code without the flag)
        report_error(exc)
        return EXIT_USAGE
    except LlamasupError as exc:
        report_error(exc)
        return EXIT_FAILED
    except OSError as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"llamasup eval: interrupted; continue with --resume -o {output}", file=sys.stderr)
        return 130
    complete = all(a.answered == a.questions for a in summary.accuracy)
    return EXIT_OK if complete else EXIT_FAILED


async def _evaluate(args: argparse.Namespace, plan: EvalPlan, log: ResultLog) -> Summary:
    every = [*plan.variants, *([plan.judge] if plan.judge is not None else [])]
    async with open_session(args, every) as session:
        known = identities(session, plan)
        total, done = count_units(plan, log, known)
        progress = Progress(total, done=done, unit="q", enabled=False if args.no_progress else None)
        try:
            await run_eval(session, plan, log, known, progress)
        finally:
            progress.close()
    summary = summarize(plan, log, known)
    print(text(summary, plan.suite.name))
    return summary
