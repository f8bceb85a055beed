"""The CLI's connection to a running llamasup: which URL, which key, and what a failure means.

The server is ``--server``, else ``$LLAMASUP_SERVER``, else the ``server.listen`` of the local
profile set (read leniently, with a note, when it does not validate), else
``http://127.0.0.1:8402``. The key is ``--api-key``, else
``$LLAMASUP_API_KEY``, sent as ``Authorization: Bearer``. An unreachable server and a refused
key are :class:`ControlError` (exit 2): no command can do anything useful after either.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from llamasup.cli.commands.connection import API_KEY_ENV, DEFAULT_SERVER, EXIT_ERROR, SERVER_ENV
from llamasup.errors import LlamasupError
from llamasup.profiles.discover import default_profile_path, read_listen

#: requests wait this long for an answer; an apply that starts sidecars may take a while
REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
APPLY_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
#: a followed log stream has no read deadline
STREAM_TIMEOUT = httpx.Timeout(None, connect=5.0)


class ControlError(LlamasupError):
    """The command cannot talk to llamasup (unreachable, bad URL, key refused)."""


def default_server(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get(SERVER_ENV):
        return env[SERVER_ENV]
    # loading a profile set costs the schema validator; `--server URL` must not pay for it
    from llamasup.profiles.load import load_profiles  # noqa: PLC0415

    path = default_profile_path(env).expanduser()
    try:
        profiles = load_profiles(path, env)
    except (LlamasupError, OSError) as exc:
        try:
            if not path.exists():
                return DEFAULT_SERVER
            listen = read_listen(path)
        except OSError:  # unreadable (a root-only /etc/llamasup): nothing to go on
            listen = None
        url = DEFAULT_SERVER if listen is None else f"http://{_connect_host(listen[0])}:{listen[1]}"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(
            f"llamasup: note: {path} does not load ({first}); using {url} "
            "(--server or $LLAMASUP_SERVER to choose)",
            file=sys.stderr,
        )
        return url
    server = profiles.server
    return f"http://{_connect_host(server.listen_host)}:{server.listen_port}"


def _connect_host(host: str) -> str:
    """The address a client uses for a listen host: the wildcard means this host's loopback."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{address}]" if address.version == 6 else str(address)


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def error_message(response: httpx.Response) -> str:
    """The message of llamasup's error envelope, else the start of the body, else the status."""
    with contextlib.suppress(ValueError):
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    text = response.text.strip()
    return text[:300] if text else f"HTTP {response.status_code} {response.reason_phrase}"


class ControlClient:
    def __init__(self, server: str, api_key: str | None) -> None:
        self.server = normalise_url(server)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            self._client = httpx.Client(
                base_url=self.server, headers=headers, timeout=REQUEST_TIMEOUT, trust_env=False
            )
        except httpx.InvalidURL as exc:
            raise ControlError(f"invalid --server URL {server!r}: {exc}") from exc

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        with self._errors():
            response = self._client.request(
                method, path, params=params, json=json, timeout=timeout or REQUEST_TIMEOUT
            )
        self._check_auth(response)
        return response

    @contextlib.contextmanager
    def stream(
        self, path: str, *, params: Mapping[str, str] | None = None, follow: bool = True
    ) -> Iterator[httpx.Response]:
        timeout = STREAM_TIMEOUT if follow else REQUEST_TIMEOUT
        with (
            self._errors(),
            self._client.stream("GET", path, params=params, timeout=timeout) as response,
        ):
            if response.status_code >= 400:
                response.read()
            self._check_auth(response)
            yield response

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ControlError(f"cannot reach llamasup at {self.server}: {reason}") from exc
        except httpx.InvalidURL as exc:
            raise ControlError(f"invalid --server URL {self.server!r}: {exc}") from exc

    def _check_auth(self, response: httpx.Response) -> None:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        # every llamasup error answer carries x-llamasup-error; llama-server calls itself
        # llama.cpp (its 404 is JSON too)
        foreign = (
            (response.status_code >= 400 and "x-llamasup-error" not in response.headers)
            or kind == "text/html"
            or response.headers.get("server", "").lower().startswith("llama.cpp")
        )
        if foreign:
            # another program on that address (a web server, a bare llama-server)
            raise ControlError(
                f"{self.server} answered {response.request.method} {response.request.url.path} "
                f"with HTTP {response.status_code} ({kind or 'no content type'}), not as "
                f"llamasup does: is it the llamasup front? (--server, ${SERVER_ENV})"
            )
        if response.status_code in (401, 403):
            hint = "" if self._client.headers.get("authorization") else f" (set ${API_KEY_ENV})"
            raise ControlError(f"{self.server}: {error_message(response)}{hint}")


# -- the command-line side: opening the client for a command, and how failures print ---------

Handler = Callable[[argparse.Namespace, ControlClient], int]


def connected(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """An argparse handler that opens the client, and turns a ControlError into exit 2."""

    def run(args: argparse.Namespace) -> int:
        server = args.server or default_server()
        api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
        try:
            with ControlClient(server, api_key or None) as client:
                return handler(args, client)
        except ControlError as exc:
            fail(args, str(exc), EXIT_ERROR)
            return EXIT_ERROR

    return run


def fail(args: argparse.Namespace, message: str, code: int) -> None:
    if getattr(args, "output", "table") == "json":
        emit_json({"error": message, "exit_code": code})
    else:
        print(f"llamasup: {message}", file=sys.stderr)


def unexpected(args: argparse.Namespace, response: httpx.Response) -> int:
    """A status the command has no meaning for: say what the server said, exit 2."""
    request = response.request
    fail(
        args,
        f"{request.method} {request.url.path}: HTTP {response.status_code}: "
        f"{error_message(response)}",
        EXIT_ERROR,
    )
    return EXIT_ERROR


def emit_json(value: object) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")
