"""``llamasup bench``: parse the plan, open a session, run, print the table, plot."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from llamasup.bench.measure import Cell
from llamasup.bench.plot import write_plot
from llamasup.bench.report import markdown, summarize
from llamasup.bench.runner import BenchPlan, identities, pending_units, run_bench
from llamasup.errors import LlamasupError, ProfileError
from llamasup.flags.flagset import tokenize
from llamasup.harness.identity import load_average
from llamasup.harness.progress import Progress
from llamasup.harness.records import ResultLog
from llamasup.harness.remote import open_remote
from llamasup.harness.session import Session, open_local
from llamasup.harness.targets import Variant, expand, parse_axis, parse_named
from llamasup.profiles.discover import default_profile_path
from llamasup.profiles.load import load_profiles

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def variants_of(args: argparse.Namespace) -> list[Variant]:
    """The variants the command line names (raises VariantError)."""
    return expand(
        args.targets,
        common=tokenize(args.flags or ""),
        named=[parse_named(text) for text in args.variant],
        axes=[parse_axis(text) for text in args.vary],
    )


@contextlib.asynccontextmanager
async def open_session(args: argparse.Namespace, variants: list[Variant]) -> AsyncIterator[Session]:
    """A session on ``--server``, else on a supervisor of our own over ``-f`` profiles."""
    if args.server:
        async with open_remote(args.server, api_key=args.api_key) as remote:
            yield remote
        return
    path = args.file or default_profile_path()
    profiles = load_profiles(path, os.environ)
    async with open_local(profiles, variants) as local:
        yield local


def default_output(kind: str) -> Path:
    return Path(f"llamasup-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")


def report_error(exc: LlamasupError) -> None:
    if isinstance(exc, ProfileError):
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
    else:
        print(f"llamasup: {exc}", file=sys.stderr)


def run_bench_command(args: argparse.Namespace) -> int:
    output: Path = args.output or default_output("bench")
    try:
        variants = variants_of(args)
        prompt_text = args.prompt_file.read_text(encoding="utf-8") if args.prompt_file else None
        cells = [
            Cell(p, g, c)
            for p in args.prompt_tokens
            for g in args.gen_tokens
            for c in args.concurrency
        ]
        plan = BenchPlan(
            variants, cells, args.repeat, max(0, args.warmup), prompt_text, args.keep_loaded
        )
        with ResultLog(output, resume=args.resume) as log:
            print(f"llamasup bench: results in {output}", file=sys.stderr)
            rows = asyncio.run(_bench(args, plan, log))
    except LlamasupError as exc:
        report_error(exc)
        return EXIT_FAILED
    except OSError as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"llamasup bench: interrupted; continue with --resume -o {output}", file=sys.stderr)
        return 130
    return EXIT_OK if all(row.error is None for row in rows) else EXIT_FAILED


async def _bench(args: argparse.Namespace, plan: BenchPlan, log: ResultLog) -> list:  # type: ignore[type-arg]
    async with open_session(args, list(plan.variants)) as session:
        known = identities(session, plan)
        total = len(plan.variants) * len(plan.units())
        progress = Progress(
            total,
            done=total - pending_units(plan, log, known),
            enabled=False if args.no_progress else None,
        )
        try:
            await run_bench(session, plan, log, known, progress)
        finally:
            progress.close()
    rows = summarize(plan, log, known)
    loads = load_average()
    print(markdown(rows))
    print(
        f"\nmedians over {plan.repeat} repeats; ± half the range; ratios against "
        f"{plan.variants[0].name}; load average at the end {loads}"
    )
    if args.plot is not None:
        write_plot(rows, args.plot)
        print(f"llamasup bench: plot in {args.plot}", file=sys.stderr)
    return rows
