"""The hand-over file: what one llamasup image leaves the next across a planned restart.

``state_dir/handover.json``, written atomically (a temporary file in the same directory,
renamed over) with mode 0600: it holds every sidecar's key. Versioned: a reader
refuses a version it does not know (the sidecars it describes are then stopped as leftovers,
never left running unknown, see ``Supervisor.stop_leftovers``); fields it does not know are
ignored, so a later version may add some.

It names the llamasup that wrote it (pid and start time): the image after an ``execve`` has
the same pid and start time and adopts; a llamasup that finds a file of a dead owner (a
crash during a restart) adopts nothing from it; a file of a live owner that is not us (a
second llamasup on the same state directory) is left alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamasup.errors import LlamasupError
from llamasup.sidecars.handover import ProcessHandle
from llamasup.sidecars.procfs import start_time

VERSION = 1
KIND = "llamasup-handover"
FILE_NAME = "handover.json"
#: set for the image after the exec: where the file is (the state directory may change)
ENV = "LLAMASUP_HANDOVER"


class HandoverFileError(LlamasupError):
    """The hand-over file cannot be used (unreadable, not JSON, another version, bad shape)."""


@dataclass(frozen=True)
class SidecarRecord:
    """One ready sidecar: how requests named it, and its process."""

    key: str
    model: str
    #: the agent and ``X-Agent-Flags`` it was first resolved with: resolved again under the
    #: new profiles, it must give the same key to be adopted
    agent: str | None
    agent_flags: tuple[str, ...]
    agents: tuple[str, ...]
    kind: str
    health_path: str
    argv: tuple[str, ...]
    last_used: float | None
    process: ProcessHandle


@dataclass(frozen=True)
class Handover:
    owner_pid: int
    owner_start: str
    owner_version: str
    state_dir: str
    written_at: float
    #: ``time.monotonic()`` when the restart was asked for (one clock for the whole host)
    requested_monotonic: float
    #: planned restarts of this pid so far, this one included
    restarts: int
    #: listening sockets of the front, inherited at these descriptors
    listen_fds: tuple[int, ...]
    #: ``time.monotonic()`` when the file was written, right before the exec
    written_monotonic: float = 0.0
    #: client connections that were between requests, inherited at these descriptors
    connection_fds: tuple[int, ...] = ()
    sidecars: tuple[SidecarRecord, ...] = field(default=())


def written_here(handover: Handover) -> bool:
    """Whether this very process wrote ``handover`` (before it re-executed itself): only
    then do its descriptors mean anything here."""
    pid = os.getpid()
    return (handover.owner_pid, handover.owner_start) == (pid, start_time(pid))


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def write(path: Path, handover: Handover) -> None:
    """Write ``handover`` to ``path`` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(_encode(handover), indent=1).encode()
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        # no fsync: the reader is this very process after its exec, through the same page
        # cache, and a crash of the host ends the sidecars the file describes anyway
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def read(path: Path) -> Handover:
    """The hand-over in ``path``; HandoverFileError says why it cannot be used."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HandoverFileError(f"cannot read {path}: {exc}") from exc
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise HandoverFileError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise HandoverFileError(f"{path} is not a llamasup hand-over file")
    if doc.get("version") != VERSION:
        raise HandoverFileError(
            f"{path} has version {doc.get('version')!r}; this llamasup reads version {VERSION}"
        )
    try:
        return _decode(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise HandoverFileError(f"{path} is malformed: {type(exc).__name__}: {exc}") from exc


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# -- JSON ------------------------------------------------------------------------------------


def _encode(handover: Handover) -> dict[str, Any]:
    return {
        "kind": KIND,
        "version": VERSION,
        "owner": {
            "pid": handover.owner_pid,
            "start_time": handover.owner_start,
            "version": handover.owner_version,
        },
        "state_dir": handover.state_dir,
        "written_at": handover.written_at,
        "requested_monotonic": handover.requested_monotonic,
        "written_monotonic": handover.written_monotonic,
        "restarts": handover.restarts,
        "listen_fds": list(handover.listen_fds),
        "connection_fds": list(handover.connection_fds),
        "sidecars": [_encode_record(record) for record in handover.sidecars],
    }


def _encode_record(record: SidecarRecord) -> dict[str, Any]:
    process = record.process
    return {
        "key": record.key,
        "model": record.model,
        "agent": record.agent,
        "agent_flags": list(record.agent_flags),
        "agents": list(record.agents),
        "kind": record.kind,
        "health_path": record.health_path,
        "argv": list(record.argv),
        "last_used": record.last_used,
        "pid": process.pid,
        "start_time": process.start_time,
        # a sidecar leads its own process group and session: both are its pid
        "pgid": process.pid,
        "port": process.port,
        "pipes": {str(fd): number for fd, number in process.pipes.items()},
        "partial": {
            str(fd): base64.b64encode(data).decode() for fd, data in process.partial.items()
        },
        "auth_key": process.auth_key,
        "started_at": process.started_at,
        "ready_at": process.ready_at,
        "restarts": process.restarts,
    }


def _decode(doc: Mapping[str, Any]) -> Handover:
    owner = doc["owner"]
    return Handover(
        owner_pid=int(owner["pid"]),
        owner_start=str(owner["start_time"]),
        owner_version=str(owner.get("version", "?")),
        state_dir=str(doc["state_dir"]),
        written_at=float(doc["written_at"]),
        requested_monotonic=float(doc.get("requested_monotonic", 0.0)),
        written_monotonic=float(doc.get("written_monotonic", 0.0)),
        restarts=int(doc.get("restarts", 1)),
        listen_fds=tuple(int(fd) for fd in doc.get("listen_fds", ())),
        connection_fds=tuple(int(fd) for fd in doc.get("connection_fds", ())),
        sidecars=tuple(_decode_record(item) for item in doc.get("sidecars", ())),
    )


def _decode_record(item: Mapping[str, Any]) -> SidecarRecord:
    process = ProcessHandle(
        pid=int(item["pid"]),
        start_time=str(item["start_time"]),
        port=int(item["port"]),
        pipes={int(fd): int(number) for fd, number in dict(item.get("pipes", {})).items()},
        partial={
            int(fd): base64.b64decode(text) for fd, text in dict(item.get("partial", {})).items()
        },
        auth_key=None if item.get("auth_key") is None else str(item["auth_key"]),
        started_at=_float(item.get("started_at")),
        ready_at=_float(item.get("ready_at")),
        restarts=int(item.get("restarts", 0)),
    )
    return SidecarRecord(
        key=str(item["key"]),
        model=str(item["model"]),
        agent=None if item.get("agent") is None else str(item["agent"]),
        agent_flags=tuple(str(flag) for flag in item.get("agent_flags", ())),
        agents=tuple(str(agent) for agent in item.get("agents", ())),
        kind=str(item.get("kind", "llama-server")),
        health_path=str(item.get("health_path", "/health")),
        argv=tuple(str(part) for part in item.get("argv", ())),
        last_used=_float(item.get("last_used")),
        process=process,
    )


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
