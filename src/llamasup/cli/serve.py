"""``llamasup serve`` (``llamasup quickstart`` is ``quickstart.py``: what it imports to build
llama-server, a serving process never needs)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from llamasup.errors import (
    LlamasupError,
    ProfileError,
)
from llamasup.profiles.discover import default_profile_path
from llamasup.profiles.load import load_profiles
from llamasup.profiles.persist import recover
from llamasup.service import event_loop
from llamasup.service.serve import ServeError, ServeOptions, check_exposure, run

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # one line per metrics scrape of every sidecar is noise, not news
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # what no format of ours prints, not gathered for each record (the request log writes
    # one per request): the caller's frame, thread, process id (a syscall on Python 3.11)
    # and multiprocessing name; the "Optimization" section of the logging HOWTO
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def cmd_serve(args: argparse.Namespace) -> int:
    path: Path = args.path or default_profile_path()
    preflight = getattr(args, "preflight", False)
    try:
        # an apply cut short by a crash of the last llamasup is rolled back before loading
        # (a preflight only looks: the llamasup it checks for will do it)
        single = None if path.is_dir() else path.name
        recovered = (
            None if preflight else recover(path.parent if single else path, profile_file=single)
        )
        if recovered:
            print(f"llamasup: {path}: {recovered}", file=sys.stderr)
        profiles = load_profiles(path, os.environ)
    except ProfileError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"llamasup: {path} is invalid; not serving", file=sys.stderr)
        return EXIT_FAILED
    except LlamasupError as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _setup_logging(args.log_level or profiles.server.log_level)
    host, port = args.listen or (profiles.server.listen_host, profiles.server.listen_port)
    try:
        check_exposure(profiles, host, allow_public=args.allow_public)
        if preflight:
            # what a planned restart runs first: this program, these profiles, these checks
            print(f"llamasup: preflight ok: {path} would serve on {host}:{port}", file=sys.stderr)
            return EXIT_OK
        options = ServeOptions(path, host, port, args.allow_public)
        with contextlib.suppress(KeyboardInterrupt), event_loop.runner() as runner:
            return runner.run(run(options, profiles))
    except (ServeError, LlamasupError) as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
