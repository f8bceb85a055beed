"""uvicorn's server without uvicorn's command line.

Importing any part of uvicorn runs its package ``__init__``, which imports ``uvicorn.main``:
the command line (click) and the ``--reload``/``--workers`` supervisors (multiprocessing,
watchfiles with anyio). A serving llamasup uses none of them, and they cost ~2.8 MB of its
resident memory for its whole life (issue #20).

:func:`defer_init` puts the ``uvicorn`` package in place with its ``__init__`` not yet run:
its submodules import as usual, and the names the ``__init__`` defines are made on first use,
``Config`` and ``Server`` from the submodules that define them (the same objects the
``__init__`` re-exports), anything else by running the real ``__init__`` then. So
``uvicorn.run`` and ``from uvicorn import main`` still work, in the process that wants them.
``tests/service/test_serve_imports.py`` holds a serving process to what it imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

#: names of uvicorn's ``__init__`` served without running it: (submodule, attribute)
_CHEAP = {
    "Config": ("uvicorn.config", "Config"),
    "Server": ("uvicorn.server", "Server"),
    "__version__": ("uvicorn._version", "__version__"),
}


def defer_init() -> None:
    """Register ``uvicorn`` with its ``__init__`` deferred (nothing if it is imported)."""
    if "uvicorn" in sys.modules:
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None:
        return  # not installed: the import that needs it says so
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:  # the module's attribute hook (PEP 562)
        cheap = _CHEAP.get(name)
        if cheap is not None:
            value = getattr(importlib.import_module(cheap[0]), cheap[1])
            setattr(package, name, value)
            return value
        introspection = name.startswith("__") and name != "__all__"
        if introspection or "__getattr__" not in vars(package):
            raise AttributeError(f"module 'uvicorn' has no attribute {name!r}")
        del package.__getattr__  # the real __init__ runs once, and defines the rest
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["uvicorn"] = package
