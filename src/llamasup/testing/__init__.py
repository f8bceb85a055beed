"""Test helpers shipped with llamasup: a fake llama-server and a tiny real GGUF model.

Names are imported lazily: ``python -m llamasup.testing.fake_server`` must not import the
fake twice, and the tiny model pulls in numpy, which the fake must never pay for.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from llamasup.testing.fake_server import write_fake_binary
    from llamasup.testing.tiny_model import tiny_model_path, write_tiny_model

__all__ = ["tiny_model_path", "write_fake_binary", "write_tiny_model"]

_HOMES = {
    "write_fake_binary": "llamasup.testing.fake_server",
    "tiny_model_path": "llamasup.testing.tiny_model",
    "write_tiny_model": "llamasup.testing.tiny_model",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
