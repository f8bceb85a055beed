"""``llamasup serve`` with few file descriptors, flooded with idle connections: it must
answer again once they are gone (and say something clear meanwhile), and its log must stay
small. Before: it stopped answering, even ``/health``, and wrote 131 MB of tracebacks."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from e2e.serve_process import serve_argv
from service_helpers import fake_profile, write_model_files

from llamasup.profiles.types import ServerConfig
from llamasup.service.front_limits import FD_RESERVE, connections_allowed, front_limits
from llamasup.testing.process import ServerProcess, free_port

#: the server's RLIMIT_NOFILE (soft and hard: there is nothing to raise it to)
OPEN_FILES = 256
#: idle connections opened at once: more than the server has descriptors
CLIENTS = 400
DEADLINE = 30.0
#: sets the limit, then becomes ``llamasup serve`` (argv: limit, program, its arguments...)
LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def test_flooded_past_its_descriptors_the_front_recovers_and_logs_little(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CLIENTS + 64:  # this test's own sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    timeouts = "client_timeouts: {idle: 1s, head: 1s}"
    profile.write_text(
        fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""}, server_extra=timeouts)
    )
    port = free_port()
    argv = [sys.executable, "-c", LIMITED, str(OPEN_FILES), *serve_argv(profile, port)]
    env = {k: v for k, v in os.environ.items() if k != "LLAMASUP_PROFILES"}
    with ServerProcess(argv, env) as server:
        server.wait_for_line(re.compile(r"llamasup: serving 1 models"), 60)
        cap = connections_allowed(OPEN_FILES)
        assert any(f"at most {cap} client connections" in line for line in server.lines)

        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CLIENTS)]
        try:
            # meanwhile a request gets an answer: the service, or a clear refusal
            status, body = get_health(port)
            assert status == 200 or (status, body["error"]["code"]) == (
                503,
                "too_many_connections",
            ), body
            # the idle ones are closed (past the cap at once, the others after head: 1s)
            assert all_closed_by_server(idle), "idle connections still open"
        finally:
            for sock in idle:
                sock.close()
        assert get_health(port)[0] == 200

        log = "\n".join(server.lines)
        # it did run out of descriptors (the scenario happened) ...
        assert "Too many open files" in log or "out of system resource" in log, log[-3000:]
        # ... and the log stayed small: the repeated accept errors are counted, not printed
        assert len(log.encode()) < 32 * 1024, log[-3000:]
        assert log.count("Traceback") <= 3, log[-3000:]
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0, log[-3000:]


def get_health(port: int) -> tuple[int, dict[str, Any]]:
    """``GET /health`` on a new connection: (status, JSON body), within DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
                sock.sendall(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                answer = read_all(sock)
        except OSError:
            answer = b""
        if answer:
            head, _, body = answer.partition(b"\r\n\r\n")
            return int(head.split()[1]), json.loads(body)
        # closed without an answer (out of descriptors, the kernel's backlog): again
        assert time.monotonic() < deadline, "no answer to /health"
        time.sleep(0.1)


def read_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


def all_closed_by_server(socks: list[socket.socket]) -> bool:
    """Wait (up to DEADLINE) until the server has closed every one of ``socks``."""
    selector = selectors.DefaultSelector()
    for each in socks:
        each.setblocking(False)
        selector.register(each, selectors.EVENT_READ, each)
    open_ = len(socks)
    deadline = time.monotonic() + DEADLINE
    with selector:
        while open_ and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=left):
                sock: socket.socket = key.data
                try:
                    data = sock.recv(65536)
                except OSError as exc:
                    assert exc.errno == errno.ECONNRESET, exc
                    data = b""
                if not data:  # EOF or reset: closed
                    selector.unregister(sock)
                    open_ -= 1
                # else: an answer before the close (there should be none): keep reading
    return open_ == 0


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    """What ``serve`` does first: systemd starts services at 1024 soft, 524288 hard."""
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 512)
    code = (
        "import resource; from llamasup.service.front_limits import raise_open_files_limit; "
        "print(*raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["64", str(hard), str(hard), str(hard)]


def test_the_connection_cap_comes_from_the_open_files_limit() -> None:
    assert connections_allowed(1024) == (1024 - FD_RESERVE) // 2 == 448
    assert connections_allowed(40) == 16  # a floor, however few descriptors
    assert front_limits(ServerConfig(), 1024).max_connections == 448
    assert front_limits(ServerConfig(max_connections=100), 1024).max_connections == 100
    # more than the descriptors allow is lowered (Service logs a warning saying so)
    assert front_limits(ServerConfig(max_connections=5000), 1024).max_connections == 448
