"""A minimal HTTP/1.1 server for the fake llama-server.

``http.server`` costs ~50 ms of imports (email, http.client, ssl...), more than the real
llama-server needs to become ready; this covers what the fake needs (keep-alive,
Content-Length and chunked bodies) on ``socketserver`` alone.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import socketserver

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}

_MAX_LINE = 65536


def _raise_open_files_limit() -> None:
    """Soft ``RLIMIT_NOFILE`` up to the hard limit: one descriptor per client connection,
    and a benchmark may hold more than a thousand streams open (the real server can)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class MiniHTTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # a benchmark opening many streams at once must not overflow the accept queue
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: type[MiniHTTPHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        _raise_open_files_limit()
        super().__init__(address, handler)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class MiniHTTPHandler(socketserver.StreamRequestHandler):
    """Parses requests on one connection and calls ``do_<METHOD>``; subclasses respond."""

    # small SSE chunks must leave at once, not wait for a delayed ACK
    disable_nagle_algorithm = True

    command = ""
    path = ""
    headers: dict[str, str]
    close_connection = True
    _pending: list[bytes]

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            try:
                if not self._read_head():
                    return
                method = getattr(self, f"do_{self.command}", None)
                if method is None:
                    self.close_connection = True
                    self.send_response(501)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    method()
            except (ConnectionError, TimeoutError):
                return

    def _read_head(self) -> bool:
        line = self.rfile.readline(_MAX_LINE)
        if not line:
            return False
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            return False
        self.command, self.path, version = parts
        self.headers = {}
        while True:
            raw = self.rfile.readline(_MAX_LINE)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        connection = self.headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            version == "HTTP/1.0" and connection != "keep-alive"
        )
        return True

    def send_response(self, status: int) -> None:
        reason = _REASONS.get(status, "Unknown")
        self._pending = [f"HTTP/1.1 {status} {reason}\r\nServer: llama.cpp\r\n".encode()]
        origin = self.headers.get("origin")
        if origin:  # llama-server's CORS reflects any origin
            self._pending.append(f"Access-Control-Allow-Origin: {origin}\r\n".encode("latin-1"))

    def send_header(self, name: str, value: str) -> None:
        self._pending.append(f"{name}: {value}\r\n".encode("latin-1"))

    def end_headers(self, body: bytes = b"") -> None:
        """Send the status line, headers and (optionally) a whole body in one write."""
        if self.close_connection:
            self._pending.append(b"Connection: close\r\n")
        self._pending.append(b"\r\n")
        self._pending.append(body)
        self.wfile.write(b"".join(self._pending))
        self._pending = []
