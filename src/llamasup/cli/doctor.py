"""``llamasup doctor``: run the host checks of :mod:`llamasup.doctor` and print them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llamasup.doctor import CheckResult, run_checks
from llamasup.profiles.discover import default_profile_path

EXIT_OK, EXIT_FAILED = 0, 1


def run_doctor(args: argparse.Namespace) -> int:
    path: Path = args.path if args.path is not None else default_profile_path()
    results = run_checks(path, os.environ)
    failed = any(result.status == "FAIL" for result in results)
    if args.output == "json":
        json.dump([result.as_dict() for result in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for result in results:
            print(format_result(result))
        print(summary(results))
    return EXIT_FAILED if failed else EXIT_OK


def format_result(result: CheckResult) -> str:
    line = f"{result.status:<4}  {result.check}: {result.detail}"
    if result.fix and result.status != "ok":
        line += f"\n      fix: {result.fix}"
    return line


def summary(results: list[CheckResult]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "warn", "FAIL")}
    return f"doctor: {counts['ok']} ok, {counts['warn']} warning(s), {counts['FAIL']} failure(s)"
