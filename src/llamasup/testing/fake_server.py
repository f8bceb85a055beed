"""A fake ``llama-server`` for fast integration tests: stdlib only, ready in tens of ms.

Run it as ``python -m llamasup.testing.fake_server ARGS`` or through the launcher that
:func:`write_fake_binary` writes (usable as a profile's llama-server ``binary``).

Command line, as the real server reads it:
  ``-m/--model PATH``   must name an existing file, else "exiting due to model loading error", rc 1
  ``--host``, ``--port`` bind address; ``--port 0`` picks a free port, shown in "listening on"
  ``-a/--alias b,a``    the smallest alias (sorted, like the real std::set) is the model id,
                        else the ``-m`` string as given
  ``--metrics``         enables ``/metrics`` (else 501, like the real server)
  ``--embeddings``      enables ``/v1/embeddings`` (else 501, like the real server)
  ``--api-key K1,K2``   requires ``Authorization: Bearer K`` or ``X-Api-Key`` except on /health
  ``--version``         prints the version lines to stderr and exits 0
  ``--list-devices``    prints ``Available devices:`` and ``  (none)`` (a CPU-only build) to
                        stdout, or ``FAKE_LLAMA_DEVICES``'s file as it is, and exits 0
Any other flag is accepted and ignored; it consumes the next token as its value unless that
token looks like a flag (``-1``-style numbers are values). ``LLAMA_ARG_MODEL``,
``LLAMA_ARG_HOST``, ``LLAMA_ARG_PORT``, ``LLAMA_ARG_ALIAS``, ``LLAMA_ARG_ENDPOINT_METRICS``,
``LLAMA_ARG_EMBEDDINGS`` and ``LLAMA_API_KEY`` act as defaults, as they do for the real one.

Scripted behaviour, from the environment:
  ``FAKE_LLAMA_LOAD_DELAY=S``          seconds of "model loading" (/health answers 503 meanwhile)
  ``FAKE_LLAMA_PROGRESS_INTERVAL=S``   while loading, log a progress line every S seconds
  ``FAKE_LLAMA_HANG_LOAD=1``           never finish loading and log nothing more
  ``FAKE_LLAMA_CRASH_AT_START=N``      log one line then exit with code N (N < 0: die by signal -N)
  ``FAKE_LLAMA_CRASH_AFTER_REQUESTS=N`` SIGKILL itself after answering inference request N
  ``FAKE_LLAMA_CRASH_MID_STREAM=1``    ... instead die half-way through request N's response
  ``FAKE_LLAMA_IGNORE_SIGTERM=1``      ignore SIGTERM and SIGINT (only SIGKILL stops it)
  ``FAKE_LLAMA_FAIL_HEALTH_AFTER=S``   /health answers 500 from S seconds after becoming ready
  ``FAKE_LLAMA_STREAM_DELAY=S``        seconds between SSE chunks (non-streaming answers take
                                       as long as their stream would)
  ``FAKE_LLAMA_TOKENS=N``              content pieces per completion (default 8; max_tokens caps it)
  ``FAKE_LLAMA_LOG_SPAM=BYTES``        write this much filler to stderr before loading and again
                                       on every HTTP request: an undrained pipe blocks the fake
  ``FAKE_LLAMA_ARGV_LOG=FILE``         append one JSON line at start: ``{"pid", "argv",
                                       "env": {LLAMA_ARG_*...}, "XDG_CONFIG_HOME"}``
  ``FAKE_LLAMA_REQUEST_LOG=FILE``      append ``{"pid", "path", "body"}`` per inference request
  ``FAKE_LLAMA_DEVICES=FILE``          what ``--list-devices`` prints (a recorded output)
  ``FAKE_LLAMA_LISTENING_FIRST=1``     print "HTTP server is listening" before loading (as
                                       older builds did, while /health still answers 503)
  ``FAKE_LLAMA_NO_READY_LINE=1``       print neither "model loaded" nor "listening on" (a
                                       build or wrapper that prints something else)
  ``FAKE_LLAMA_REPLIES=FILE``          JSON ``[[needle, reply], ...]``: a prompt containing a
                                       needle is answered with its reply (the first match; a
                                       word per piece), others with ``t0 t1 ...``

Signals: like the real server, SIGTERM/SIGINT kill it during loading (rc -15/-2); once ready
they make it exit 0 at once, even with requests in flight.

Inference answers carry ``timings`` like the real server's (``prompt_n``, ``predicted_n``, their
``_ms``, ``_per_token_ms`` and ``_per_second``); generation takes ``FAKE_LLAMA_STREAM_DELAY``
per piece and says so, prompt processing 0.1 ms.

Endpoints: ``/health``, ``/v1/models`` (``/models``), ``/props``, ``/metrics``,
``/v1/chat/completions``, ``/v1/completions``, ``/completion``, ``/v1/messages``,
``/v1/embeddings``, ``/tokenize``, ``/detokenize``; every inference body carries
``x_fake: {pid, path, number, request, headers}``. ``/x-fake/stats`` answers
``{"requests", "active", "cancelled"}`` at any time (cancelled = client left before the end),
``/x-fake/health-probes`` ``{"loading", "ready"}``: the ``/health`` requests answered 503 while
loading and after.
Like the real server, each inference request logs a ``slot launch_slot_: ... processing task``
line when it starts and a ``slot      release: ... stop processing`` line when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time

from llamasup.testing.fake_handler import FakeHTTPServer
from llamasup.testing.fake_state import (
    Behaviour,
    FakeState,
    FakeUsageError,
    Log,
    Options,
    timestamp,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    # annotations only: pathlib and typing would add ~10 ms to every fake's start
    from collections.abc import Mapping
    from pathlib import Path

FAKE_VERSION_LINES = (
    "version: 0.0.0-fake (build 11434, commit fake)\nbuilt with python for fake llama-server\n"
)

_VALUE_FLAGS = {
    "-m": "model",
    "--model": "model",
    "--host": "host",
    "--port": "port",
    "-a": "alias",
    "--alias": "alias",
    "--api-key": "api_key",
}
_SWITCHES = {
    "--metrics": "metrics",
    "--embedding": "embeddings",
    "--embeddings": "embeddings",
    "--version": "version",
    "--list-devices": "list_devices",
}
_TRUE_WORDS = frozenset({"1", "true", "on", "yes", "enabled"})


def _looks_like_flag(token: str) -> bool:
    if not token.startswith("-") or len(token) < 2:
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def parse_args(argv: list[str], environ: Mapping[str, str]) -> Options:
    """Read the flags the fake honours; raise FakeUsageError with the real server's wording."""
    values: dict[str, str] = {
        key: environ[name]
        for key, name in (
            ("model", "LLAMA_ARG_MODEL"),
            ("host", "LLAMA_ARG_HOST"),
            ("port", "LLAMA_ARG_PORT"),
            ("alias", "LLAMA_ARG_ALIAS"),
            ("api_key", "LLAMA_API_KEY"),
        )
        if environ.get(name)
    }
    switches = {
        "metrics": environ.get("LLAMA_ARG_ENDPOINT_METRICS", "").lower() in _TRUE_WORDS,
        "embeddings": environ.get("LLAMA_ARG_EMBEDDINGS", "").lower() in _TRUE_WORDS,
        "version": False,
        "list_devices": False,
    }
    index = 0
    while index < len(argv):
        token = argv[index]
        name, _, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        index += 1
        if name in _SWITCHES:
            switches[_SWITCHES[name]] = True
        elif name in _VALUE_FLAGS:
            if inline:
                values[_VALUE_FLAGS[name]] = inline
            elif index < len(argv):
                values[_VALUE_FLAGS[name]] = argv[index]
                index += 1
            else:
                raise FakeUsageError(f"error: expected value for argument: {name}")
        elif not inline and index < len(argv) and not _looks_like_flag(argv[index]):
            index += 1  # an ignored flag's value
    try:
        # the real server truncates out-of-range ports to 16 bits instead of refusing them
        port = int(values.get("port", "8080")) & 0xFFFF
    except ValueError as exc:
        raise FakeUsageError('error while handling argument "--port": stoi') from exc
    return Options(
        model=values.get("model"),
        host=values.get("host", "127.0.0.1"),
        port=port,
        # llama.cpp keeps aliases in a std::set: sorted, and the smallest one is the model id
        aliases=tuple(sorted({a for a in values.get("alias", "").split(",") if a})),
        metrics=switches["metrics"],
        embeddings=switches["embeddings"],
        api_keys=tuple(k for k in values.get("api_key", "").split(",") if k),
        show_version=switches["version"],
        list_devices=switches["list_devices"],
    )


def _log_argv(path: str, argv: list[str]) -> None:
    record = {
        "pid": os.getpid(),
        "argv": argv,
        "env": {k: v for k, v in os.environ.items() if k.startswith("LLAMA_ARG_")},
        "XDG_CONFIG_HOME": os.environ.get("XDG_CONFIG_HOME"),
    }
    line = (json.dumps(record) + "\n").encode()
    # one O_APPEND write per line keeps concurrent fakes from interleaving
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _list_devices(devices_file: str | None) -> None:
    # the real server printf()s this list to stdout (common/arg.cpp), unlike its logs
    if devices_file is None:
        sys.stdout.write("Available devices:\n  (none)\n")
    else:
        with open(devices_file, encoding="utf-8") as recorded:
            sys.stdout.write(recorded.read())
    sys.stdout.flush()


def _crash_at_start(log: Log, code: int) -> int:
    log.srv("E", "llama_server", f"fake crash at start (code {code})")
    if code < 0:
        os.kill(os.getpid(), -code)
        time.sleep(5)  # the signal is delivered before this ends
    return code


def _load(state: FakeState) -> None:
    behaviour, log = state.behaviour, state.log
    if behaviour.hang_load:
        threading.Event().wait()
    start = time.monotonic()
    deadline = start + behaviour.load_delay
    interval = behaviour.progress_interval
    next_progress = start + interval if interval else float("inf")
    while (now := time.monotonic()) < deadline:
        time.sleep(max(0.0, min(deadline, next_progress) - now))
        if interval and time.monotonic() >= next_progress:
            done = min(100, int(100 * (time.monotonic() - start) / behaviour.load_delay))
            log.srv("I", "load_model", f"loading model tensors: {done}% (fake progress)")
            next_progress += interval


def _install_signal_handlers(log: Log) -> None:
    def on_signal(signum: int, frame: object) -> None:
        # exiting from the handler is prompt and cannot deadlock on a busy log lock
        line = f"{timestamp()} I srv    operator(): operator(): cleaning up before exit...\n"
        os.write(2, line.encode())
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    log = Log()
    try:
        behaviour = Behaviour(os.environ)
    except FakeUsageError as exc:
        log.raw(f"fake llama-server: {exc}\n")
        return 2
    if behaviour.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        # the real server installs no handler until the model is loaded: a signal kills it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if behaviour.argv_log:
        _log_argv(behaviour.argv_log, args)
    try:
        options = parse_args(args, os.environ)
    except FakeUsageError as exc:
        log.raw(f"{exc}\n")
        return 1
    if options.show_version:
        log.raw(FAKE_VERSION_LINES)
        return 0
    if options.list_devices:
        _list_devices(behaviour.devices_file)
        return 0

    log.srv("I", "llama_server", "initializing ...")
    if behaviour.log_spam:
        log.spam(behaviour.log_spam)
    if behaviour.crash_at_start is not None:
        return _crash_at_start(log, behaviour.crash_at_start)
    state = FakeState(options=options, behaviour=behaviour, log=log)
    try:
        server = FakeHTTPServer((options.host, options.port), state)
    except OSError:
        log.srv(
            "E",
            "start",
            f"couldn't bind HTTP server socket, hostname: {options.host}, port: {options.port}",
        )
        log.srv("I", "operator()", "operator(): cleaning up before exit...")
        log.srv("E", "llama_server", "exiting due to HTTP server error")
        return 1
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    host = server.server_name
    if behaviour.listening_first:
        log.srv(
            "I",
            "main",
            f"HTTP server is listening, hostname: {host}, port: {server.server_port}",
        )

    model = options.model
    log.srv("I", "load_model", f"loading model '{model or ''}'")
    if not model or not os.path.isfile(model):
        log.line("E", f"gguf_init_from_file: failed to open GGUF file '{model or ''}'")
        log.srv("E", "load_model", f"failed to load model, '{model or ''}'")
        log.srv("I", "operator()", "operator(): cleaning up before exit...")
        log.srv("E", "llama_server", "exiting due to model loading error")
        return 1
    _load(state)
    _become_ready(state, host, server.server_port)
    threading.Event().wait()
    return 0


def _become_ready(state: FakeState, host: str, port: int) -> None:
    """The real server's order: /health turns 200, "model loaded", signal handlers, then
    "listening on"."""
    log, behaviour = state.log, state.behaviour
    log.srv("I", "load_model", "initializing, n_slots = 4, n_ctx_slot = 2048, kv_unified = 'true'")
    state.mark_ready()
    if not behaviour.no_ready_line:
        log.srv("I", "llama_server", "model loaded")
    if not behaviour.ignore_sigterm:
        _install_signal_handlers(log)
    shown = f"[{host}]" if ":" in host else host
    if not behaviour.no_ready_line:
        log.srv("I", "llama_server", f"listening on http://{shown}:{port}")


def write_fake_binary(
    directory: Path,
    *,
    name: str = "llama-server",
    env: Mapping[str, str] | None = None,
) -> Path:
    """Write an executable launcher for the fake into ``directory`` and return its path.

    The script's shebang is this interpreter, so no shell is involved and the process a
    supervisor spawns is the fake itself. ``env`` bakes ``FAKE_LLAMA_*`` (or any) variables
    into this launcher; they override the caller's environment.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    lines = [
        # -S skips site-packages: the fake needs only the stdlib and this package's source
        f"#!{sys.executable} -S",
        "# a fake llama-server written by llamasup.testing.write_fake_binary",
        "import os, sys",
        f"sys.path.insert(0, {package_root!r})",
    ]
    if env:
        lines.append(f"os.environ.update({dict(env)!r})")
    lines += [
        "from llamasup.testing.fake_server import main",
        "sys.exit(main(sys.argv[1:]))",
        "",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


if __name__ == "__main__":
    sys.exit(main())
