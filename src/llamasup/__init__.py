"""llamasup: a supervisor for llama.cpp ``llama-server`` processes driven by YAML profiles.

The embedding API, for a program that wants llama-server only while it runs::

    from llamasup import local_models

    async with local_models("profiles/") as models:
        async with models.lease("gemma3-270m@precise") as sidecar:
            ...  # POST to f"{sidecar.url}/v1/chat/completions" with sidecar.headers

Names are imported on first use (module ``__getattr__``): the ``llamasup`` command imports
this package for ``__version__``, and ``llamasup --version`` must not load the reconciler.
"""

from __future__ import annotations

from llamasup._version import __version__

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `import llamasup` does not import typing
if TYPE_CHECKING:
    from llamasup.errors import (
        CapacityError,
        LlamasupError,
        ProfileError,
        ProfileIssue,
        ResolveError,
        RuntimeNotFoundError,
        SidecarError,
        UnknownAgentError,
        UnknownModelError,
    )
    from llamasup.library import LocalModels, LocalSidecar, local_models

__all__ = [
    "CapacityError",
    "LlamasupError",
    "LocalModels",
    "LocalSidecar",
    "ProfileError",
    "ProfileIssue",
    "ResolveError",
    "RuntimeNotFoundError",
    "SidecarError",
    "UnknownAgentError",
    "UnknownModelError",
    "__version__",
    "local_models",
]

_HOMES = {
    "local_models": "llamasup.library",
    "LocalModels": "llamasup.library",
    "LocalSidecar": "llamasup.library",
    "LlamasupError": "llamasup.errors",
    "ProfileError": "llamasup.errors",
    "ProfileIssue": "llamasup.errors",
    "ResolveError": "llamasup.errors",
    "UnknownModelError": "llamasup.errors",
    "UnknownAgentError": "llamasup.errors",
    "SidecarError": "llamasup.errors",
    "CapacityError": "llamasup.errors",
    "RuntimeNotFoundError": "llamasup.errors",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - only on first use of a name; `import llamasup` stays bare

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next access is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
