"""The front's listening sockets: bound here, inherited from systemd, or handed over.

llamasup binds its listeners itself (as asyncio's ``create_server`` would: every address the
host name resolves to, ``SO_REUSEADDR``, IPv6 sockets IPv6-only) and gives them to uvicorn,
so that a planned restart can keep them: a duplicate of each survives the ``execve`` and the
next image serves on it. While no program accepts, the kernel keeps completing connections
into the listen queue, so a client connecting during a restart waits a moment, it is never
refused.

Under systemd socket activation (``llamasup.socket``) systemd holds the sockets and passes
them as descriptors 3, 4, ... (``LISTEN_FDS``, ``LISTEN_PID``); llamasup then serves on those.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, MutableMapping, Sequence

#: as uvicorn's default: connections the kernel completes while nobody accepts (a restart)
BACKLOG = 2048
#: the first descriptor systemd passes (``SD_LISTEN_FDS_START``)
SYSTEMD_FIRST_FD = 3


def bind(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening TCP sockets on every address ``host`` resolves to (OSError if any fails)."""
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    bound: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # as asyncio does: "::" is IPv6 only; "0.0.0.0" is a listener of its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def from_fds(fds: Iterable[int]) -> list[socket.socket]:
    """Sockets for inherited descriptors (OSError if one is not a socket)."""
    sockets: list[socket.socket] = []
    try:
        for fd in fds:
            sock = socket.socket(fileno=fd)
            sockets.append(sock)
            if sock.type != socket.SOCK_STREAM:
                raise OSError(f"descriptor {fd} is not a stream socket")
            sock.set_inheritable(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def from_systemd(environ: MutableMapping[str, str]) -> list[socket.socket]:
    """The sockets systemd passed to this process (socket activation), taking the variables
    out of ``environ`` so that nothing started later mistakes them for its own."""
    pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid != str(os.getpid()) or not count.isdigit():
        return []
    return from_fds(range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + int(count)))


def address_of(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def serves(sockets: Sequence[socket.socket], host: str, port: int) -> bool:
    """Whether ``sockets`` listen exactly where binding ``host:port`` would."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except OSError:
        return False
    wanted = {(info[4][0], info[4][1]) for info in infos}
    return wanted == {address_of(sock) for sock in sockets}


def keep_for_exec(sockets: Iterable[socket.socket]) -> list[int]:
    """Inheritable duplicates of ``sockets`` (the listen queue lives on while one is open)."""
    kept: list[int] = []
    for sock in sockets:
        duplicate = os.dup(sock.fileno())
        os.set_inheritable(duplicate, True)
        kept.append(duplicate)
    return kept


def close_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
