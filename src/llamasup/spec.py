"""``SidecarSpec``: everything needed to launch one sidecar, and its identity key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SidecarKind = Literal["llama-server", "command"]

#: placeholders a ``command:`` model may use; llamasup substitutes them at spawn time
HOST_PLACEHOLDER = "${HOST}"
PORT_PLACEHOLDER = "${PORT}"


@dataclass(frozen=True)
class SidecarSpec:
    """One llama-server (or ``command:``) process as the profiles describe it.

    ``args`` never contains ``--host``/``--port``: llamasup owns them and adds them at spawn
    time (for ``command`` sidecars, through the ``${HOST}``/``${PORT}`` placeholders).
    """

    model: str
    kind: SidecarKind
    binary: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    health_path: str = "/health"
    model_path: str | None = None
    served_name: str = ""
    pinned: bool = False
    preload: bool = False
    ttl: float | None = None
    memory: int | None = None
    group: str | None = None
    concurrency: int | None = None
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.identity_key())

    def identity_key(self) -> str:
        """A stable hash of what makes the process what it is.

        In: kind, binary as configured, the load-time argv (model path included), and the
        environment the profile sets. Out: the model id and everything that does not change the
        running process (pinned, ttl, group, memory override, request-time defaults). Equal key
        means the running process is reused as is.
        """
        payload = {
            "kind": self.kind,
            "binary": self.binary,
            "args": list(self.args),
            "env": [list(pair) for pair in self.env],
        }
        encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def command_line(self, binary_path: str, host: str, port: int) -> list[str]:
        """The argv to exec, with llamasup's own host and port."""
        if self.kind == "command":
            return [
                part.replace(HOST_PLACEHOLDER, host).replace(PORT_PLACEHOLDER, str(port))
                for part in (binary_path, *self.args)
            ]
        return [binary_path, *self.args, "--host", host, "--port", str(port)]

    @property
    def env_map(self) -> Mapping[str, str]:
        return dict(self.env)
